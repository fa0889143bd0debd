"""`maintain` on a lake grown by several runs: fewer files, every stage and time travel within the
retention still work, and a vacuum with no retention keeps exactly what the watermarks need."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jobs import bronze_to_silver as b2s_job
from jobs import generate as generate_job
from jobs import ingest as ingest_job
from jobs import maintain as maintain_job
from jobs import score_transactions as score_job
from jobs import silver_to_gold as gold_job
from jobs import train_fraud_model as train_job
from rayapp.catalog import BRONZE, GOLD_ACCOUNT, LEDGER_RUNS, PREDICTIONS, SILVER
from rayapp.lake import Lake
from rayapp.ledger import Ledger
from rayapp.pipelines.maintain import watermark_floor
from rayapp.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]


def _stages(args: list[str], train: bool = False) -> None:
    for job in (ingest_job, b2s_job, gold_job, *((train_job,) if train else ())):
        assert job.entrypoint(args) == 0
    assert score_job.entrypoint(args + ["--mode", "inline"]) == 0


def test_maintenance_keeps_every_stage_and_time_travel_working(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["--data-dir", str(data)]
    assert generate_job.entrypoint(args + ["--rows", "9000", "--files", "3", "--seed", "8"]) == 0
    landing = data / "lake" / "landing"
    later = tmp_path / "later"
    later.mkdir()
    files = sorted(p for p in landing.rglob("*") if p.is_file())
    for f in files[1:]:
        shutil.move(str(f), later / f.name)
    _stages(args, train=True)
    shutil.move(str(later / files[1].name), landing / files[1].name)
    _stages(args)
    lake = Lake(load_settings(overrides={"data_dir": str(data)}))
    old_bronze = lake.version(BRONZE) - 1
    silver_before = lake.read(SILVER).sort_by("transaction_id")
    gold_before = lake.read(GOLD_ACCOUNT).sort_by([("account_id", "ascending"), ("activity_date", "ascending")])

    assert maintain_job.entrypoint(args + ["--dry-run"]) == 0
    assert maintain_job.entrypoint(args) == 0
    run = Ledger(lake).last_run("maintain")
    assert run is not None and run.counts["files_after"] < run.counts["files_before"]  # readers open fewer files
    runs = run.details["tables"][LEDGER_RUNS.name]
    assert runs["files_after"] == 1 < runs["files_before"]  # the ledger: one commit per record, now one file
    assert run.counts["files_vacuumed"] == 0  # within the retention nothing is deleted
    assert lake.read(SILVER).sort_by("transaction_id").equals(silver_before)  # same rows, fewer files
    assert lake.read(GOLD_ACCOUNT).sort_by([("account_id", "ascending"), ("activity_date", "ascending")]).equals(gold_before)
    # Time travel within the retention, and every stage after maintenance.
    assert b2s_job.entrypoint(args + ["--full-refresh", "--as-of-version", str(old_bronze)]) == 0
    assert b2s_job.entrypoint(args + ["--full-refresh"]) == 0
    assert lake.read(SILVER).sort_by("transaction_id").select(["transaction_id", "updated_at", "amount"]).equals(
        silver_before.select(["transaction_id", "updated_at", "amount"]))
    assert gold_job.entrypoint(args) == 0 and score_job.entrypoint(args + ["--mode", "inline"]) == 0

    # No retention at all: only what the watermarks still need survives; the next incremental runs work.
    floor = watermark_floor(lake, SILVER)
    assert floor is not None
    assert maintain_job.entrypoint(args + ["--retention-hours", "0", "--set", "api_url_ttl_s=1"]) == 0  # no URL pins either
    run = Ledger(lake).last_run("maintain")
    assert run is not None and run.counts["files_vacuumed"] > 0 and run.counts["disk_files_after"] < run.counts["disk_files_before"]
    assert lake.open(SILVER, floor).to_pyarrow_table().num_rows > 0  # the oldest watermarked version is whole
    shutil.move(str(later / files[2].name), landing / files[2].name)
    _stages(args)
    silver = lake.read(SILVER)
    assert lake.read(PREDICTIONS).num_rows == silver.num_rows  # every row scored, incrementally, after the vacuum
    assert gold_job.entrypoint(args) == 0
