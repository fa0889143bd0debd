"""Embedding for the vector store: merchant profiles and high-risk transactions get vectors
through the Serve Embedder when the application runs, else from one inline model actor — and
each distinct text is embedded once per model: vectors are kept in the lake's embedding cache
(``_cache/embeddings``, keyed by model and SHA-256 of the text), so a later run embeds only texts
it has not seen. A different model (name or dimensions) is a different key: never a stale vector."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from rayapp.catalog import EMBEDDING_CACHE, UTC_US, Dataset
from rayapp.lake import Lake
from rayapp.publish.routing import Router, slices
from rayapp.serving import EMBEDDER, deployment, serve_app_running

logger = logging.getLogger(__name__)


class InlineEmbedder:
    """Ray actor: the sentence model loaded once, used when the Serve app is not running."""

    def __init__(self) -> None:
        from rayapp.model_store import load_embedder

        self.embedder = load_embedder(threads=1)

    def describe(self) -> dict[str, Any]:
        return {"model": self.embedder.name, "dim": self.embedder.dim, "device": self.embedder.device}

    def embed_many(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed(texts)


class Embedding:
    """The model that embeds: the Serve Embedder's replicas, or one inline actor (half a CPU, so it
    fits beside Serve and the writers). Not a Ray Data pipeline on purpose: ``from_arrow`` starts
    1-CPU metadata tasks that can wait forever on a small cluster whose CPUs the writers hold."""

    def __init__(self, use_serve: bool) -> None:
        import ray

        self.use_serve = use_serve
        self.handle: Any = deployment(EMBEDDER) if use_serve else None
        self.actor: Any = None if use_serve else ray.remote(num_cpus=0.5)(InlineEmbedder).remote()

    def key(self) -> str:
        """The cache key of this model: its name and dimensions."""
        import ray

        d = self.handle.describe.remote().result() if self.use_serve else ray.get(self.actor.describe.remote())
        return f"{d['model']}|{d['dim']}"

    def vectors(self, texts: list[str], chunk: int = 512) -> Iterator[np.ndarray]:
        """``len(part) x dim`` arrays for consecutive chunks of ``texts`` (inline: pipelined)."""
        import ray

        parts = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
        if self.use_serve:
            for part in parts:
                yield self.handle.embed_many.remote(part).result()
            return
        pending = [self.actor.embed_many.remote(part) for part in parts]
        for ref in pending:
            yield ray.get(ref)

    def close(self) -> None:
        import ray

        if self.actor is not None:
            ray.kill(self.actor)
            self.actor = None


def text_hashes(texts: list[str]) -> list[str]:
    return [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]


@dataclass
class EmbedStats:
    requested: int = 0  # texts asked for (rows with a text)
    distinct: int = 0
    cache_hits: int = 0  # distinct texts found in the cache
    embedded: int = 0  # distinct texts the model embedded
    seconds: float = 0.0  # spent in the model
    models: set[str] = field(default_factory=set)

    def add(self, other: "EmbedStats") -> None:
        self.requested += other.requested
        self.distinct += other.distinct
        self.cache_hits += other.cache_hits
        self.embedded += other.embedded
        self.seconds += other.seconds
        self.models |= other.models

    def counts(self) -> dict[str, int]:
        return {"embed.requested": self.requested, "embed.distinct": self.distinct, "embed.cache_hits": self.cache_hits,
                "embed.embedded": self.embedded}  # fmt: skip

    def details(self) -> dict[str, Any]:
        return {**self.counts(), "hit_rate": round(self.cache_hits / self.distinct, 4) if self.distinct else None,
                "texts_per_s": round(self.embedded / self.seconds, 1) if self.seconds else None, "models": sorted(self.models)}  # fmt: skip


class EmbeddingCache:
    """Vectors by (model key, text hash) in a Delta table of the lake."""

    def __init__(self, lake: Lake, model: str) -> None:
        self.lake = lake
        self.model = model

    def lookup(self, hashes: list[str]) -> dict[str, np.ndarray]:
        if not hashes or not self.lake.exists(EMBEDDING_CACHE):
            return {}
        import pyarrow.dataset as ds

        found = self.lake.dataset(EMBEDDING_CACHE).to_table(
            columns=["text_hash", "vector"], filter=(ds.field("model") == self.model) & ds.field("text_hash").isin(hashes)
        )  # fmt: skip
        return dict(zip(found["text_hash"].to_pylist(), (np.asarray(v, np.float32) for v in found["vector"].to_pylist())))

    def add(self, hashes: list[str], vectors: np.ndarray, run_id: str) -> None:
        if not hashes:
            return
        flat = pa.array(vectors.astype(np.float32).reshape(-1), pa.float32())
        offsets = pa.array(np.arange(0, len(flat) + 1, vectors.shape[1], dtype=np.int32))
        now = pa.scalar(time.time_ns() // 1000, pa.int64()).cast(UTC_US)
        table = pa.table({"model": pa.array([self.model] * len(hashes)), "text_hash": pa.array(hashes),
                          "vector": pa.ListArray.from_arrays(offsets, flat), "created_at": pa.repeat(now, len(hashes))})  # fmt: skip
        self.lake.append(EMBEDDING_CACHE, table.cast(EMBEDDING_CACHE.schema), {"rayapp.run_id": run_id})


def with_vectors(rows: pa.Table, model: Embedding, cache: EmbeddingCache, stats: EmbedStats, run_id: str) -> pa.Table:
    """``rows`` with a ``vector`` column (null where ``text`` is null: deletions): every distinct text
    looked up in the cache, the rest embedded by ``model`` and added to the cache."""
    texts = rows["text"].to_pylist()
    present = [t for t in texts if t is not None]
    distinct = list(dict.fromkeys(present))
    hashes = text_hashes(distinct)
    known = cache.lookup(hashes)
    missing = [(t, h) for t, h in zip(distinct, hashes) if h not in known]
    stats.requested += len(present)
    stats.distinct += len(distinct)
    stats.cache_hits += len(distinct) - len(missing)
    if missing:
        start = time.monotonic()
        new = np.concatenate(list(model.vectors([t for t, _ in missing])))
        stats.seconds += time.monotonic() - start
        stats.embedded += len(missing)
        cache.add([h for _, h in missing], new, run_id)
        known.update(zip((h for _, h in missing), new))
    by_text = dict(zip(distinct, (known[h] for h in hashes)))
    values = [None if t is None else by_text[t] for t in texts]
    return rows.append_column("vector", pa.array(values, pa.list_(pa.float32())))


def send_vectors(router: Router, profiles: pa.Table | None, risky: list[pa.Table], lake: Lake, run_id: str) -> EmbedStats:
    """Embed merchant profiles and risky-transaction rows (cache first), and route them to the vector stores."""
    stats = EmbedStats()
    wanted = [(d, rows) for d, rows in ((Dataset.MERCHANT_VECTORS, profiles), (Dataset.TRANSACTION_VECTORS, pa.concat_tables(risky) if risky else None))
              if rows is not None and rows.num_rows and router.wants(d)]  # fmt: skip
    if not wanted:
        return stats
    use_serve = serve_app_running()
    logger.info("embedding through %s", "the Serve Embedder" if use_serve else "an inline model actor")
    model = Embedding(use_serve)
    try:
        cache = EmbeddingCache(lake, model.key())
        stats.models.add(cache.model)
        for dataset, rows in wanted:
            for part in slices(rows, 50_000):
                router.send(dataset, with_vectors(part, model, cache, stats, run_id))
            router.flush(dataset)
    finally:
        model.close()
    logger.info("embedding: %s", stats.details())
    return stats


def embed(rows: pa.Table, use_serve: bool, lake: Lake, run_id: str) -> pa.Table:
    """``rows`` with vectors (cache first): what ``reconcile --repair`` re-sends to a vector store."""
    model = Embedding(use_serve)
    try:
        return with_vectors(rows, model, EmbeddingCache(lake, model.key()), EmbedStats(), run_id)
    finally:
        model.close()


__all__ = ["Embedding", "EmbeddingCache", "EmbedStats", "embed", "send_vectors", "text_hashes"]
