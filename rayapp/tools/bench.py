"""Benchmark harness: time each pipeline stage on generated data and write a JSON report."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rayapp.lake import Lake
from rayapp.ledger import Ledger, new_run_id, utcnow
from rayapp.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class StageTiming:
    stage: str
    rows: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _machine() -> dict[str, Any]:
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = round(int(fh.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_gib": mem, "platform": platform.platform(), "python": platform.python_version()}


def timed(stage: str, rows: int | Callable[[Any], int], fn: Callable[[], Any]) -> tuple[StageTiming, Any]:
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    n = rows(out) if callable(rows) else rows
    timing = StageTiming(stage, n, dt)
    logger.info("%s: %d rows in %.2fs = %.0f rows/s", stage, n, dt, timing.rows_per_s)
    return timing, out


def run_benchmark(
    settings: Settings,
    rows: int,
    files: int,
    seed: int,
    keep: bool = False,
    deploy_models: Callable[[Settings], str] | None = None,
    embed_texts: int = 4000,
    sinks: bool = True,
    api_requests: int = 300,
) -> dict[str, Any]:
    """Generate ``rows`` rows into a scratch lake under ``<data_dir>/bench`` and time every stage.

    Args:
        deploy_models: starts the Serve application for a settings object (from ``serve.app``);
            without it the Serve-path stages (and the HTTP API load) are skipped.
        api_requests: requests per endpoint of the HTTP API load (0: no API load; the lake is then
            not published to PostgreSQL and the vector store, which the API reads).

    Returns:
        The report (also written to ``<data_dir>/bench/benchmark-<timestamp>.json``).
    """
    from rayapp.pipelines.generate import generate
    from rayapp.pipelines.ingest import ingest
    from rayapp.tools.datagen import GenSpec

    bench_dir = Path(settings.data_dir) / "bench"
    work = bench_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    scratch = settings.model_copy(
        update={"data_dir": work, "lake_uri": str(work / "lake"), "landing_uri": str(work / "lake" / "landing")}
    )
    lake = Lake(scratch)
    ledger = Ledger(lake)
    spec = GenSpec(rows=rows, seed=seed, files=files)
    timings: list[StageTiming] = []

    t, _ = timed("generate", rows, lambda: generate(lake, spec, scratch.landing))
    timings.append(t)
    t, res = timed("ingest", lambda r: r.rows, lambda: ingest(lake, ledger, new_run_id("bench-ingest")))
    timings.append(t)

    import resource

    from rayapp.catalog import BRONZE
    from rayapp.pipelines.gold import silver_to_gold
    from rayapp.pipelines.silver import bronze_to_silver
    from rayapp.tools.bench_reference import reference_bronze_to_silver

    t, b2s = timed("bronze_to_silver", rows, lambda: bronze_to_silver(lake, ledger, new_run_id("bench-b2s")))
    t.extra = {"silver_rows": b2s.counts["inserted"], "quarantined": b2s.counts["quarantined"]}
    timings.append(t)
    t, gold = timed("silver_to_gold", b2s.counts["inserted"], lambda: silver_to_gold(lake, ledger, new_run_id("bench-gold")))
    t.extra = {"dates": gold.dates}
    timings.append(t)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t, ref = timed(
        "polars_reference_bronze_to_silver", rows,
        lambda: reference_bronze_to_silver(lake.uri(BRONZE), lake.storage_options),
    )  # fmt: skip
    t.extra = {
        "silver_rows": ref["silver_rows"], "quarantined": ref["quarantined"],
        "same_outcome": ref["silver_rows"] == b2s.counts["inserted"] and ref["quarantined"] == b2s.counts["quarantined"],
        "driver_peak_rss_mib_before": round(rss0 / 1024),
    }  # fmt: skip
    timings.append(t)

    from rayapp.pipelines.score import score_transactions
    from rayapp.pipelines.train import train_fraud_model

    t, trained = timed("train_fraud_model", lambda r: r.rows, lambda: train_fraud_model(lake, new_run_id("bench-train")))
    t.extra = {"roc_auc": round(trained.model.metrics["roc_auc"], 4)}
    timings.append(t)
    silver_rows = b2s.counts["inserted"]
    t, _ = timed("score_inline", silver_rows, lambda: score_transactions(lake, ledger, new_run_id("bench-score"), mode="inline", full=True))
    timings.append(t)
    if deploy_models is not None:
        deploy_models(scratch)
        t, _ = timed("score_serve", silver_rows, lambda: score_transactions(lake, ledger, new_run_id("bench-score"), mode="serve", full=True))
        timings.append(t)
        timings.extend(_scoring_step_benchmark(lake, new_run_id("bench-step")))
        timings.append(_embed_benchmark(scratch, embed_texts))
    api: list[dict[str, Any]] = []
    if deploy_models is not None and api_requests > 0:
        from rayapp.publish import publish
        from rayapp.tools.bench_api import api_benchmark

        t, _ = timed("publish_postgres_vector", silver_rows, lambda: publish(lake, ledger, new_run_id("bench-publish"), stores=["postgres", "vector"]))
        timings.append(t)
        api = api_benchmark(lake, f"http://127.0.0.1:{scratch.serve_port}", requests=api_requests)

    if sinks:
        timings.extend(_sink_benchmarks(lake, new_run_id("bench-sinks")))

    by = {s.stage: s for s in timings}
    ratio = by["bronze_to_silver"].seconds / by["polars_reference_bronze_to_silver"].seconds
    report = {
        "at": utcnow().isoformat(),
        "bronze_to_silver_vs_polars": round(ratio, 2),
        "serve_vs_inline_scoring": round(by["score_serve"].seconds / by["score_inline"].seconds, 2) if "score_serve" in by else None,
        "serve_vs_inline_scoring_step": (
            round(by["score_step_serve"].seconds / by["score_step_inline"].seconds, 2) if "score_step_serve" in by else None
        ),
        "rows": rows,
        "files": spec.n_files,
        "machine": _machine(),
        "api": api,
        "stages": [
            {"stage": s.stage, "rows": s.rows, "seconds": round(s.seconds, 3), "rows_per_s": round(s.rows_per_s), **s.extra}
            for s in timings
        ],
    }
    bench_dir.mkdir(parents=True, exist_ok=True)
    out = bench_dir / f"benchmark-{utcnow():%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    report["report_path"] = str(out)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _sink_benchmarks(lake: Lake, run_id: str, vector_rows: int = 200_000) -> list[StageTiming]:
    """Write throughput of each store through its writer actors (batches prepared beforehand, so
    lake reading and embedding are excluded; fresh stores under the scratch dir)."""
    import numpy as np
    import pyarrow as pa
    import ray

    from rayapp.catalog import UTC_US, Dataset, dataset_schema
    from rayapp.publish.changes import find_changes
    from rayapp.publish.readers import transaction_batches
    from rayapp.publish.routing import Coalesce
    from rayapp.sinks import store as store_spec

    settings = lake.settings
    tables = list(transaction_batches(lake, find_changes(lake, None), settings.writer_batch_rows))
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
            return fan.drain()

        t, tally = timed(f"sink_{store}", rows, write_all)
        t.extra = {"failed": sum(tally[store].failed.values()), "held": ray.get(pools[store][0].counts.remote())}
    finally:
        stop_writers(pools)
    return t


def _embed_benchmark(settings: Settings, n: int) -> StageTiming:
    """Short merchant-style texts through the Embedder deployment's batch method."""
    from rayapp.serving import EMBEDDER, deployment

    handle: Any = deployment(EMBEDDER)
    texts = [f"Card purchase at Store {i % 997} ref {i}" for i in range(n)]
    handle.embed_many.remote(texts[:64]).result()  # warm-up
    t0 = time.perf_counter()
    for i in range(0, n, 256):
        handle.embed_many.remote(texts[i : i + 256]).result()
    dt = time.perf_counter() - t0
    device = handle.describe.remote().result()["device"]
    timing = StageTiming("embed_serve", n, dt, {"device": device, "unit": "texts"})
    logger.info("embed: %d texts in %.2fs = %.0f texts/s on %s", n, dt, n / dt, device)
    return timing


def _scoring_step_benchmark(lake: Lake, run_id: str) -> list[StageTiming]:
    """The scoring step alone: the same materialised feature blocks through Serve and inline."""
    from ray.data import ActorPoolStrategy

    from rayapp.model_store import load_model
    from rayapp.pipelines.features import build_features
    from rayapp.pipelines.score import InlineScorer
    from rayapp.serving import ServeScorer

    model = load_model(lake.settings)
    features = build_features(lake, run_id, model.categories, task_cpus=0.5)
    try:
        ds = features.dataset.materialize()
    finally:
        features.cleanup()
    n = ds.count()
    out = []
    for stage, fn, kwargs, cpus in (
        ("score_step_serve", ServeScorer, {}, 0.2),
        ("score_step_inline", InlineScorer, {"lake": lake, "version": model.version}, 0.5),
    ):
        t, _ = timed(stage, n, lambda fn=fn, kwargs=kwargs, cpus=cpus: ds.map_batches(
            fn, fn_constructor_kwargs=kwargs, batch_size=50_000, batch_format="pyarrow",
            compute=ActorPoolStrategy(size=1), num_cpus=cpus).count())  # fmt: skip
        out.append(t)
    return out
