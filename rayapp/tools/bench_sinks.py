"""The benchmark's store stages: each store's writer actors on batches prepared beforehand (lake
reads and embedding excluded), and the graph's next, incremental run."""

from __future__ import annotations

import logging
from typing import Any

from rayapp.lake import Lake
from rayapp.ledger import utcnow
from rayapp.tools.bench_timing import StageTiming, timed

logger = logging.getLogger(__name__)


def sink_benchmarks(lake: Lake, run_id: str, vector_rows: int = 200_000) -> list[StageTiming]:
    """Write throughput of each store through its writer actors (batches prepared beforehand, so
    lake reading and embedding are excluded). A store left at its embedded default is a fresh one
    under ``<data_dir>/sink_bench`` (the scratch PostgreSQL already holds what publish wrote: the
    same rows again would time a no-op upsert, not a load)."""
    import numpy as np
    import pyarrow as pa
    import ray
    from pydantic import SecretStr

    from rayapp.catalog import UTC_US, Dataset, dataset_schema
    from rayapp.publish.changes import find_changes
    from rayapp.publish.readers import transaction_batches
    from rayapp.publish.routing import Coalesce
    from rayapp.sinks import store as store_spec

    settings = lake.settings
    tables = list(transaction_batches(lake, find_changes(lake, None), settings.writer_batch_rows))
    fresh = {spec.setting: SecretStr(f"{spec.embedded_schemes[0]}://{settings.data_dir / 'sink_bench' / spec.default_dir}")
             for spec in map(store_spec, ("postgres", "clickhouse", "graph", "vector")) if getattr(settings, spec.setting) is None}  # fmt: skip
    lake = Lake(settings.model_copy(update=fresh))
    rows = sum(b.num_rows for b in tables)
    coalesce = Coalesce(store_spec("graph").batch_rows(settings))  # as publish hands them to the graph
    graph_tables = [b for t in tables for b in coalesce.add(t)] + [b for b in [coalesce.flush()] if b is not None]
    incremental = _graph_incremental(graph_tables[0].slice(0, 100_000))
    refs = {"graph": [ray.put(b) for b in graph_tables], "table": [ray.put(b) for b in tables]}
    del tables, graph_tables
    out: list[StageTiming] = []
    for store in ("postgres", "clickhouse", "graph"):
        t = _time_store(lake, run_id, store, Dataset.TRANSACTIONS, refs["graph" if store == "graph" else "table"], rows)
        if store == "graph":
            rels = t.extra["held"]["PAID"] + t.extra["held"]["USED"]
            t.extra.update({"relationships": rels, "relationships_per_s": round(rels / t.seconds), "bulk_copy": settings.graph_bulk_copy})
        out.append(t)
        logger.info("%s: %s", t.stage, t.extra)
    # The next run on that graph: 10% of its rows correct payments it holds (newer versions, some on
    # other accounts), 90% are new payments.
    t = _time_store(lake, run_id, "graph", Dataset.TRANSACTIONS, [ray.put(incremental)], incremental.num_rows)
    t.stage = "sink_graph_incremental"
    t.extra.update({"corrections": incremental.num_rows // 10, "relationships_per_s": round(incremental.num_rows / t.seconds)})
    out.append(t)
    logger.info("%s: %s", t.stage, t.extra)
    rng = np.random.default_rng(0)
    n = vector_rows
    vecs = rng.standard_normal((n, 384), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    schema = dataset_schema(Dataset.TRANSACTION_VECTORS)
    now = pa.scalar(utcnow(), UTC_US)
    table = pa.table({
        "id": pa.array([f"TX{i:012d}" for i in range(n)]), "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), 384),
        "text": pa.array(["synthetic"] * n), "account_id": pa.array(["ACC"] * n), "merchant_id": pa.array(["MER"] * n),
        "amount": pa.array(np.ones(n)), "fraud_score": pa.array(np.full(n, 0.9)), "model_version": pa.array(["bench"] * n),
        "event_time": pa.repeat(now, n), "_version": pa.repeat(now, n),
    }).cast(schema.set(1, pa.field("vector", pa.list_(pa.float32()))))  # fmt: skip
    refs = [ray.put(table.slice(i, settings.writer_batch_rows)) for i in range(0, n, settings.writer_batch_rows)]
    t = _time_store(lake, run_id, "vector", Dataset.TRANSACTION_VECTORS, refs, n)
    t.extra["unit"] = "vectors"
    out.append(t)
    return out


def _graph_incremental(base: Any) -> Any:
    """``base`` rows as the next publish run would send them: the first tenth newer versions of
    payments already written (every other one moved to the next row's account), the rest new."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = base.num_rows // 10
    later = pc.add(base["_version"], pa.scalar(3_600_000_000, pa.duration("us")))
    fixed = base.slice(0, n)
    moved = pa.array([a if i % 2 else b for i, (a, b) in enumerate(zip(fixed["account_id"].to_pylist(), base["account_id"].slice(1, n).to_pylist()))])
    fixed = fixed.set_column(fixed.schema.get_field_index("account_id"), "account_id", moved)
    fixed = fixed.set_column(fixed.schema.get_field_index("_version"), "_version", later.slice(0, n))
    new = base.slice(n)
    new = new.set_column(new.schema.get_field_index("transaction_id"), "transaction_id", pc.binary_join_element_wise(new["transaction_id"], pa.scalar("-next"), ""))
    new = new.set_column(new.schema.get_field_index("_version"), "_version", later.slice(n))
    return pa.concat_tables([fixed, new])


def _time_store(lake: Lake, run_id: str, store: str, dataset: Any, refs: list[Any], rows: int) -> StageTiming:
    """Time one store's writer actors taking every batch in ``refs`` (setup outside the timing)."""
    import ray

    from rayapp.publish.writers import Fanout, start_writers, stop_writers

    pools = start_writers(lake, [store], run_id)
    try:
        ray.get([a.counts.remote() for a in pools[store]])  # connect + create tables outside the timing
        fan = Fanout(lake, run_id, pools)

        def write_all() -> Any:
            for ref in refs:
                fan.submit(store, dataset, ref)
            fan.finish_when_written(store, dataset)  # a first load into PostgreSQL is done once indexed
            return fan.drain()

        t, tally = timed(f"sink_{store}", rows, write_all)
        t.extra = {"failed": sum(tally[store].failed.values()), "held": ray.get(pools[store][0].counts.remote())}
    finally:
        stop_writers(pools)
    return t


__all__ = ["sink_benchmarks"]
