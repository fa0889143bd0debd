"""Embedding for the vector store: merchant profiles and high-risk transactions get vectors
through the Serve Embedder when the application runs, else from one inline model actor."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import Dataset
from rayapp.publish.routing import Router, slices
from rayapp.serving import ServeEmbedder, serve_app_running

logger = logging.getLogger(__name__)


class InlineEmbedder:
    """Ray actor: the sentence model loaded once, used when the Serve app is not running."""

    def __init__(self, column: str = "text") -> None:
        from rayapp.model_store import load_embedder

        self.column = column
        self.embedder = load_embedder(threads=1)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch[self.column].to_pylist()
        keep = [i for i, t in enumerate(texts) if t is not None]
        vecs = self.embedder.embed([texts[i] for i in keep])
        values: list[Any] = [None] * len(texts)
        for j, i in enumerate(keep):
            values[i] = vecs[j]
        return batch.append_column("vector", pa.array(values, pa.list_(pa.float32())))


class ServeEmbedNullable(ServeEmbedder):
    """ServeEmbedder that leaves rows without text without a vector (they are deletions)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        has = pc.is_valid(batch[self.column])
        embedded = super().__call__(batch.filter(has)) if pc.any(has).as_py() else None
        values: list[Any] = [None] * batch.num_rows
        if embedded is not None:
            vecs = embedded["vector"].to_pylist()
            for j, i in enumerate(pc.indices_nonzero(has).to_pylist()):
                values[i] = vecs[j]
        return batch.append_column("vector", pa.array(values, pa.list_(pa.float32())))


def embed(rows: pa.Table, use_serve: bool, chunk: int = 512) -> Iterator[pa.Table]:
    """``rows`` with a ``vector`` column (null where ``text`` is null): through the Serve Embedder's
    handle, or one inline model actor (half a CPU, so it fits beside Serve and the writers).

    Not a Ray Data pipeline on purpose: ``from_arrow`` starts 1-CPU metadata tasks that can wait
    forever on a small cluster whose CPUs the writers and replicas hold."""
    import ray

    if rows.num_rows == 0:
        return
    if use_serve:
        embedder = ServeEmbedNullable()
        for part in slices(rows, chunk):
            yield embedder(part)
        return
    actor = ray.remote(num_cpus=0.5)(InlineEmbedder).remote()
    try:
        pending = [actor.__call__.remote(part) for part in slices(rows, chunk)]
        for ref in pending:
            yield ray.get(ref)
    finally:
        ray.kill(actor)


def send_vectors(router: Router, profiles: pa.Table | None, risky: list[pa.Table]) -> None:
    """Embed merchant profiles and risky-transaction rows, and route them to the vector stores."""
    use_serve = serve_app_running()
    logger.info("embedding through %s", "the Serve Embedder" if use_serve else "an inline model actor")
    for dataset, rows in ((Dataset.MERCHANT_VECTORS, profiles), (Dataset.TRANSACTION_VECTORS, pa.concat_tables(risky) if risky else None)):
        if rows is not None and router.wants(dataset):
            for part in embed(rows, use_serve):
                router.send(dataset, part)
            router.flush(dataset)
