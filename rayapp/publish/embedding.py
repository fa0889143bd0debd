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
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from rayapp.catalog import EMBEDDING_CACHE, UTC_US, Dataset
from rayapp.lake import Lake
from rayapp.publish.routing import Coalesce, Router
from rayapp.serving import EMBEDDER, deployment, serve_app_running

logger = logging.getLogger(__name__)


#: torch threads of the inline model actor: Ray gives a fractional-CPU actor OMP_NUM_THREADS=1, and
#: a second thread nearly doubles texts/s (131 → 252 on this 2-core VM), as for the Serve Embedder.
INLINE_THREADS = 2
#: Seconds between calls of the waiting caller's own work while the model embeds.
WAIT_SLICE_S = 1.0


class InlineEmbedder:
    """Ray actor: the sentence model loaded once, used when the Serve app is not running."""

    def __init__(self) -> None:
        from rayapp.model_store import load_embedder

        self.embedder = load_embedder(threads=INLINE_THREADS)

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

    def submit(self, texts: list[str], chunk: int = 512) -> list[Any]:
        """Ask for the vectors of ``texts`` in chunks, without waiting: the model works while the
        caller goes on; :meth:`collect` waits for them."""
        parts = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
        if self.use_serve:
            return [self.handle.embed_many.remote(part) for part in parts]
        return [self.actor.embed_many.remote(part) for part in parts]

    def collect(self, pending: list[Any], while_waiting: Callable[[], None] | None = None) -> np.ndarray:
        """``len(texts) x dim`` vectors of what :meth:`submit` returned; ``while_waiting`` is called
        about once a second until they are all there (the caller's other work: recording writes)."""
        import ray

        got = []
        for p in pending:
            while True:
                try:
                    if while_waiting is None:
                        got.append(p.result() if self.use_serve else ray.get(p))
                    else:
                        got.append(p.result(timeout_s=WAIT_SLICE_S) if self.use_serve else ray.get(p, timeout=WAIT_SLICE_S))
                    break
                except (TimeoutError, ray.exceptions.GetTimeoutError):
                    assert while_waiting is not None
                    while_waiting()
        return np.concatenate(got) if got else np.zeros((0, 0), np.float32)

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


@dataclass
class _Request:
    """One part's texts: those the cache held, and the model's answers pending for the rest."""

    dataset: Dataset | None
    rows: pa.Table
    texts: list[str | None]
    known: dict[str, np.ndarray]
    hashes: dict[str, str]  # distinct text -> hash
    missing: list[str]  # hashes the model is embedding
    pending: list[Any]
    borrowed: dict[str, "_Request"]  # hashes an earlier part is embedding -> that part


def _request(dataset: Dataset | None, rows: pa.Table, model: Embedding, cache: EmbeddingCache, stats: EmbedStats,
             inflight: dict[str, _Request] | None = None) -> _Request:
    """Look every distinct text of ``rows`` up in the cache, and in ``inflight`` (texts earlier parts
    are embedding, filled here), and send the rest to ``model``."""
    texts = rows["text"].to_pylist()
    present = [t for t in texts if t is not None]
    hashes = dict(zip(distinct := list(dict.fromkeys(present)), text_hashes(distinct)))
    known = cache.lookup(list(hashes.values()))
    missing, borrowed = [], {}
    for t, h in hashes.items():
        if h in known:
            continue
        if inflight is not None and h in inflight:
            borrowed[h] = inflight[h]
        else:
            missing.append((t, h))
    stats.requested += len(present)
    stats.distinct += len(distinct)
    stats.cache_hits += len(distinct) - len(missing)
    stats.embedded += len(missing)
    req = _Request(dataset, rows, texts, known, hashes, [h for _, h in missing], model.submit([t for t, _ in missing]) if missing else [], borrowed)
    if inflight is not None:
        inflight.update((h, req) for h in req.missing)
    return req


def _attach(req: _Request, model: Embedding, cache: EmbeddingCache, run_id: str,
            while_waiting: Callable[[], None] | None = None) -> pa.Table:
    """The part's rows with a ``vector`` column (null where ``text`` is null: deletions); what the
    model embedded is added to the cache."""
    if req.missing:
        new = model.collect(req.pending, while_waiting)
        cache.add(req.missing, new, run_id)
        req.known.update(zip(req.missing, new))
    req.known.update((h, src.known[h]) for h, src in req.borrowed.items())  # attached before this one: parts go in order
    values = [None if t is None else req.known[req.hashes[t]] for t in req.texts]
    return req.rows.append_column("vector", pa.array(values, pa.list_(pa.float32())))


def with_vectors(rows: pa.Table, model: Embedding, cache: EmbeddingCache, stats: EmbedStats, run_id: str) -> pa.Table:
    """``rows`` with a ``vector`` column: every distinct text looked up in the cache, the rest embedded."""
    start = time.monotonic()
    out = _attach(_request(None, rows, model, cache, stats), model, cache, run_id)
    stats.seconds += time.monotonic() - start
    return out


class VectorFeed:
    """Vectors for the rows of the vector datasets *as they are read*: each part of ``part_rows``
    rows is looked up in the cache and its new texts sent to the model at once, so the model embeds
    while the writers of the other stores work; parts are routed, in order, as their vectors come
    back, with at most ``ahead`` texts asked for and not yet routed (bounded memory: 32k texts'
    vectors are ~50 MB). A text an earlier part is still embedding is taken from that part: each
    distinct text is embedded once. Past ``ahead`` the reader waits for the model, and with it the
    other stores' batches: a bound of 8k texts held a 1M-row publish's reads (and the graph's one
    bulk block) back until the CPU model had embedded most of its 14k texts."""

    def __init__(self, router: Router, lake: Lake, run_id: str, part_rows: int = 2048, ahead: int = 32_768,
                 while_waiting: Callable[[], None] | None = None) -> None:
        self.router, self.lake, self.run_id, self.ahead = router, lake, run_id, ahead
        self.while_waiting = while_waiting  # called about once a second while a part's vectors are awaited
        self.stats = EmbedStats()
        self.buffers = {d: Coalesce(part_rows) for d in (Dataset.TRANSACTION_VECTORS, Dataset.MERCHANT_VECTORS) if router.wants(d)}
        self.model: Embedding | None = None
        self.cache: EmbeddingCache | None = None
        self.queue: list[_Request] = []
        self.inflight: dict[str, _Request] = {}
        self.started: float | None = None

    def add(self, dataset: Dataset, rows: pa.Table | None) -> None:
        if rows is None or not rows.num_rows or dataset not in self.buffers:
            return
        self.router.expect(dataset, rows.num_rows)  # the progress shows the rows waiting on the model
        for part in self.buffers[dataset].add(rows):
            self._ask(dataset, part)

    def _ask(self, dataset: Dataset, rows: pa.Table) -> None:
        if self.model is None:
            use_serve = serve_app_running()
            logger.info("embedding through %s", "the Serve Embedder" if use_serve else "an inline model actor")
            self.model = Embedding(use_serve)
            self.cache = EmbeddingCache(self.lake, self.model.key())
            self.stats.models.add(self.cache.model)
            self.started = time.monotonic()
        assert self.cache is not None
        self.queue.append(_request(dataset, rows, self.model, self.cache, self.stats, self.inflight))
        while self.queue and sum(len(r.missing) for r in self.queue) > self.ahead:
            self._route(self.queue.pop(0))

    def _route(self, req: _Request) -> None:
        assert self.model is not None and self.cache is not None and req.dataset is not None
        self.router.send(req.dataset, _attach(req, self.model, self.cache, self.run_id, self.while_waiting))
        for h in req.missing:
            if self.inflight.get(h) is req:
                del self.inflight[h]

    def close(self) -> EmbedStats:
        """Route every part left (then flush each vector dataset); returns what was embedded."""
        try:
            for dataset, buf in self.buffers.items():
                if (rest := buf.flush()) is not None:
                    self._ask(dataset, rest)
            while self.queue:
                self._route(self.queue.pop(0))
            for dataset in self.buffers:
                self.router.flush(dataset)
            if self.started is not None:
                self.stats.seconds = time.monotonic() - self.started
                logger.info("embedding: %s", self.stats.details())
            return self.stats
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop the inline model actor, if one was started (idempotent)."""
        if self.model is not None:
            self.model.close()


def send_vectors(router: Router, profiles: pa.Table | None, risky: list[pa.Table], lake: Lake, run_id: str) -> EmbedStats:
    """Embed merchant profiles and risky-transaction rows (cache first), and route them to the vector stores."""
    feed = VectorFeed(router, lake, run_id, while_waiting=router.fan.poll)
    try:
        feed.add(Dataset.MERCHANT_VECTORS, profiles)
        for rows in risky:
            feed.add(Dataset.TRANSACTION_VECTORS, rows)
        return feed.close()
    finally:
        feed.abort()


def embed(rows: pa.Table, use_serve: bool, lake: Lake, run_id: str) -> pa.Table:
    """``rows`` with vectors (cache first): what ``reconcile --repair`` re-sends to a vector store."""
    model = Embedding(use_serve)
    try:
        return with_vectors(rows, model, EmbeddingCache(lake, model.key()), EmbedStats(), run_id)
    finally:
        model.close()


__all__ = ["Embedding", "EmbeddingCache", "EmbedStats", "VectorFeed", "embed", "send_vectors", "text_hashes"]
