"""The `pipeline` job: order, one pipeline run id, stop on failure, resume, selection, dry run."""

from __future__ import annotations

import pytest

import jobs.silver_to_gold
from jobs import generate as generate_job
from jobs import pipeline as pipeline_job
from rayapp import lake
from rayapp.ledger import Ledger
from rayapp.pipelines.score import PREDICTIONS
from rayapp.pipelines.silver import GOLD_ACCOUNT, SILVER, uri
from rayapp.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]


def test_pipeline_stops_on_failure_and_resumes(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data-dir", str(settings.data_dir)]
    assert generate_job.entrypoint(base + ["--rows", "20000", "--files", "2", "--seed", "3"]) == 0

    assert pipeline_job.entrypoint(base + ["--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert plan.index("ingest") < plan.index("bronze_to_silver") < plan.index("silver_to_gold") < plan.index("score_transactions")

    def broken(argv: list[str]) -> int:
        return 1

    monkeypatch.setattr(jobs.silver_to_gold, "JOB", (broken, "broken"))
    assert pipeline_job.entrypoint(base + ["--score-mode", "inline"]) == 1
    assert "stage silver_to_gold failed" in capsys.readouterr().err
    assert lake.table_exists(settings, uri(settings, SILVER))
    assert not lake.table_exists(settings, uri(settings, PREDICTIONS))  # later stages did not run
    monkeypatch.undo()

    ledger = Ledger(settings)
    failed = ledger.last_run("pipeline", status=("failed",))
    assert failed is not None
    children = {r.job: r for r in ledger.runs() if r.parent_run_id == failed.run_id}
    assert set(children) == {"ingest", "bronze_to_silver"}

    assert pipeline_job.entrypoint(base + ["--resume", "--score-mode", "inline"]) == 0
    resumed = ledger.last_run("pipeline")
    assert resumed is not None and resumed.details["resumed_from"] == failed.run_id
    ran = [s["stage"] for s in resumed.details["stages"] if s["status"] == "succeeded"]
    assert ran == ["silver_to_gold", "train_fraud_model", "score_transactions", "publish"]
    assert lake.table_exists(settings, uri(settings, GOLD_ACCOUNT))
    assert lake.open_table(settings, uri(settings, PREDICTIONS)).count() == lake.open_table(settings, uri(settings, SILVER)).count()

    # Selection: only ingest runs; a model exists so training is skipped without --retrain.
    assert pipeline_job.entrypoint(base + ["--only", "ingest"]) == 0
    last = ledger.last_run("pipeline")
    assert last is not None and [s["stage"] for s in last.details["stages"] if s["status"] == "succeeded"] == ["ingest"]
    assert pipeline_job.entrypoint(base + ["--skip", "nonsense"]) == 1
