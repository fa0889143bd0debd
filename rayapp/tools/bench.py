"""Benchmark harness: time each pipeline stage on generated data and write a JSON report."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from rayapp.lake import Lake
from rayapp.ledger import Ledger, new_run_id, utcnow
from rayapp.serving import APP_NAME, serve_app_running
from rayapp.settings import Settings
from rayapp.tools.bench_timing import StageTiming, timed

logger = logging.getLogger(__name__)


def _machine() -> dict[str, Any]:
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = round(int(fh.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_gib": mem, "platform": platform.platform(), "python": platform.python_version()}


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
    lake_only: bool = False,
) -> dict[str, Any]:
    """Generate ``rows`` rows into a scratch lake under ``<data_dir>/bench`` and time every stage.

    Args:
        deploy_models: starts the Serve application for a settings object (from ``serve.app``);
            without it the Serve-path stages (and the HTTP API load) are skipped.
        api_requests: requests per endpoint of the HTTP API load (0: no API load; the lake is then
            not published to the vector store, which the search endpoint reads).
        lake_only: generate → ingest → bronze_to_silver → silver_to_gold only (the scale run: no
            single-process reference, models or stores), with the lake's sizes on disk.

    Returns:
        The report (also written to ``<data_dir>/bench/benchmark-<timestamp>.json``), with each
        stage's time and share of landing → PostgreSQL, peak memory (driver, all of the Ray
        session's processes) and disk growth.
    """
    from rayapp.tools.bench_memory import MemoryWatch, spill_stats

    bench_dir = Path(settings.data_dir) / "bench"
    work = bench_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    scratch = settings.model_copy(
        update={"data_dir": work, "lake_uri": str(work / "lake"), "landing_uri": str(work / "lake" / "landing")}
    )
    ours = deploy_models is not None and not lake_only and not serve_app_running()
    try:
        with MemoryWatch(work) as watch:
            timings, api, lake = _stages(scratch, rows, files, seed, deploy_models, embed_texts, sinks, api_requests, lake_only)
    finally:
        if ours:  # the app serves the scratch lake, removed below: leave the cluster as it was found
            _remove_serve_app()
    by = {s.stage: s for s in timings}
    report = {
        "at": utcnow().isoformat(),
        "rows": rows,
        "files": files,
        "machine": _machine(),
        "landing_to_postgres": _landing_to_postgres(by, rows),
        "memory": watch.report() | spill_stats(),
        "api": api,
        "stages": [
            {"stage": s.stage, "rows": s.rows, "seconds": round(s.seconds, 3), "rows_per_s": round(s.rows_per_s), **s.extra}
            for s in timings
        ],
    }
    if "polars_reference_bronze_to_silver" in by:
        report["bronze_to_silver_vs_polars"] = round(by["bronze_to_silver"].seconds / by["polars_reference_bronze_to_silver"].seconds, 2)
    if "score_serve" in by:
        report["serve_vs_inline_scoring"] = round(by["score_serve"].seconds / by["score_inline"].seconds, 2)
        report["serve_vs_inline_scoring_step"] = round(by["score_step_serve"].seconds / by["score_step_inline"].seconds, 2)
    if lake_only:
        report["disk_mib"] = _lake_sizes(lake)
    bench_dir.mkdir(parents=True, exist_ok=True)
    out = bench_dir / f"benchmark-{utcnow():%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    report["report_path"] = str(out)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _remove_serve_app() -> None:
    """Delete the Serve application the benchmark deployed, and Serve itself when nothing else runs
    on it: its replicas hold CPUs that a later run's Ray Data tasks would wait for."""
    from ray import serve

    try:
        serve.delete(APP_NAME)
        if not serve.status().applications:
            serve.shutdown()
    except Exception as exc:  # noqa: BLE001 - the report is written either way
        logger.warning("could not remove the benchmark's Serve application: %s", exc)


LANDING_TO_POSTGRES = ("ingest", "bronze_to_silver", "silver_to_gold", "score_inline", "publish_postgres")


def _landing_to_postgres(by: dict[str, StageTiming], rows: int) -> dict[str, Any] | None:
    """The batch path from landing files to PostgreSQL (model trained beforehand): its total and
    each stage's share of it."""
    if not all(s in by for s in LANDING_TO_POSTGRES):
        return None
    total = sum(by[s].seconds for s in LANDING_TO_POSTGRES)
    return {
        "seconds": round(total, 2),
        "landing_rows_per_s": round(rows / total),
        "shares": {s: round(by[s].seconds / total, 3) for s in LANDING_TO_POSTGRES},
    }


def _lake_sizes(lake: Lake) -> dict[str, Any]:
    """MiB under each lake table, the landing zone, and what staging left behind (local or S3)."""
    from rayapp.catalog import BRONZE, GOLD_TABLES, QUARANTINE, SILVER

    def size(uri: str) -> int:
        fs, path = lake.fsspec(uri)
        return int(fs.du(path)) if fs.exists(path) else 0

    uris = {t.name: lake.uri(t) for t in (BRONZE, SILVER, QUARANTINE, *GOLD_TABLES)}
    uris |= {"landing": lake.settings.landing, "staging_left": lake.path("_staging")}
    return {k: round(size(uri) / 1024 / 1024, 1) for k, uri in uris.items()}


def _stages(
    scratch: Settings, rows: int, files: int, seed: int, deploy_models: Callable[[Settings], str] | None, embed_texts: int,
    sinks: bool, api_requests: int, lake_only: bool,
) -> tuple[list[StageTiming], list[dict[str, Any]], Lake]:  # fmt: skip
    from rayapp.catalog import BRONZE
    from rayapp.pipelines.generate import generate
    from rayapp.pipelines.gold import silver_to_gold
    from rayapp.pipelines.ingest import ingest
    from rayapp.pipelines.silver import bronze_to_silver
    from rayapp.tools.bench_reference import reference_bronze_to_silver
    from rayapp.tools.datagen import GenSpec

    lake = Lake(scratch)
    ledger = Ledger(lake)
    spec = GenSpec(rows=rows, seed=seed, files=files)
    timings: list[StageTiming] = []
    t, _ = timed("generate", rows, lambda: generate(lake, spec, scratch.landing))
    timings.append(t)
    t, _ = timed("ingest", lambda r: r.rows, lambda: ingest(lake, ledger, new_run_id("bench-ingest")))
    timings.append(t)
    t, b2s = timed("bronze_to_silver", rows, lambda: bronze_to_silver(lake, ledger, new_run_id("bench-b2s")))
    t.extra = {"silver_rows": b2s.counts["inserted"], "quarantined": b2s.counts["quarantined"]}
    timings.append(t)
    t, gold = timed("silver_to_gold", b2s.counts["inserted"], lambda: silver_to_gold(lake, ledger, new_run_id("bench-gold")))
    t.extra = {"dates": gold.dates}
    timings.append(t)
    if lake_only:
        return timings, [], lake
    t, ref = timed(
        "polars_reference_bronze_to_silver", rows,
        lambda: reference_bronze_to_silver(lake.uri(BRONZE), lake.storage_options),
    )  # fmt: skip
    t.extra = {
        "silver_rows": ref["silver_rows"], "quarantined": ref["quarantined"],
        "same_outcome": ref["silver_rows"] == b2s.counts["inserted"] and ref["quarantined"] == b2s.counts["quarantined"],
    }  # fmt: skip
    timings.append(t)

    from rayapp.pipelines.score import score_transactions
    from rayapp.pipelines.train import train_fraud_model
    from rayapp.publish import publish

    t, trained = timed("train_fraud_model", lambda r: r.rows, lambda: train_fraud_model(lake, new_run_id("bench-train")))
    t.extra = {"roc_auc": round(trained.model.metrics["roc_auc"], 4)}
    timings.append(t)
    silver_rows = b2s.counts["inserted"]
    t, _ = timed("score_inline", silver_rows, lambda: score_transactions(lake, ledger, new_run_id("bench-score"), mode="inline", full=True))
    timings.append(t)
    # Transactions, predictions and gold, as `rayapp run publish --store postgres` sends them.
    t, pub = timed("publish_postgres", lambda r: r.counts["rows_written"],
                   lambda: publish(lake, ledger, new_run_id("bench-publish"), stores=["postgres"]))  # fmt: skip
    timings.append(t)
    if deploy_models is not None:
        deploy_models(scratch)
        t, _ = timed("score_serve", silver_rows, lambda: score_transactions(lake, ledger, new_run_id("bench-score"), mode="serve", full=True))
        timings.append(t)
        timings.extend(_scoring_step_benchmark(lake, new_run_id("bench-step")))
        timings.append(_embed_benchmark(scratch, embed_texts))
    api: list[dict[str, Any]] = []
    if deploy_models is not None and api_requests > 0:
        from rayapp.tools.bench_api import api_benchmark

        t, _ = timed("publish_vector", silver_rows, lambda: publish(lake, ledger, new_run_id("bench-publish"), stores=["vector"]))
        timings.append(t)
        api = api_benchmark(lake, f"http://127.0.0.1:{scratch.serve_port}", requests=api_requests)
    if sinks:
        from rayapp.tools.bench_sinks import sink_benchmarks

        timings.extend(sink_benchmarks(lake, new_run_id("bench-sinks")))
    return timings, api, lake


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
