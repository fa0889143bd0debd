"""The two vector engines behind :mod:`rayapp.sinks.vectors`: embedded LanceDB and Pinecone's data
plane (the ``pinecone`` SDK). Both offer ``setup``, ``upsert`` (never replaces a newer version),
``versions`` / ``tombstones`` / ``put_tombstones``, ``delete_vectors``, ``purge``, ``ids``,
``fetch``, ``count`` and ``close``.

Pinecone requests respect the documented data-plane limits: at most 1000 vectors and 2 MB per
upsert, 40 KB of metadata per vector, 1000 ids per fetch/delete.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Iterator
from urllib.parse import urlsplit

import pyarrow as pa

from rayapp.catalog import Dataset, dataset_schema
from rayapp.sinks import vector_filter
from rayapp.sinks.base import SinkError
from rayapp.urls import url_query

COLLECTIONS = {Dataset.MERCHANT_VECTORS: "merchants", Dataset.TRANSACTION_VECTORS: "transactions"}
PINECONE_MAX_VECTORS = 1000
PINECONE_MAX_REQUEST_BYTES = 2 * 1024 * 1024
PINECONE_MAX_METADATA_BYTES = 40 * 1024
PINECONE_MAX_IDS = 1000
_REQUEST_HEADROOM = 64 * 1024  # JSON framing around the vectors


def version_number(v: Any) -> int:
    """``_version`` as an integer (epoch microseconds for timestamps): Pinecone metadata has no dates."""
    if isinstance(v, datetime):
        return int(v.timestamp() * 1_000_000)
    return int(v)


def tomb(dataset: Dataset) -> str:
    """The table (LanceDB) or namespace (Pinecone) keeping a collection's tombstones."""
    return f"{COLLECTIONS[dataset]}__tombstones"


def sql_quote(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


class Lance:
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

    def _delete(self, names: tuple[str, ...], ids: list[str]) -> None:
        for name in names:
            if name in self.db.table_names():
                table = self.db.open_table(name)
                for start in range(0, len(ids), PINECONE_MAX_IDS):
                    table.delete(f"id IN ({sql_quote(ids[start : start + PINECONE_MAX_IDS])})")

    def delete_vectors(self, dataset: Dataset, ids: list[str]) -> None:
        self._delete((COLLECTIONS[dataset],), ids)

    def purge(self, dataset: Dataset, ids: list[str]) -> None:
        self._delete((COLLECTIONS[dataset], tomb(dataset)), ids)

    def _versions(self, name: str, ids: list[str]) -> dict[str, int]:
        if not ids or name not in self.db.table_names():
            return {}
        out: dict[str, int] = {}
        table = self.db.open_table(name)
        for start in range(0, len(ids), PINECONE_MAX_IDS):
            part = ids[start : start + PINECONE_MAX_IDS]
            got = table.search().where(f"id IN ({sql_quote(part)})").select(["id", "_version"]).limit(None).to_arrow()
            out.update({i: version_number(v) for i, v in zip(got["id"].to_pylist(), got["_version"].to_pylist())})
        return out

    def versions(self, dataset: Dataset, ids: list[str]) -> dict[str, int]:
        return self._versions(COLLECTIONS[dataset], ids)

    def tombstones(self, dataset: Dataset, ids: list[str]) -> dict[str, int]:
        return self._versions(tomb(dataset), ids)

    def put_tombstones(self, dataset: Dataset, marks: dict[str, int]) -> None:
        rows = pa.table({"id": list(marks), "_version": pa.array(list(marks.values()), pa.int64())})
        table = self.db.create_table(tomb(dataset), schema=rows.schema, exist_ok=True)
        table.merge_insert("id").when_matched_update_all(where="target._version < source._version").when_not_matched_insert_all().execute(rows)

    def ids(self, dataset: Dataset) -> Iterator[list[str]]:
        yield self.db.open_table(COLLECTIONS[dataset]).search().select(["id"]).limit(None).to_arrow()["id"].to_pylist()

    def fetch(self, dataset: Dataset, ids: list[str], columns: list[str]) -> list[dict[str, Any]]:
        table = self.db.open_table(COLLECTIONS[dataset])
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), PINECONE_MAX_IDS):
            part = ids[start : start + PINECONE_MAX_IDS]
            out += table.search().where(f"id IN ({sql_quote(part)})").select(["id", *columns]).limit(None).to_arrow().to_pylist()
        return out

    def count(self, dataset: Dataset) -> int:
        return int(self.db.open_table(COLLECTIONS[dataset]).count_rows())

    def search(self, dataset: Dataset, vector: list[float], k: int, flt: dict[str, Any] | None, columns: list[str]) -> list[dict[str, Any]]:
        if COLLECTIONS[dataset] not in self.db.table_names():
            return []
        query = (self.db.open_table(COLLECTIONS[dataset]).search(vector, vector_column_name="vector").distance_type("cosine")
                 .select(["id", *columns]).limit(k))  # fmt: skip
        where = vector_filter.to_sql(flt)  # the checked Pinecone-style filter as SQL
        if where:
            query = query.where(where, prefilter=True)
        got = query.to_arrow().to_pylist()
        return [{"id": r["id"], "score": 1.0 - float(r["_distance"]), "metadata": {c: r.get(c) for c in columns}} for r in got]

    def close(self) -> None:
        pass


class PineconeIndex:
    def __init__(self, url: str, api_key: str | None, host: str | None, dimension: int, threads: int = 4) -> None:
        from pinecone import Pinecone

        self.dimension = dimension
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
            version = version_number(r["_version"])
            if stored.get(r["id"], -1) >= version:
                continue  # the index already holds this version or a newer one
            vectors.append({"id": r["id"], "values": r["vector"], "metadata": pinecone_metadata(r, version)})
        list(self.pool.map(lambda b: self.index.upsert(vectors=b, namespace=namespace), pinecone_batches(vectors)))

    def _delete(self, namespaces: tuple[str, ...], ids: list[str]) -> None:
        chunks = [ids[i : i + PINECONE_MAX_IDS] for i in range(0, len(ids), PINECONE_MAX_IDS)]
        for namespace in namespaces:
            list(self.pool.map(lambda c, ns=namespace: self.index.delete(ids=c, namespace=ns), chunks))

    def delete_vectors(self, dataset: Dataset, ids: list[str]) -> None:
        self._delete((COLLECTIONS[dataset],), ids)

    def purge(self, dataset: Dataset, ids: list[str]) -> None:
        self._delete((COLLECTIONS[dataset], tomb(dataset)), ids)

    def versions(self, dataset: Dataset, ids: list[str]) -> dict[str, int]:
        return self._stored_versions(COLLECTIONS[dataset], ids)

    def tombstones(self, dataset: Dataset, ids: list[str]) -> dict[str, int]:
        return self._stored_versions(tomb(dataset), ids)

    def put_tombstones(self, dataset: Dataset, marks: dict[str, int]) -> None:
        # A tombstone is a vector in a namespace of its own (Pinecone stores nothing else): the unit
        # vector on the first axis (dense vectors need a non-zero value), the version in its metadata.
        unit = [1.0] + [0.0] * (self.dimension - 1)
        vectors = [{"id": i, "values": unit, "metadata": {"_version": v}} for i, v in marks.items()]
        list(self.pool.map(lambda b: self.index.upsert(vectors=b, namespace=tomb(dataset)), pinecone_batches(vectors)))

    def ids(self, dataset: Dataset) -> Iterator[list[str]]:
        for page in self.index.list(namespace=COLLECTIONS[dataset]):  # pages of ids (ListItems in newer SDKs)
            yield [getattr(item, "id", item) for item in page]

    def fetch(self, dataset: Dataset, ids: list[str], columns: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), PINECONE_MAX_IDS):
            resp = self.index.fetch(ids=ids[start : start + PINECONE_MAX_IDS], namespace=COLLECTIONS[dataset])
            for vid, vec in resp.vectors.items():
                meta = vec.metadata or {}
                out.append({"id": vid, **{c: meta.get(c) for c in columns}})
        return out

    def search(self, dataset: Dataset, vector: list[float], k: int, flt: dict[str, Any] | None, columns: list[str]) -> list[dict[str, Any]]:
        resp = self.index.query(vector=vector, top_k=k, namespace=COLLECTIONS[dataset], filter=flt or None, include_metadata=True)
        return [{"id": m.id, "score": float(m.score), "metadata": {c: (m.metadata or {}).get(c) for c in columns}} for m in resp.matches]

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


