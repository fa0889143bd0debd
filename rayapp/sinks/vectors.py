"""Vector sink: ``lancedb:///path`` (embedded LanceDB) or ``pinecone://<index>`` (the ``pinecone``
SDK against the index's data plane).

Two collections — merchant profiles (``merchants``) and high-risk transactions
(``transactions``) — as LanceDB tables or Pinecone namespaces. Every vector carries
``_version``; a write never replaces a vector with an older version. Transaction rows that
arrive without a vector fell below the score threshold and are deleted.

Pinecone requests respect the documented data-plane limits: at most 1000 vectors and 2 MB
per upsert, 40 KB of metadata per vector, 1000 ids per fetch/delete.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import Dataset, dataset_schema
from rayapp.sinks.base import SinkError, StoreSink, StoreSpec, conform
from rayapp.urls import url_path, url_query

if TYPE_CHECKING:
    from rayapp.settings import Settings

logger = logging.getLogger(__name__)

COLLECTIONS = {Dataset.MERCHANT_VECTORS: "merchants", Dataset.TRANSACTION_VECTORS: "transactions"}
PINECONE_MAX_VECTORS = 1000
PINECONE_MAX_REQUEST_BYTES = 2 * 1024 * 1024
PINECONE_MAX_METADATA_BYTES = 40 * 1024
PINECONE_MAX_IDS = 1000
_REQUEST_HEADROOM = 64 * 1024  # JSON framing around the vectors


def _version_number(v: Any) -> int:
    """``_version`` as an integer (epoch microseconds for timestamps): Pinecone metadata has no dates."""
    if isinstance(v, datetime):
        return int(v.timestamp() * 1_000_000)
    return int(v)


def _sql_quote(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


class _Lance:
    def __init__(self, path: str, dimension: int) -> None:
        import lancedb

        os.makedirs(path, exist_ok=True)
        self.db = lancedb.connect(path)
        self.dimension = dimension

    def _schema(self, dataset: Dataset) -> pa.Schema:
        schema = dataset_schema(dataset)
        i = schema.get_field_index("vector")
        return schema.set(i, pa.field("vector", pa.list_(pa.float32(), self.dimension)))

    def setup(self) -> None:
        for d, name in COLLECTIONS.items():
            self.db.create_table(name, schema=self._schema(d), exist_ok=True)

    def upsert(self, dataset: Dataset, rows: pa.Table) -> None:
        table = self.db.open_table(COLLECTIONS[dataset])
        rows = rows.cast(self._schema(dataset))
        (
            table.merge_insert("id")
            .when_matched_update_all(where="target._version < source._version")
            .when_not_matched_insert_all()
            .execute(rows)
        )

    def delete(self, dataset: Dataset, ids: list[str]) -> None:
        table = self.db.open_table(COLLECTIONS[dataset])
        for start in range(0, len(ids), PINECONE_MAX_IDS):
            table.delete(f"id IN ({_sql_quote(ids[start : start + PINECONE_MAX_IDS])})")

    def count(self, dataset: Dataset) -> int:
        return int(self.db.open_table(COLLECTIONS[dataset]).count_rows())

    def close(self) -> None:
        pass


class _Pinecone:
    def __init__(self, url: str, api_key: str | None, host: str | None, threads: int = 4) -> None:
        from pinecone import Pinecone

        if not api_key:
            raise SinkError("pinecone:// needs an API key (PINECONE_API_KEY or RAYAPP_PINECONE_API_KEY)")
        parts = urlsplit(url)
        self.index_name = parts.netloc or parts.path.strip("/")
        host = host or url_query(url).get("host")
        client = Pinecone(api_key=api_key)
        if not host:  # ask the control plane where the index lives
            host = client.describe_index(self.index_name).host
        self.index = client.Index(host=host)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pinecone")

    def setup(self) -> None:
        self.index.describe_index_stats()

    def _stored_versions(self, namespace: str, ids: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        chunks = [ids[i : i + PINECONE_MAX_IDS] for i in range(0, len(ids), PINECONE_MAX_IDS)]
        for resp in self.pool.map(lambda c: self.index.fetch(ids=c, namespace=namespace), chunks):
            for vid, vec in resp.vectors.items():
                version = (vec.metadata or {}).get("_version")
                if version is not None:
                    out[vid] = int(version)
        return out

    def upsert(self, dataset: Dataset, rows: pa.Table) -> None:
        namespace = COLLECTIONS[dataset]
        records = rows.to_pylist()
        stored = self._stored_versions(namespace, [r["id"] for r in records])
        vectors = []
        for r in records:
            version = _version_number(r["_version"])
            if stored.get(r["id"], -1) >= version:
                continue  # the index already holds this version or a newer one
            vectors.append({"id": r["id"], "values": r["vector"], "metadata": pinecone_metadata(r, version)})
        list(self.pool.map(lambda b: self.index.upsert(vectors=b, namespace=namespace), pinecone_batches(vectors)))

    def delete(self, dataset: Dataset, ids: list[str]) -> None:
        namespace = COLLECTIONS[dataset]
        chunks = [ids[i : i + PINECONE_MAX_IDS] for i in range(0, len(ids), PINECONE_MAX_IDS)]
        list(self.pool.map(lambda c: self.index.delete(ids=c, namespace=namespace), chunks))

    def count(self, dataset: Dataset) -> int:
        stats = self.index.describe_index_stats()
        ns = stats.namespaces.get(COLLECTIONS[dataset])
        return int(ns.vector_count) if ns is not None else 0

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.index.close()


def pinecone_metadata(row: dict[str, Any], version: int) -> dict[str, Any]:
    """Metadata for one vector: no nulls (Pinecone rejects them), dates as ISO strings, the text
    shortened until the whole object fits in 40 KB."""
    meta: dict[str, Any] = {}
    for k, v in row.items():
        if k in ("id", "vector") or v is None:
            continue
        meta[k] = v.isoformat() if isinstance(v, datetime) else v
    meta["_version"] = version
    size = len(json.dumps(meta).encode())
    if size > PINECONE_MAX_METADATA_BYTES and isinstance(meta.get("text"), str):
        text = meta["text"].encode()
        meta["text"] = text[: max(0, len(text) - (size - PINECONE_MAX_METADATA_BYTES) - 16)].decode(errors="ignore")
    return meta


def pinecone_batches(vectors: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Split upserts so each request has ≤ 1000 vectors and ≤ 2 MB of JSON."""
    batch: list[dict[str, Any]] = []
    size = 0
    for v in vectors:
        n = len(json.dumps(v).encode()) + 1
        if batch and (len(batch) >= PINECONE_MAX_VECTORS or size + n > PINECONE_MAX_REQUEST_BYTES - _REQUEST_HEADROOM):
            yield batch
            batch, size = [], 0
        batch.append(v)
        size += n
    if batch:
        yield batch


@dataclass(frozen=True)
class VectorOptions:
    batch_rows: int = 50_000
    pinecone_api_key: str | None = None
    pinecone_host: str | None = None
    vector_dimension: int = 384

    @classmethod
    def from_settings(cls, settings: Settings) -> "VectorOptions":
        key = settings.pinecone_api_key.get_secret_value() if settings.pinecone_api_key is not None else None
        return cls(batch_rows=settings.writer_batch_rows, pinecone_api_key=key, pinecone_host=settings.pinecone_host)


class VectorSink(StoreSink[VectorOptions]):
    """Merchant profile vectors and high-risk transaction vectors."""

    datasets = (Dataset.MERCHANT_VECTORS, Dataset.TRANSACTION_VECTORS)
    _backend: Any = None

    def _open(self) -> Any:
        if self._backend is None:
            if urlsplit(self.url).scheme == "lancedb":
                self._backend = _Lance(url_path(self.url), self.options.vector_dimension)
            else:
                self._backend = _Pinecone(self.url, self.options.pinecone_api_key, self.options.pinecone_host)
        return self._backend

    def on_write_start(self) -> None:
        self._open().setup()

    def write(self, dataset: Dataset, block: pa.Table) -> int:
        if dataset not in self.datasets:
            raise SinkError(f"vector store does not take {dataset.value}")
        if self._backend is None:
            self.on_write_start()
        block = conform(dataset, block)
        has_vector = pc.is_valid(block["vector"])
        upserts = block.filter(has_vector)
        bad = upserts.filter(pc.not_equal(pc.list_value_length(upserts["vector"]), self.options.vector_dimension))
        if bad.num_rows:
            raise SinkError(f"{dataset.value}: {bad.num_rows} vectors are not {self.options.vector_dimension}-dimensional")
        if upserts.num_rows:
            self._backend.upsert(dataset, upserts)
        deletes = block.filter(pc.invert(has_vector))["id"].to_pylist()
        if deletes:
            self._backend.delete(dataset, deletes)
        return block.num_rows

    def counts(self) -> dict[str, int]:
        backend = self._open()
        return {COLLECTIONS[d]: backend.count(d) for d in self.datasets}

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def example_query(self) -> str:
        if urlsplit(self.url).scheme == "lancedb":
            return (
                f"python -c \"import lancedb; print(lancedb.connect('{url_path(self.url)}').open_table('merchants')"
                ".search().select(['id','name','category','fraud_rate']).limit(5).to_pandas())\""
            )
        return "python -c \"from pinecone import Pinecone; print(Pinecone().Index(host='<host>').describe_index_stats())\""


STORE = StoreSpec(
    name="vector", setting="vector_url", schemes=("lancedb", "pinecone"), embedded_schemes=("lancedb",),
    default_dir="vectors", datasets=VectorSink.datasets, sink=VectorSink, options=VectorOptions.from_settings, order=40,
)  # fmt: skip
