"""The README's first contact, as a new user runs it: `rayapp demo`, `rayapp runs`, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rayapp.errors import PortInUseError
from tests.conftest import REPO, on_a_free_port

pytestmark = pytest.mark.e2e


def _env(serve_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYAPP_", "RAY_ADDRESS"))}
    env.update(RAYAPP_RAY_NUM_CPUS="2", RAYAPP_SERVE_PORT=str(serve_port), PYTHONPATH=str(REPO))
    return env


def _rayapp(*args: str, cwd: Path, serve_port: int = 8000) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rayapp.cli", *args], cwd=cwd, env=_env(serve_port), capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def _in_terminal(*args: str, cwd: Path, serve_port: int) -> subprocess.CompletedProcess[str]:
    """``rayapp ARGS`` as a user runs it at a terminal (a pseudo-terminal of 120 x 40): one
    stream, what they see in order (progress bars' carriage returns kept as line ends)."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "rayapp.cli", *args], cwd=cwd, env=_env(serve_port) | {"TERM": "xterm"},
                            stdin=follower, stdout=follower, stderr=follower, close_fds=True)  # fmt: skip
    os.close(follower)
    chunks, deadline = [], time.time() + 600
    while time.time() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(leader)
    code = proc.wait(timeout=60)
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    return subprocess.CompletedProcess(proc.args, code, text, text)


def _demo(base: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`rayapp demo` in a fresh folder; when another process took its Serve port first, again on another port."""

    def attempt(port: int) -> tuple[Path, subprocess.CompletedProcess[str]]:
        cwd = base / f"demo-{port}"
        cwd.mkdir()
        done = _in_terminal("demo", "--rows", "20000", "--files", "3", cwd=cwd, serve_port=port)
        if done.returncode != 0 and "another process holds the port" in done.stderr:
            raise PortInUseError(done.stderr[-500:])
        return cwd, done

    return on_a_free_port(attempt)


def test_demo_then_runs(tmp_path: Path) -> None:
    tmp_path, demo = _demo(tmp_path)
    assert demo.returncode == 0, demo.stdout[-3000:]
    # On a terminal the demo reads as a story: each stage announced, its progress, its result;
    # no JSON log lines, no Ray Data plan/progress log lines, no Serve access or deployment lines.
    lines = demo.stdout.splitlines()
    stages = [line.split("] ", 1)[1].split(":")[0] for line in lines if line.startswith("==> [")]
    assert stages == ["ingest_api", "ingest", "bronze_to_silver", "silver_to_gold", "train_fraud_model", "score_transactions", "publish",
                      "reconcile"]  # fmt: skip
    for noise in ('{"ts": ', "streaming_executor", "logging_progress", "Execution plan", "-- CALL ", "Deploying new version",
                  "Loading weights", "fork_posix"):  # fmt: skip
        assert not [line for line in lines if noise in line], noise
    assert not [line for line in lines if "pid=" in line and (" INFO " in line or "INFO:" in line)]  # workers' and actors' info lines
    assert any(line.startswith("publish postgres") and "rows" in line and "100%" in line for line in lines)  # the publish progress bar
    assert any(line.startswith("publish: succeeded in ") for line in lines)
    assert "generated 20000 rows in 3 file(s)" in demo.stdout
    assert "20000 rows appended to bronze" in demo.stdout
    assert "== data quality" in demo.stdout and "invalid_amount" in demo.stdout
    bronze = tmp_path / "data" / "lake" / "bronze" / "transactions"
    assert "== fraud model v" in demo.stdout and "rows scored" in demo.stdout
    for table in ("bronze/transactions", "silver/transactions", "quarantine/transactions", "gold/merchant_daily_stats",
                  "silver/predictions"):  # fmt: skip
        assert str(tmp_path / "data" / "lake" / table) in demo.stdout  # the guide says where the output is

    from deltalake import DeltaTable

    assert DeltaTable(str(bronze)).count() == 20000
    # publish filled every embedded store, and the guide says what each holds and how to look.
    assert "== serving stores" in demo.stdout
    for store, held in (("postgres", "holds: transactions"), ("clickhouse", "holds: transactions"), ("graph", "PAID"), ("vector", "holds: merchants")):
        assert any(line.startswith(store) for line in demo.stdout.splitlines()), store
        assert held in demo.stdout
    assert "unavailable" not in demo.stdout.split("== serving stores")[1]
    parity = demo.stdout.split("== parity with the lake")[1].splitlines()[1:5]  # the demo ends with a parity line per store
    assert [line.split()[:2] for line in parity] == [["postgres", "equal:"], ["clickhouse", "equal:"], ["graph", "equal:"], ["vector", "equal:"]]
    # ...and hands out a live API key with every scope (shown once; the lake keeps its hash).
    import re

    from rayapp.consumer.keys import KeyStore, Scope
    from rayapp.lake import Lake
    from rayapp.settings import load_settings

    shown = re.search(r"export RAYAPP_KEY=(rayapp_\S+)", demo.stdout)
    assert shown is not None
    record = KeyStore(Lake(load_settings(overrides={"data_dir": str(tmp_path / "data")}))).verify(shown.group(1))
    assert record is not None and set(record.scopes) == set(Scope)

    again = _rayapp("run", "ingest", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 rows appended" in again.stdout
    assert DeltaTable(str(bronze)).count() == 20000

    report = demo.stdout.split("== run report ==")[1].splitlines()[1]  # the demo ends with the report's path
    assert report == str(tmp_path / "data" / "report.html") and Path(report).stat().st_size > 1_000_000

    runs = _rayapp("runs", cwd=tmp_path)
    assert runs.returncode == 0
    lines = runs.stdout.strip().splitlines()
    assert lines[0].startswith("RUN ID")
    assert [line.split()[1] for line in lines[1:]] == [
        "ingest", "reconcile", "publish", "score_transactions", "train_fraud_model", "silver_to_gold", "bronze_to_silver", "ingest", "pipeline",
        "generate",
    ]  # fmt: skip
    assert all(" succeeded " in line for line in lines[1:])

    run_id = lines[8].split()[0]
    one = _rayapp("runs", "--run-id", run_id, "--json", cwd=tmp_path)
    doc = json.loads(one.stdout)
    assert doc["job"] == "ingest" and doc["counts"]["rows_written"] == 20000
    pipeline_id = lines[9].split()[0]
    tree = _rayapp("runs", "--run-id", pipeline_id, cwd=tmp_path).stdout.splitlines()
    assert tree[0].startswith(f"pipeline {pipeline_id}: succeeded in ")
    stage_rows = {row.split()[1]: row.split() for row in tree if row.startswith(("├─", "└─"))}
    assert list(stage_rows) == stages
    assert stage_rows["ingest"][2] == "succeeded" and stage_rows["ingest"][4:6] == ["20,000", "20,000"]
    lake = tmp_path / "data" / "lake"
    silver, quarantined = (DeltaTable(str(lake / t / "transactions")).count() for t in ("silver", "quarantine"))
    assert stage_rows["bronze_to_silver"][4:7] == ["20,000", f"{silver:,}", f"{quarantined:,}"]
    assert stage_rows["ingest_api"][2:4] == ["skipped", "(no"]
    as_json = json.loads(_rayapp("runs", "--run-id", pipeline_id, "--json", cwd=tmp_path).stdout)
    assert [c["job"] for c in as_json["stages"]] == stages[1:]  # ingest_api was skipped: no run of its own
