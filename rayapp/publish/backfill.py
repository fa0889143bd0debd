"""Seed-parity backfills: rebuild the graph or the vector store from what ClickHouse holds.

ClickHouse rows are read with ``FINAL`` (the newest version per key): through Ray Data's
``read_clickhouse`` for a server URL, or streamed by this process for embedded chDB (one
process may open it). They then go through the same writer actors, routing and shaping as
``publish``, so a backfilled store equals a published one.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import Dataset
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.ledger import Ledger
from rayapp.publish.embedding import send_vectors
from rayapp.publish.run import PublishResult, router_for, tally_counts
from rayapp.publish.writers import Fanout, start_writers, stop_writers
from rayapp.sinks import store
from rayapp.sinks.base import conform
from rayapp.sinks.clickhouse import client_for
from rayapp.transforms import serving as sv
from rayapp.urls import redact_url

logger = logging.getLogger(__name__)

TARGETS = ("graph", "vector")


def clickhouse_rows(lake: Lake, dataset: Dataset, batch_rows: int) -> Iterator[pa.Table]:
    """Current rows of a ClickHouse table as Arrow tables of the dataset's schema."""
    spec = store("clickhouse")
    url = spec.url(lake.settings)
    if spec.is_embedded(url):
        sink = spec.make(lake.settings, url)
        try:
            sink.on_write_start()
            for t in sink.read(dataset):  # type: ignore[attr-defined]
                for start in range(0, t.num_rows, batch_rows):
                    yield conform(dataset, sv.plain_strings(t.slice(start, batch_rows)))
        finally:
            sink.close()
        return
    import ray

    client_for(url).close()  # fail fast, with the URL's own error, when the server is unreachable
    ds = ray.data.read_clickhouse(table=f"{dataset.value} FINAL", dsn=url, num_cpus=0.5)
    for t in ds.iter_batches(batch_size=batch_rows, batch_format="pyarrow"):
        yield conform(dataset, sv.plain_strings(t))


def rebuild_from_clickhouse(lake: Lake, ledger: Ledger, run_id: str, target: str) -> PublishResult:
    """Write every ClickHouse transaction (graph) or every merchant profile and risky transaction
    (vectors) to ``target``."""
    if target not in TARGETS:
        raise RayappError(f"backfill target must be graph or vector, not {target!r}")
    settings = lake.settings
    spec = store(target)
    batch_rows = spec.batch_rows(settings)
    pools = start_writers(lake, [target], run_id)
    fan = Fanout(lake, run_id, pools)
    router = router_for(lake, fan, [target])
    rows_read = 0
    risky: list[pa.Table] = []
    attributes: list[pa.Table] = []
    try:
        for batch in clickhouse_rows(lake, Dataset.TRANSACTIONS, batch_rows):
            rows_read += batch.num_rows
            router.send(Dataset.TRANSACTIONS, batch)
            if router.wants(Dataset.TRANSACTION_VECTORS):
                risky.append(sv.transaction_vector_rows(batch, settings.vector_min_score, with_deletes=False))
                attributes.append(sv.merchant_attributes(batch))
        router.flush(Dataset.TRANSACTIONS)
        if router.wants(Dataset.MERCHANT_VECTORS):
            gold = list(clickhouse_rows(lake, Dataset.MERCHANT_DAILY_STATS, batch_rows))
            profiles = None
            if gold:
                merchant_daily = pa.concat_tables(gold)
                version = int(pc.max(merchant_daily["_version"]).as_py() or 0)
                profiles = sv.merchant_profiles(sv.merchant_attributes_of(attributes), sv.merchant_stats(merchant_daily), version)
            send_vectors(router, profiles, risky, lake, run_id)
        tally = fan.drain()
    finally:
        stop_writers(pools)
    t = tally[target]
    ledger.record_dead_letters(t.dead_letters)
    counts = {"rows_read": rows_read, **tally_counts(tally), "dead_letters": len(t.dead_letters)}
    details: dict[str, Any] = {"source": redact_url(store("clickhouse").url(settings)), "target": redact_url(spec.url(settings)),
                               "written": t.written, "errors": sorted(set(t.errors))[:5]}  # fmt: skip
    return PublishResult(status="partial" if t.dead_letters else "succeeded", counts=counts, details=details, dead_letters=t.dead_letters)
