"""ingest -> bronze_to_silver -> silver_to_gold against an independent reference implementation."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from jobs import bronze_to_silver as b2s_job
from jobs import generate as generate_job
from jobs import ingest as ingest_job
from jobs import silver_to_gold as gold_job
from rayapp.lake import Lake
from rayapp.ledger import Ledger
from rayapp.catalog import BRONZE, GOLD_ACCOUNT, GOLD_MERCHANT, QUARANTINE, SILVER
from rayapp.settings import Settings
from rayapp.catalog import BUSINESS_COLUMNS
from tests.integration import reference

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]


def _args(s: Settings, *extra: str) -> list[str]:
    return ["--data-dir", str(s.data_dir), *extra]


def _table(s: Settings, name: str) -> list[dict[str, Any]]:
    return Lake(s).open(name).to_pyarrow_table().to_pylist()


def _version(s: Settings, name: str) -> int:
    return Lake(s).open(name).version()


def _check_silver(s: Settings, expected: dict[str, dict[str, Any]]) -> None:
    got = {r["transaction_id"]: r for r in _table(s, SILVER)}
    assert len(got) == len(_table(s, SILVER))  # one row per key
    assert set(got) == set(expected)
    for k, exp in expected.items():
        assert {c: got[k][c] for c in BUSINESS_COLUMNS} == {c: exp[c] for c in BUSINESS_COLUMNS}, k


def _check_gold(s: Settings, expected_rows: dict[str, dict[str, Any]]) -> None:
    acc, mer = reference.gold(expected_rows)
    got_acc = {(r["account_id"], r["activity_date"].isoformat()): r for r in _table(s, GOLD_ACCOUNT)}
    got_mer = {(r["merchant_id"], r["activity_date"].isoformat()): r for r in _table(s, GOLD_MERCHANT)}
    assert set(got_acc) == set(acc) and set(got_mer) == set(mer)
    for k, v in acc.items():
        assert {c: got_acc[k][c] for c in v} == v, k
    for k, v in mer.items():
        g = {c: got_mer[k][c] for c in v}
        assert g.pop("fraud_rate") == pytest.approx(v.pop("fraud_rate")) and g == v, k


def test_generated_data_end_to_end_matches_reference(settings: Settings) -> None:
    assert generate_job.entrypoint(_args(settings, "--rows", "9000", "--files", "4", "--seed", "21")) == 0
    assert ingest_job.entrypoint(_args(settings)) == 0
    assert b2s_job.entrypoint(_args(settings, "--partitions", "3")) == 0
    assert gold_job.entrypoint(_args(settings)) == 0

    files = sorted(Path(settings.landing).iterdir())
    expected, quarantine = reference.silver([files])
    _check_silver(settings, expected)
    got_q = {(r["_source_file"], r["_source_row"], tuple(r["_reasons"])) for r in _table(settings, QUARANTINE)}
    assert got_q == quarantine
    _check_gold(settings, expected)

    run = Ledger(Lake(settings)).last_run("bronze_to_silver")
    assert run is not None
    assert run.counts["rows_in"] == 9000 and run.counts["inserted"] == len(expected)
    assert run.counts["quarantined"] == len(quarantine)
    assert sum(v for k, v in run.counts.items() if k.startswith("rule_") and k != "rule_invalid_country") >= len(quarantine)

    # Nothing new: same silver and gold versions.
    versions = {t: _version(settings, t) for t in (SILVER, GOLD_ACCOUNT, GOLD_MERCHANT, QUARANTINE)}
    assert b2s_job.entrypoint(_args(settings)) == 0
    assert gold_job.entrypoint(_args(settings)) == 0
    assert {t: _version(settings, t) for t in versions} == versions

    # A full refresh rebuilds the same silver and gold.
    assert b2s_job.entrypoint(_args(settings, "--full-refresh")) == 0
    _check_silver(settings, expected)
    assert _version(settings, SILVER) == versions[SILVER]  # nothing differed, so nothing was rewritten
    assert gold_job.entrypoint(_args(settings, "--full-refresh")) == 0
    _check_gold(settings, expected)


HEADER = "transaction_id,account_id,merchant_id,amount,currency,channel,status,is_fraud,event_time,updated_at\n"


def _csv(path: Path, *rows: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def test_late_and_out_of_order_versions_across_runs(settings: Settings) -> None:
    landing = Path(settings.landing)
    run1 = [
        _csv(landing / "a_20250101.csv",
             "T1,A1,M1,10.00,USD,pos,pending,,2025-01-01T10:00:00Z,2025-01-01T10:00:00Z",
             "T2,A2,M1,20.00,USD,pos,settled,0,2025-01-01T11:00:00Z,2025-01-02T00:00:00Z",
             "T3,A1,M2,30.00,EUR,online,pending,,2025-01-02T12:00:00Z,2025-01-02T12:00:00Z",
             "T3,A1,M2,30.00,EUR,online,settled,0,2025-01-02T12:00:00Z,2025-01-03T12:00:00Z"),
    ]  # fmt: skip
    assert ingest_job.entrypoint(_args(settings)) == 0
    assert b2s_job.entrypoint(_args(settings)) == 0
    assert gold_job.entrypoint(_args(settings)) == 0
    first_seen = {r["transaction_id"]: (r["_first_seen_at"], r["_updated_at"]) for r in _table(settings, SILVER)}

    run2 = [
        _csv(landing / "b_20250105.csv",
             "T1,A1,M1,10.00,USD,pos,chargeback,1,2025-01-01T10:00:00Z,2025-01-20T00:00:00Z",   # newer: update
             "T2,A2,M1,20.00,USD,pos,pending,,2025-01-01T11:00:00Z,2025-01-01T11:00:00Z",      # older: ignored
             "T3,A1,M2,30.00,EUR,online,settled,0,2025-01-02T12:00:00Z,2025-01-03T12:00:00Z",   # exact re-send
             "T4,A3,M2,5.00,GBP,mobile,pending,0,2025-01-03T09:00:00Z,2025-01-03T09:00:00Z",    # new key
             "T5,A3,M2,-5.00,GBP,mobile,pending,0,2025-01-03T09:00:00Z,2025-01-03T09:00:00Z"),  # quarantined
    ]  # fmt: skip
    assert ingest_job.entrypoint(_args(settings)) == 0
    assert b2s_job.entrypoint(_args(settings)) == 0
    run = Ledger(Lake(settings)).last_run("bronze_to_silver")
    assert run is not None
    assert (run.counts["inserted"], run.counts["updated"], run.counts["unchanged"], run.counts["quarantined"]) == (1, 1, 2, 1)

    expected, _ = reference.silver([run1, run2])
    _check_silver(settings, expected)
    silver = {r["transaction_id"]: r for r in _table(settings, SILVER)}
    assert silver["T1"]["status"] == "chargeback" and silver["T1"]["is_fraud"] is True
    assert silver["T2"]["status"] == "settled"  # the late, older version did not overwrite
    assert (silver["T3"]["_first_seen_at"], silver["T3"]["_updated_at"]) == first_seen["T3"]  # unchanged: not rewritten
    assert silver["T1"]["_first_seen_at"] == first_seen["T1"][0] and silver["T1"]["_updated_at"] > first_seen["T1"][1]

    # Gold is rebuilt only for touched dates and equals the reference.
    assert gold_job.entrypoint(_args(settings)) == 0
    gold_run = Ledger(Lake(settings)).last_run("silver_to_gold")
    assert gold_run is not None and gold_run.counts["dates"] == 2  # Jan 1 (T1 changed) and Jan 3 (T4 new)
    _check_gold(settings, expected)

    # Reprocessing everything from scratch in another lake gives the same silver.
    other = settings.model_copy(update={"data_dir": settings.data_dir.parent / "other", "lake_uri": str(settings.data_dir.parent / "other" / "lake"),
                                        "landing_uri": str(settings.data_dir.parent / "other" / "lake" / "landing")})  # fmt: skip
    shutil.copytree(landing, Path(other.landing))
    assert ingest_job.entrypoint(_args(other)) == 0
    assert b2s_job.entrypoint(_args(other, "--full-refresh")) == 0
    _check_silver(other, reference.silver([run1 + run2])[0])


def test_fail_action_commits_nothing(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    _csv(Path(settings.landing) / "a.csv",
         "T1,A1,M1,10.00,USD,pos,pending,,2025-01-01T10:00:00Z,2025-01-01T10:00:00Z",
         "T2,A1,M1,abc,USD,pos,pending,,2025-01-01T10:00:00Z,2025-01-01T10:00:00Z")  # fmt: skip
    assert ingest_job.entrypoint(_args(settings)) == 0
    assert b2s_job.entrypoint(_args(settings, "--expect", "invalid_amount=fail")) == 1
    assert "expectation invalid_amount failed for 1 of 2 rows" in capsys.readouterr().err
    assert not Lake(settings).exists(SILVER) or _table(settings, SILVER) == []
    assert not Lake(settings).exists(QUARANTINE) or _table(settings, QUARANTINE) == []
    assert b2s_job.entrypoint(_args(settings, "--expect", "invalid_amount=fail:60")) == 0  # 50% tolerated
    assert [r["transaction_id"] for r in _table(settings, SILVER)] == ["T1"]


def test_as_of_version_backfill(settings: Settings) -> None:
    landing = Path(settings.landing)
    _csv(landing / "a.csv", "T1,A1,M1,10.00,USD,pos,pending,,2025-01-01T10:00:00Z,2025-01-01T10:00:00Z")
    assert ingest_job.entrypoint(_args(settings)) == 0
    v1 = Lake(settings).open(BRONZE).version()
    _csv(landing / "b.csv", "T2,A1,M1,10.00,USD,pos,pending,,2025-01-01T10:00:00Z,2025-01-01T10:00:00Z")
    assert ingest_job.entrypoint(_args(settings)) == 0
    assert b2s_job.entrypoint(_args(settings, "--as-of-version", str(v1))) == 0
    assert [r["transaction_id"] for r in _table(settings, SILVER)] == ["T1"]
    assert b2s_job.entrypoint(_args(settings)) == 0
    assert sorted(r["transaction_id"] for r in _table(settings, SILVER)) == ["T1", "T2"]
    assert b2s_job.entrypoint(_args(settings, "--as-of-version", "99")) == 1
