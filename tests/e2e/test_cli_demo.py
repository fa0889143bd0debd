"""The README's first contact, as a new user runs it: `rayapp demo`, `rayapp runs`, in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rayapp.errors import PortInUseError
from tests.conftest import REPO, on_a_free_port

pytestmark = pytest.mark.e2e


def _rayapp(*args: str, cwd: Path, serve_port: int = 8000) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYAPP_", "RAY_ADDRESS"))}
    env["RAYAPP_RAY_NUM_CPUS"] = "2"
    env["RAYAPP_SERVE_PORT"] = str(serve_port)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "rayapp.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _demo(base: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`rayapp demo` in a fresh folder; when another process took its Serve port first, again on another port."""

    def attempt(port: int) -> tuple[Path, subprocess.CompletedProcess[str]]:
        cwd = base / f"demo-{port}"
        cwd.mkdir()
        done = _rayapp("demo", "--rows", "20000", "--files", "3", cwd=cwd, serve_port=port)
        if done.returncode != 0 and "another process holds the port" in done.stderr:
            raise PortInUseError(done.stderr[-500:])
        return cwd, done

    return on_a_free_port(attempt)


def test_demo_then_runs(tmp_path: Path) -> None:
    tmp_path, demo = _demo(tmp_path)
    assert demo.returncode == 0, demo.stderr[-3000:]
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
    one = _rayapp("runs", "--run-id", run_id, cwd=tmp_path)
    assert '"rows_written": 20000' in one.stdout
