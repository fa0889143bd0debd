"""What ``reconcile`` compares: each store's content as *views* — a key, the compared columns and
the dataset that repairs it. SQL stores hold the table datasets as they are; the graph holds
payments (PAID) and device use (USED); the vector store its two collections (vectors themselves
are not compared: they follow from the text). Pure: pyarrow only."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import pyarrow as pa

from rayapp.catalog import DATASET_KEYS, TABLE_DATASETS, UTC_US, Dataset, dataset_schema


@dataclass(frozen=True)
class View:
    name: str
    key: tuple[str, ...]
    schema: pa.Schema  # key columns first, then the compared ones
    dataset: Dataset  # what a repair re-sends

    @property
    def compared(self) -> list[str]:
        return [n for n in self.schema.names if n not in self.key]


def _table_view(d: Dataset) -> View:
    # _version is left out: a gold row's version is the gold table version it was published at,
    # which the lake does not keep per row; the content is what must be equal.
    fields = [f for f in dataset_schema(d) if f.name not in ("_deleted", "_version")]
    keys = DATASET_KEYS[d]
    return View(d.value, keys, pa.schema([*(f for f in fields if f.name in keys), *(f for f in fields if f.name not in keys)]), d)


VIEWS: Mapping[str, View] = MappingProxyType({
    **{d.value: _table_view(d) for d in TABLE_DATASETS},
    "paid": View("paid", ("transaction_id",), pa.schema([
        ("transaction_id", pa.string()), ("account_id", pa.string()), ("merchant_id", pa.string()), ("amount", pa.float64()),
        ("status", pa.string()), ("fraud_score", pa.float64()), ("event_time", UTC_US)]), Dataset.TRANSACTIONS),
    "used": View("used", ("account_id", "device_id"), pa.schema([
        ("account_id", pa.string()), ("device_id", pa.string()), ("first_seen", UTC_US), ("last_seen", UTC_US)]), Dataset.TRANSACTIONS),
    "merchant_vectors": View("merchant_vectors", ("id",), pa.schema([
        ("id", pa.string()), ("name", pa.string()), ("category", pa.string()), ("country", pa.string()), ("txn_count", pa.int64()),
        ("fraud_count", pa.int64()), ("fraud_rate", pa.float64())]), Dataset.MERCHANT_VECTORS),
    "transaction_vectors": View("transaction_vectors", ("id",), pa.schema([
        ("id", pa.string()), ("account_id", pa.string()), ("merchant_id", pa.string()), ("fraud_score", pa.float64()),
        ("model_version", pa.string())]), Dataset.TRANSACTION_VECTORS),
})  # fmt: skip


#: Bounds of an open key range: every key is >= LOWEST and < HIGHEST (code point order, which is
#: UTF-8 byte order: what PostgreSQL's "C" collation, ClickHouse, the graph engines and LanceDB use).
LOWEST = ""
HIGHEST = "\U0010ffff"
