"""The `pipeline` job: order, one pipeline run id, stop on failure, resume, selection, dry run."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import jobs.silver_to_gold
from jobs import generate as generate_job
from jobs import pipeline as pipeline_job
from rayapp.cli import main
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.ledger import Ledger
from rayapp.catalog import PREDICTIONS
from rayapp.catalog import GOLD_ACCOUNT, SILVER
from rayapp.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]


def test_pipeline_stops_on_failure_and_resumes(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data-dir", str(settings.data_dir)]
    assert generate_job.entrypoint(base + ["--rows", "20000", "--files", "2", "--seed", "3"]) == 0

    assert pipeline_job.entrypoint(base + ["--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert plan.index("ingest") < plan.index("bronze_to_silver") < plan.index("silver_to_gold") < plan.index("score_transactions")
    assert Ledger(Lake(settings)).runs(job="pipeline") == []  # a dry run records nothing (a later --resume cannot misread it)

    def broken(ctx: Any, args: Any) -> Any:
        raise RayappError("broken on purpose")

    monkeypatch.setattr(jobs.silver_to_gold, "SPEC", dataclasses.replace(jobs.silver_to_gold.SPEC, body=broken))
    assert pipeline_job.entrypoint(base + ["--score-mode", "inline"]) == 1
    assert "stage silver_to_gold failed" in capsys.readouterr().err
    assert Lake(settings).exists(SILVER)
    assert not Lake(settings).exists(PREDICTIONS)  # later stages did not run
    monkeypatch.undo()

    ledger = Ledger(Lake(settings))
    failed = ledger.last_run("pipeline", status=("failed",))
    assert failed is not None
    children = {r.job: r for r in ledger.runs() if r.parent_run_id == failed.run_id}
    assert set(children) == {"ingest", "bronze_to_silver", "silver_to_gold"}  # the failed stage has its own failed run
    assert children["silver_to_gold"].status == "failed" and children["silver_to_gold"].error == "broken on purpose"
    assert children["bronze_to_silver"].status == "succeeded"

    # Resumed through the CLI with overrides: Settings are built once there and every stage gets them.
    elsewhere = settings.data_dir / "clickhouse-elsewhere"
    overrides = ["--set", f"clickhouse_url=chdb://{elsewhere}", "--set", "s3_endpoint_url=http://127.0.0.1:9"]
    assert main([*base, *overrides, "run", "pipeline", "--resume", "--score-mode", "inline"]) == 0
    resumed = ledger.last_run("pipeline")
    assert resumed is not None and resumed.details["resumed_from"] == failed.run_id
    stage_runs = [r for r in ledger.runs() if r.parent_run_id == resumed.run_id]
    assert {r.job for r in stage_runs} == {"silver_to_gold", "train_fraud_model", "score_transactions", "publish"}
    for r in [resumed, *stage_runs]:
        assert r.args["settings"]["clickhouse_url"] == f"chdb://{elsewhere}", r.job
        assert r.args["settings"]["s3_endpoint_url"] == "http://127.0.0.1:9", r.job
    assert elsewhere.is_dir()  # publish wrote ClickHouse where the override pointed
    ran = [s["stage"] for s in resumed.details["stages"] if s["status"] == "succeeded"]
    assert ran == ["silver_to_gold", "train_fraud_model", "score_transactions", "publish"]
    assert Lake(settings).exists(GOLD_ACCOUNT)
    assert Lake(settings).open(PREDICTIONS).count() == Lake(settings).open(SILVER).count()

    # Selection: only ingest runs; a model exists so training is skipped without --retrain.
    assert pipeline_job.entrypoint(base + ["--only", "ingest"]) == 0
    last = ledger.last_run("pipeline")
    assert last is not None and [s["stage"] for s in last.details["stages"] if s["status"] == "succeeded"] == ["ingest"]
    assert pipeline_job.entrypoint(base + ["--skip", "nonsense"]) == 2  # checked before anything starts
