"""Run safety: one run of a stage at a time per lake (leases), conditional S3 commits, a killed
lease owner, and concurrent runs of every stage ending with exactly the tables of one run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from jobs import bronze_to_silver as b2s_job
from jobs import generate as generate_job
from jobs import ingest as ingest_job
from jobs import train_fraud_model as train_job
from rayapp.catalog import BRONZE, GOLD_ACCOUNT, GOLD_MERCHANT, PREDICTIONS, QUARANTINE, SILVER
from rayapp.lake import Lake
from rayapp.lease import LeaseBusy, acquire, current, epoch_uri
from rayapp.ledger import Ledger
from rayapp.settings import Settings, load_settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]
REPO = Path(__file__).resolve().parents[2]


def _s3_settings(s3_server: dict[str, str], bucket: str, data: Path, **extra: Any) -> Settings:
    return load_settings(overrides={**s3_server, "data_dir": str(data), "lake_uri": f"s3://{bucket}/lake", **extra})


@pytest.fixture(params=["local", "s3"])
def any_lake(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "local":
        return load_settings(overrides={"data_dir": str(tmp_path / "data")})
    s3 = request.getfixturevalue("s3_server")
    return _s3_settings(s3, request.getfixturevalue("s3_bucket"), tmp_path / "data")


# ---- the lease itself ---------------------------------------------------------------------------


def test_lease_is_exclusive_expires_and_can_be_forced(any_lake: Settings) -> None:
    lake = Lake(any_lake)
    first = acquire(lake, "ingest", "run-a", ttl_s=2.0, heartbeat=False)
    with pytest.raises(LeaseBusy, match="already running as run run-a"):
        acquire(lake, "ingest", "run-b", ttl_s=2.0)
    other_stage = acquire(lake, "bronze_to_silver", "run-c", ttl_s=2.0, heartbeat=False)  # stages are independent
    other_stage.release()
    time.sleep(2.2)  # run-a never heart-beat: its lease expired
    second = acquire(lake, "ingest", "run-b", ttl_s=30.0, heartbeat=False)
    assert second.replaced is not None and second.replaced.run_id == "run-a" and second.state.epoch == first.state.epoch + 1
    forced = acquire(lake, "ingest", "run-c", ttl_s=30.0, force=True, heartbeat=False)
    assert forced.state.forced and forced.replaced is not None and forced.replaced.run_id == "run-b"
    forced.release()
    assert current(lake, "ingest").released  # type: ignore[union-attr]
    acquire(lake, "ingest", "run-d", ttl_s=30.0, heartbeat=False).release()  # a released lease is free at once


def test_racing_runs_get_exactly_one_lease(any_lake: Settings) -> None:
    lake = Lake(any_lake)
    winners: list[str] = []
    busy: list[str] = []
    start = threading.Barrier(6)

    def race(i: int) -> None:
        start.wait()
        try:
            acquire(lake, "silver_to_gold", f"run-{i}", ttl_s=60.0, heartbeat=False)
            winners.append(f"run-{i}")
        except LeaseBusy:
            busy.append(f"run-{i}")

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(busy) == 5
    assert current(lake, "silver_to_gold").run_id == winners[0]  # type: ignore[union-attr]


def test_heartbeat_keeps_a_lease_and_notices_it_was_taken(tmp_path: Path) -> None:
    lake = Lake(load_settings(overrides={"data_dir": str(tmp_path)}))
    lease = acquire(lake, "publish", "run-a", ttl_s=2.0)
    time.sleep(5.0)  # 2.5 TTLs: only the heartbeat (every TTL/4) keeps it alive
    with pytest.raises(LeaseBusy):
        acquire(lake, "publish", "run-b", ttl_s=2.0)
    acquire(lake, "publish", "run-c", ttl_s=30.0, force=True, heartbeat=False)
    deadline = time.time() + 5
    while lease.lost_to is None and time.time() < deadline:
        time.sleep(0.1)
    assert lease.lost_to == "run-c"
    lease.release()  # a lost lease is not released over its new owner
    assert current(lake, "publish").run_id == "run-c" and not current(lake, "publish").released  # type: ignore[union-attr]


def test_s3_commits_are_conditional_and_a_store_without_them_is_refused(s3_server: dict[str, str], s3_bucket: str, tmp_path: Path) -> None:
    settings = _s3_settings(s3_server, s3_bucket, tmp_path)
    lake = Lake(settings)
    assert lake.storage_options.get("conditional_put") == "etag" and "AWS_S3_ALLOW_UNSAFE_RENAME" not in lake.storage_options
    lake.check_conditional_writes()  # moto refuses the second If-None-Match write, like AWS
    # Concurrent appends through conditional commits: none is lost.
    import pyarrow as pa

    from rayapp.catalog import LEDGER_FILES

    def append(i: int) -> None:
        row = {"path": f"f{i}", "checksum": "x", "size": 1, "status": "ingested", "rows": 1, "reason": None, "run_id": "r",
               "bronze_version": 0, "recorded_at": pd_now}  # fmt: skip
        lake.append(LEDGER_FILES, pa.Table.from_pylist([row], schema=LEDGER_FILES.schema))

    from rayapp.ledger import utcnow

    pd_now = utcnow()
    append(0)
    threads = [threading.Thread(target=append, args=(i,)) for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(lake.read(LEDGER_FILES)["path"].to_pylist()) == [f"f{i}" for i in range(7)]

    class NoConditionalWrites(Lake):
        def create_exclusive(self, uri: str, data: bytes) -> bool:  # what a store that ignores If-None-Match does
            self.write_bytes(uri, data)
            return True

    with pytest.raises(Exception, match="no conditional writes.*RAYAPP_S3_ALLOW_UNSAFE_RENAME"):
        NoConditionalWrites(settings).check_conditional_writes()
    opted_in = _s3_settings(s3_server, s3_bucket, tmp_path, s3_allow_unsafe_rename=True)
    NoConditionalWrites(opted_in).check_conditional_writes()  # the user accepted the risk
    assert Lake(opted_in).storage_options["AWS_S3_ALLOW_UNSAFE_RENAME"] == "true"


# ---- whole jobs -----------------------------------------------------------------------------------


def _job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    import ray

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYAPP_")}
    env.update(RAY_ADDRESS=ray.get_runtime_context().gcs_address, RAYAPP_LOG_FORMAT="text", PYTHONPATH=str(REPO))
    env.update(extra or {})
    return env


def _args(s: Settings) -> list[str]:
    out = ["--data-dir", str(s.data_dir), "--lake-uri", s.lake_root]
    for k in ("s3_endpoint_url", "s3_access_key_id", "s3_region"):
        if getattr(s, k):
            out += ["--set", f"{k}={getattr(s, k)}"]
    if s.s3_secret_access_key is not None:
        out += ["--set", f"s3_secret_access_key={s.s3_secret_access_key.get_secret_value()}"]
    return out


def _start(stage: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", f"jobs.{stage}", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _twice_at_once(stage: str, args: list[str]) -> list[int]:
    env = _job_env()
    procs = [_start(stage, args, env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    for (_, err), code in zip(outs, codes):
        assert code in (0, 75), err[-2000:]
        if code == 75:
            assert f"{stage} is already running as run" in err
    assert 0 in codes
    return codes


_VOLATILE = {"_batch_id", "_ingested_at", "_run_id", "_first_seen_at", "_updated_at", "_quarantined_at", "scored_at", "model_version",
             "_source_file"}  # fmt: skip


def _snapshot(lake: Lake) -> dict[str, list[str]]:
    """Every table's rows, run-specific columns left out, sorted: comparable across lakes."""
    out = {}
    for t in (BRONZE, SILVER, QUARANTINE, PREDICTIONS, GOLD_ACCOUNT, GOLD_MERCHANT):
        if not lake.exists(t):
            continue
        df = pl.from_arrow(lake.read(t))
        assert isinstance(df, pl.DataFrame)
        if "_source_file" in df.columns:  # the same files under two lake roots
            df = df.with_columns(pl.col("_source_file").str.split("/").list.last().alias("_file"))
        df = df.drop([c for c in df.columns if c in _VOLATILE])
        out[t.name] = sorted(map(repr, df.select(sorted(df.columns)).rows()))
    return out


def test_concurrent_runs_of_every_stage_end_with_the_tables_of_one_run(any_lake: Settings, tmp_path: Path) -> None:
    """Two runs of each stage started together (separate processes, one Ray cluster) leave the lake
    exactly as one run does; the loser exits 75 without recording a run."""
    twice = any_lake
    once = any_lake.model_copy(update={"data_dir": tmp_path / "once", "lake_uri": any_lake.lake_root.rstrip("/") + "-once",
                                       "landing_uri": any_lake.lake_root.rstrip("/") + "-once/landing"})  # fmt: skip
    for s in (twice, once):
        assert generate_job.entrypoint(_args(s) + ["--rows", "3000", "--files", "3", "--seed", "17"]) == 0
    from jobs import publish as publish_job
    from jobs import score_transactions as score_job
    from jobs import silver_to_gold as gold_job

    steps: list[tuple[str, Any, list[str]]] = [
        ("ingest", ingest_job, []), ("bronze_to_silver", b2s_job, []), ("silver_to_gold", gold_job, []),
        ("score_transactions", score_job, ["--mode", "inline"]), ("publish", publish_job, ["--store", "clickhouse"]),
    ]  # fmt: skip
    busy = 0
    for stage, job, extra in steps:
        if stage == "score_transactions":  # one model for both lakes: the same scores
            assert train_job.entrypoint(_args(once)) == 0
            shutil.copytree(Path(once.data_dir) / "models", Path(twice.data_dir) / "models")
        assert job.entrypoint(_args(once) + extra) == 0
        busy += _twice_at_once(stage, _args(twice) + extra).count(75)
        assert _snapshot(Lake(twice)) == _snapshot(Lake(once)), stage
    assert busy >= 1, "no two runs overlapped: the test did not exercise the lease"
    ledger = Ledger(Lake(twice))
    assert all(r.status == "succeeded" for r in ledger.runs())
    assert len([r for r in ledger.runs() if r.job != "generate"]) == 2 * len(steps) - busy  # a refused run records nothing
    files = Lake(twice).read(BRONZE, columns=["_source_file"])["_source_file"]
    assert len(set(files.to_pylist())) == 3  # every landing file ingested once
    published = Ledger(Lake(once)).last_run("publish")
    assert published is not None and ledger.last_run("publish").counts == published.counts  # type: ignore[union-attr]
    assert published.counts["clickhouse.written"] > 0


def test_killed_lease_owner_blocks_until_expiry_then_is_abandoned_and_cleaned(tmp_path: Path) -> None:
    settings = load_settings(overrides={"data_dir": str(tmp_path / "data"), "lease_ttl_s": 4})
    args = _args(settings)
    assert generate_job.entrypoint(args + ["--rows", "20000", "--files", "4", "--seed", "5"]) == 0
    assert ingest_job.entrypoint(args) == 0
    lake = Lake(settings)
    env = _job_env({"RAYAPP_LEASE_TTL_S": "4"})
    proc = _start("bronze_to_silver", args, env)
    held, deadline = None, time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill on an observed event: it holds the lease and has staged files
        held = current(lake, "bronze_to_silver")
        if held is not None and not held.released and lake.list_names(lake.path("_staging", held.run_id)):
            break
        time.sleep(0.05)
    assert proc.poll() is None and held is not None, "bronze_to_silver ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    held = current(lake, "bronze_to_silver")  # its last heartbeat
    assert held is not None and not held.released
    assert b2s_job.entrypoint(args) == 75  # its lease has not expired yet
    time.sleep(max(0.0, held.heartbeat_at + 4.5 - time.time()))
    assert b2s_job.entrypoint(args) == 0
    ledger = Ledger(lake)
    dead = ledger.get_run(held.run_id)
    assert dead is not None and dead.status == "abandoned" and "lease expired" in (dead.error or "")
    assert lake.list_names(lake.path("_staging")) == []  # the dead run's staging is gone
    assert lake.read(SILVER).num_rows > 0
    assert lake.read_bytes(epoch_uri(lake, "bronze_to_silver", held.epoch + 1)) is not None
