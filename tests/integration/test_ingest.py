"""Landing -> bronze on a local Ray instance: counts, faithfulness, idempotency, rejections, S3."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from jobs import generate as generate_job
from jobs import ingest as ingest_job
from rayapp.lake import Lake
from rayapp.ledger import Ledger
from rayapp.catalog import BRONZE, LEDGER_FILES
from rayapp.catalog import CONTRACT_COLUMNS
from rayapp.settings import Settings, load_settings
from tests.integration import reference

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]


def _args(s: Settings) -> list[str]:
    return ["--data-dir", str(s.data_dir)]


def _bronze(s: Settings) -> pl.DataFrame:
    return pl.from_arrow(Lake(s).open(BRONZE).to_pyarrow_table())  # type: ignore[return-value]


def test_generate_ingest_is_faithful_and_idempotent(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate_job.entrypoint(_args(settings) + ["--rows", "12000", "--files", "3", "--seed", "9"]) == 0
    assert ingest_job.entrypoint(_args(settings)) == 0
    bronze = _bronze(settings)
    assert bronze.height == 12_000
    v1 = Lake(settings).open(BRONZE).version()

    # Every CSV/JSONL value is in bronze exactly as it was in the file, at its row number.
    landing = Path(settings.landing)
    for path in sorted(landing.glob("*.csv")) + sorted(landing.glob("*.jsonl")):
        expected = reference.read_file(path)
        got = bronze.filter(pl.col("_source_file") == str(path)).sort("_source_row")
        assert got.height == len(expected)
        assert got["_source_row"].to_list() == list(range(1, len(expected) + 1))
        for col in ("transaction_id", "amount", "event_time", "is_fraud", "status"):
            assert got[col].to_list() == [r[col] for r in expected], (path.name, col)
    extras = bronze.filter(pl.col("_extra").is_not_null())["_extra"].to_list()
    assert extras and all(json.loads(e) for e in extras)
    assert bronze["_batch_id"].n_unique() == 1 and bronze["_source_system"].unique().to_list() == ["landing"]
    # Each file read once, by its parse task, which took the MD5 of exactly the bytes it parsed.
    recorded = {r["path"]: r["checksum"] for r in Lake(settings).read(LEDGER_FILES).to_pylist()}
    assert recorded == {str(p): "md5:" + hashlib.md5(p.read_bytes()).hexdigest() for p in landing.iterdir()}

    # Second run: nothing new, no new bronze version.
    assert ingest_job.entrypoint(_args(settings)) == 0
    assert Lake(settings).open(BRONZE).version() == v1
    assert _bronze(settings).height == 12_000
    runs = Ledger(Lake(settings)).runs(job="ingest")
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    assert runs[0].counts["rows_written"] == 0 and runs[0].counts["files_skipped"] == 3
    assert runs[1].counts["rows_written"] == 12_000
    assert runs[1].versions_written == {"bronze/transactions": v1}


def test_bad_file_rejected_neighbours_ingested(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    landing = Path(settings.landing)
    landing.mkdir(parents=True)
    good = landing / "tx_20250101T000000Z.csv"
    good.write_text("transaction_id,amount,new_col\nT1,1.00,x\nT2,2.00,y\n")
    (landing / "tx_20250101T010000Z.jsonl").write_text('{"transaction_id": "T3"}\n{broken\n{"transaction_id": "T4"}\n')  # broken mid-file
    (landing / "tx_20250101T020000Z.parquet").write_bytes(b"not parquet at all")
    (landing / "README.txt").write_text("not landing data")
    assert ingest_job.entrypoint(_args(settings)) == 0
    out = capsys.readouterr().out
    assert "2 rejected" in out and "JSON Lines parse error" in out and "Parquet read error" in out
    bronze = _bronze(settings)
    assert bronze.sort("transaction_id")["transaction_id"].to_list() == ["T1", "T2"]
    assert [json.loads(e) for e in bronze.sort("transaction_id")["_extra"]] == [{"new_col": "x"}, {"new_col": "y"}]
    run = Ledger(Lake(settings)).runs(job="ingest")[0]
    assert run.status == "succeeded" and run.counts["files_rejected"] == 2 and run.counts["files_ignored"] == 1
    assert {Path(r["file"]).suffix for r in run.details["rejected"]} == {".jsonl", ".parquet"}

    # Rejected files are remembered; a fixed file (new content) is ingested; a changed file is re-read.
    assert ingest_job.entrypoint(_args(settings)) == 0
    assert _bronze(settings).height == 2
    (landing / "tx_20250101T010000Z.jsonl").write_text('{"transaction_id": "T3"}\n')
    assert ingest_job.entrypoint(_args(settings)) == 0
    assert sorted(_bronze(settings)["transaction_id"].to_list()) == ["T1", "T2", "T3"]


def test_crash_between_commit_and_file_ledger_is_repaired(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    landing = Path(settings.landing)
    landing.mkdir(parents=True)
    (landing / "a.csv").write_text("transaction_id\nT1\nT2\n")

    def boom(self: Ledger, files: list[Any]) -> None:
        raise RuntimeError("driver died")

    monkeypatch.setattr(Ledger, "record_files", boom)
    assert ingest_job.entrypoint(_args(settings)) == 1  # bronze committed, file ledger not written
    monkeypatch.undo()
    assert _bronze(settings).height == 2
    assert ingest_job.entrypoint(_args(settings)) == 0
    assert _bronze(settings).height == 2  # not ingested twice
    assert Ledger(Lake(settings)).runs(job="ingest")[1].status == "failed"


def test_ingest_on_s3(tmp_path: Path, s3_server: dict[str, str], s3_bucket: str) -> None:
    s3 = {**s3_server, "data_dir": str(tmp_path / "data"), "lake_uri": f"s3://{s3_bucket}/lake"}
    settings = load_settings(overrides=s3)
    flags = [x for k, v in s3.items() for x in ("--set", f"{k}={v}")]
    assert generate_job.entrypoint(flags + ["--rows", "4000", "--files", "3"]) == 0
    assert settings.landing == f"s3://{s3_bucket}/lake/landing"
    assert ingest_job.entrypoint(flags) == 0
    bronze = pl.from_arrow(Lake(settings).open(BRONZE).to_pyarrow_table())
    assert bronze.height == 4000
    assert all(f.startswith(f"s3://{s3_bucket}/lake/landing/") for f in bronze["_source_file"].unique())
    assert ingest_job.entrypoint(flags) == 0
    assert Lake(settings).open(BRONZE).count() == 4000
    runs = Ledger(Lake(settings)).runs()
    assert [r.job for r in runs] == ["ingest", "ingest", "generate"]
    assert all("testing-secret" not in json.dumps(r.args) for r in runs)


def test_unreachable_lake_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = ingest_job.entrypoint(
        ["--data-dir", str(tmp_path), "--set", "lake_uri=s3://nowhere/lake", "--set", "s3_endpoint_url=http://127.0.0.1:9",
         "--set", "s3_access_key_id=x", "--set", "s3_secret_access_key=y"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: cannot reach s3://nowhere/lake")
    assert not any("Traceback" in line for line in err)


def test_contract_columns_all_present_in_bronze(settings: Settings) -> None:
    landing = Path(settings.landing)
    landing.mkdir(parents=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CONTRACT_COLUMNS)
    w.writerow([f"v{i}" for i in range(len(CONTRACT_COLUMNS))])
    (landing / "full.csv").write_text(buf.getvalue())
    assert ingest_job.entrypoint(_args(settings)) == 0
    row = _bronze(settings).row(0, named=True)
    assert [row[c] for c in CONTRACT_COLUMNS] == [f"v{i}" for i in range(len(CONTRACT_COLUMNS))]


def test_truncated_csv_keeps_complete_rows_and_quarantines_the_tail(settings: Settings) -> None:
    from jobs import bronze_to_silver as b2s_job
    from rayapp.catalog import LEDGER_FILES, QUARANTINE, SILVER

    landing = Path(settings.landing)
    landing.mkdir(parents=True)
    lines = [",".join(CONTRACT_COLUMNS)]
    lines += [f"T{i:03d},A{i % 7},M{i % 5},Shop {i % 5},grocery,{i + 1}.50,USD,US,pos,D{i % 3},10.0.0.{i % 200},settled,card,false,"
              f"2025-01-0{1 + i % 9}T10:00:00Z,2025-01-0{1 + i % 9}T11:00:00Z" for i in range(100)]  # fmt: skip
    text = "\n".join(lines)
    cut = text.rindex("T099") + 40  # the last row stops mid-way, as a copy interrupted mid-file leaves it
    (landing / "cut.csv").write_text(text[:cut])
    assert ingest_job.entrypoint(_args(settings)) == 0
    lake = Lake(settings)
    files = lake.read(LEDGER_FILES).to_pylist()
    assert [(f["status"], f["rows"]) for f in files] == [("ingested", 100)]
    assert "truncated last row" in files[0]["reason"] and "kept 99 complete row(s)" in files[0]["reason"]
    assert "T099" not in files[0]["reason"]  # the ledger names the line, never the row's content
    assert b2s_job.entrypoint(_args(settings)) == 0
    silver = lake.read(SILVER, columns=["transaction_id"])["transaction_id"].to_pylist()
    assert sorted(silver) == [f"T{i:03d}" for i in range(99)]
    q = lake.read(QUARANTINE, columns=["transaction_id", "_reasons"]).to_pylist()
    # the cut row ends after `country`: what follows is missing, and the row is marked malformed
    assert q == [{"transaction_id": "T099", "_reasons": ["invalid_channel", "invalid_status", "invalid_event_time", "invalid_updated_at",
                                                          "malformed_row"]}]  # fmt: skip
