"""What changed since each store's watermark.

A store's watermark is the ledger's watermark of stage ``publish:<store>|<url>``: it belongs to a
store *at its URL*, so pointing a store elsewhere publishes everything there — and only there:
stores with different watermarks get their own change sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import GOLD_MERCHANT, GOLD_TABLES, PREDICTIONS, SILVER
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.ledger import Ledger
from rayapp.sinks.base import StoreSpec
from rayapp.urls import redact_url

#: Lake tables a publish run reads; their versions form each store's watermark.
SOURCES = (SILVER.name, PREDICTIONS.name, *(t.name for t in GOLD_TABLES))


def watermark_stage(spec: StoreSpec[Any], url: str) -> str:
    """The ledger stage whose watermarks say what the store at ``url`` holds."""
    return f"publish:{spec.name}|{redact_url(url)}"


def store_watermark(lake: Lake, ledger: Ledger, spec: StoreSpec[Any]) -> dict[str, int] | None:
    """Lake versions the store at its current URL has received (None: never published there)."""
    marks = ledger.watermarks(watermark_stage(spec, spec.url(lake.settings)))
    return marks or None


@dataclass
class Changes:
    versions: dict[str, int]
    since: dict[str, int] | None
    transaction_ids: pa.Array | None = None  # None: every transaction
    prediction_ids: pa.Array | None = None
    # Rows that left the lake since the watermark (with ``_deleted_at``); None: nothing to delete.
    deleted_transactions: pa.Table | None = None  # transaction_id, account_id, merchant_id, device_id
    deleted_predictions: pa.Table | None = None  # transaction_id, model_version

    def describe(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "versions": self.versions,
            "transactions": "all" if self.transaction_ids is None else len(self.transaction_ids),
            "predictions": "all" if self.prediction_ids is None else len(self.prediction_ids),
            "deleted_transactions": _rows(self.deleted_transactions),
            "deleted_predictions": _rows(self.deleted_predictions),
        }


def _rows(t: pa.Table | None) -> int:
    return 0 if t is None else t.num_rows


def find_changes(lake: Lake, since: dict[str, int] | None) -> Changes:
    """Transactions and predictions changed after ``since`` (everything without it), at the
    tables' current versions."""
    versions = {t: v for t in SOURCES if (v := lake.version(t)) is not None}
    if SILVER.name not in versions:
        raise RayappError("no silver table yet: run ingest and bronze_to_silver first")
    ch = Changes(versions, since)
    if since is None or SILVER.name not in since:
        return ch
    silver_ids, ch.deleted_transactions = lake.key_changes(SILVER, since.get(SILVER.name), versions[SILVER.name], ["transaction_id"],
                                                           ["account_id", "merchant_id", "device_id"])  # fmt: skip
    pred_ids: pa.Array | None = pa.array([], pa.string())
    if PREDICTIONS.name in versions:
        pred_ids, ch.deleted_predictions = lake.key_changes(PREDICTIONS, since.get(PREDICTIONS.name), versions[PREDICTIONS.name],
                                                            ["transaction_id", "model_version"], [])  # fmt: skip
    if silver_ids is None or pred_ids is None:
        return ch
    ch.prediction_ids = pred_ids
    ch.transaction_ids = pc.unique(pa.chunked_array([silver_ids, pred_ids], pa.string()).combine_chunks())
    return ch


def gold_tombstone_keys(lake: Lake, table: str, ch: Changes, days: list[str], keys: list[str]) -> pa.Table | None:
    """Keys the rebuilt ``days`` of a gold table held at the watermark and hold no longer."""
    if ch.since is None or table not in ch.since or not days:
        return None
    filt = [("activity_date", "in", days)]
    before = lake.read(table, columns=keys, version=ch.since[table], partitions=filt)
    if before.num_rows == 0:
        return None
    now = lake.read(table, columns=keys, version=ch.versions[table], partitions=filt)
    joined = before.join(now.append_column("_held", pa.repeat(pa.scalar(True), now.num_rows)), keys, join_type="left outer")
    return joined.filter(pc.is_null(joined["_held"])).select(keys)


def rebuilt_days(lake: Lake, table: str, ch: Changes) -> list[str] | None:
    """Date partitions of a gold table rewritten (or emptied) since the watermark (None: all of them)."""
    if ch.since is None or table not in ch.since:
        return None
    now = pa.table(lake.open(table, ch.versions[table]).get_add_actions(flatten=True))
    old = pa.table(lake.open(table, ch.since[table]).get_add_actions(flatten=True))
    now_files, old_files = set(now["path"].to_pylist()), set(old["path"].to_pylist())
    added = {str(d) for p, d in zip(now["path"].to_pylist(), now["partition.activity_date"].to_pylist()) if p not in old_files}
    # A date whose rows all left has its files removed and none added: its keys still need tombstones.
    emptied = {str(d) for p, d in zip(old["path"].to_pylist(), old["partition.activity_date"].to_pylist()) if p not in now_files}
    return sorted(added | emptied)


__all__ = ["SOURCES", "GOLD_MERCHANT", "Changes", "find_changes", "gold_tombstone_keys", "rebuilt_days", "store_watermark", "watermark_stage"]
