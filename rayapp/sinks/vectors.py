"""Vector sink: ``lancedb:///path`` (embedded LanceDB) or ``pinecone://<index>`` (the ``pinecone``
SDK against the index's data plane); the engines are in :mod:`rayapp.sinks.vector_backends`.

Two collections — merchant profiles (``merchants``) and high-risk transactions
(``transactions``) — as LanceDB tables or Pinecone namespaces. Every vector carries
``_version``; a write never replaces a vector with an older version. A row without a vector (the
transaction fell below the score threshold, or left the lake) deletes the older versions of its
id and leaves a tombstone, so an older vector arriving later is not written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import Dataset, dataset_schema
from rayapp.sinks import vector_filter
from rayapp.sinks.base import SinkError, StoreSink, StoreSpec, conform, is_repair
from rayapp.sinks.vector_backends import (COLLECTIONS, PINECONE_MAX_METADATA_BYTES, PINECONE_MAX_REQUEST_BYTES, Lance, PineconeIndex,
                                          pinecone_batches, pinecone_metadata, version_number)
from rayapp.sinks.views import VIEWS
from rayapp.urls import url_path

if TYPE_CHECKING:
    from rayapp.settings import Settings

logger = logging.getLogger(__name__)

#: Re-exported: the Pinecone limits and request shaping are part of this store's contract.
__all__ = ["STORE", "VectorSink", "VectorOptions", "PINECONE_MAX_METADATA_BYTES", "PINECONE_MAX_REQUEST_BYTES", "pinecone_batches",
           "pinecone_metadata"]


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
    _ids: dict[str, list[str]] | None = None

    def _open(self) -> Any:
        if self._backend is None:
            if urlsplit(self.url).scheme == "lancedb":
                self._backend = Lance(url_path(self.url), self.options.vector_dimension)
            else:
                self._backend = PineconeIndex(self.url, self.options.pinecone_api_key, self.options.pinecone_host, self.options.vector_dimension)
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
        ids = pc.unique(block["id"]).to_pylist()
        if is_repair(block):  # forget what the store holds for these ids (vectors, tombstones), then write
            self._backend.purge(dataset, ids)
            marks: dict[str, int] = {}
        else:
            marks = self._backend.tombstones(dataset, ids)
            gone = block.filter(pc.invert(has_vector))
            if gone.num_rows:
                newest: dict[str, int] = {}
                for i, v in zip(gone["id"].to_pylist(), gone["_version"].to_pylist()):
                    newest[i] = max(newest.get(i, -1), version_number(v))
                held = self._backend.versions(dataset, list(newest))
                older = [i for i, v in newest.items() if i in held and held[i] < v]  # a newer vector stays
                if older:
                    self._backend.delete_vectors(dataset, older)
                fresh = {i: v for i, v in newest.items() if v > marks.get(i, -1)}
                if fresh:
                    self._backend.put_tombstones(dataset, fresh)
                marks.update(fresh)
        if marks and upserts.num_rows:  # deleted at this version or a newer one: stays deleted
            alive = [marks.get(i, -1) < version_number(v) for i, v in zip(upserts["id"].to_pylist(), upserts["_version"].to_pylist())]
            upserts = upserts.filter(pa.array(alive, pa.bool_()))
        if upserts.num_rows:
            self._backend.upsert(dataset, upserts)
        return block.num_rows

    def scan(self, view: str, lo: str, hi: str) -> pa.Table:
        v = VIEWS[view]
        dataset = v.dataset
        backend = self._open()
        if self._ids is None:
            self._ids = {}
        if view not in self._ids:  # every id once per sink (the collections are merchants and risky transactions)
            self._ids[view] = sorted(i for part in backend.ids(dataset) for i in part)
        ids = [i for i in self._ids[view] if lo <= i < hi]
        rows = backend.fetch(dataset, ids, v.compared)
        return pa.Table.from_pylist([{c: r.get(c) for c in v.schema.names} for r in rows], schema=v.schema)

    def search(self, dataset: Dataset, vector: list[float], k: int, flt: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The ``k`` vectors of a collection nearest to ``vector`` (cosine) that match ``flt``
        (:mod:`rayapp.sinks.vector_filter`), best first: ``{id, score, metadata}`` each.

        Raises:
            FilterError: the filter names a field or operator the collection does not have.
        """
        if dataset not in self.datasets:
            raise SinkError(f"vector store has no collection {dataset.value}")
        flt = vector_filter.check(dataset, flt)
        columns = [c for c in dataset_schema(dataset).names if c not in ("id", "vector", "_version")]
        return self._open().search(dataset, vector, k, flt, columns)

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
