"""Seed-parity backfills: rebuild the graph or the vector store from what ClickHouse holds.

ClickHouse rows are read with ``FINAL`` (the newest version per key): through Ray Data's
``read_clickhouse`` for a server URL, or streamed by this process for embedded chDB (one
process may open it). They then go through the same writer actors and shaping as ``publish``,
so a backfilled store equals a published one.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.errors import RayappError
from rayapp.ledger import Ledger
from rayapp.pipelines.publish import Fanout, PublishResult, start_writers, stop_writers, submit_vectors
from rayapp.settings import Settings, redact_url
from rayapp.sinks import make_sink
from rayapp.sinks.base import Dataset, conform
from rayapp.transforms import serving as sv

logger = logging.getLogger(__name__)


def clickhouse_rows(settings: Settings, dataset: Dataset, batch_rows: int) -> Iterator[pa.Table]:
    """Current rows of a ClickHouse table as Arrow tables of the dataset's schema."""
    url = settings.store_url("clickhouse")
    if urlsplit(url).scheme == "chdb":
        sink = make_sink("clickhouse", url, settings.sink_options())
        try:
            sink.on_write_start()
            for t in sink.read(dataset):  # type: ignore[attr-defined]
                for start in range(0, t.num_rows, batch_rows):
                    yield conform(dataset, sv.plain_strings(t.slice(start, batch_rows)))
        finally:
            sink.close()
        return
    import ray

    from rayapp.sinks.clickhouse import client_for

    client_for(url).close()  # fail fast, with the URL's own error, when the server is unreachable
    ds = ray.data.read_clickhouse(table=f"{dataset.value} FINAL", dsn=url, num_cpus=0.5)
    for t in ds.iter_batches(batch_size=batch_rows, batch_format="pyarrow"):
        yield conform(dataset, sv.plain_strings(t))


def rebuild_from_clickhouse(settings: Settings, ledger: Ledger, run_id: str, target: str) -> PublishResult:
    """Write every ClickHouse transaction (graph) or every merchant profile and risky transaction
    (vectors) to ``target``."""
    import ray

    if target not in ("graph", "vector"):
        raise RayappError(f"backfill target must be graph or vector, not {target!r}")
    batch_rows = settings.batch_rows(target)
    pools = start_writers(settings, [target], run_id)
    fan = Fanout(settings, run_id, pools, settings.writer_max_in_flight)
    rows_read = 0
    risky: list[pa.Table] = []
    attributes: list[pa.Table] = []
    try:
        for batch in clickhouse_rows(settings, Dataset.TRANSACTIONS, batch_rows):
            rows_read += batch.num_rows
            if target == "graph":
                fan.submit("graph", Dataset.TRANSACTIONS, ray.put(batch))
            else:
                risky.append(sv.transaction_vector_rows(batch, settings.vector_min_score, with_deletes=False))
                attributes.append(sv.merchant_attributes(batch))
        if target == "vector":
            gold = list(clickhouse_rows(settings, Dataset.MERCHANT_DAILY_STATS, batch_rows))
            profiles = None
            if gold:
                merchant_daily = pa.concat_tables(gold)
                version = int(pc.max(merchant_daily["_version"]).as_py() or 0)
                profiles = sv.merchant_profiles(sv.merchant_attributes_of(attributes), sv.merchant_stats(merchant_daily), version)
            submit_vectors(fan, profiles, risky)
        tally = fan.drain()
    finally:
        stop_writers(pools)
    t = tally[target]
    ledger.record_dead_letters(t.dead_letters)
    counts = {"rows_read": rows_read, f"{target}.written": sum(t.written.values()), f"{target}.failed": sum(t.failed.values()),
              "dead_letters": len(t.dead_letters)}  # fmt: skip
    counts["rows_written"] = counts[f"{target}.written"]
    details: dict[str, Any] = {"source": redact_url(settings.store_url("clickhouse")), "target": redact_url(settings.store_url(target)),
                               "written": t.written, "errors": sorted(set(t.errors))[:5]}  # fmt: skip
    return PublishResult("partial" if t.dead_letters else "succeeded", counts, {}, details, t.dead_letters)
