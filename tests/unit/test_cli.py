"""CLI and job registry without Ray: discovery, errors as one line, redaction of run arguments."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from pathlib import Path

import jobs
from rayapp.cli import build_parser, discover_jobs, main
from rayapp.jobkit import job_parser
from rayapp.jobrun import safe_args as _safe_args


def test_every_job_module_is_discovered_with_a_description() -> None:
    names = {m.name for m in pkgutil.iter_modules(jobs.__path__) if not m.name.startswith("_")}
    found = discover_jobs()
    assert set(found) == names
    assert {"generate", "ingest", "benchmark"} <= names
    for name, (entry, desc) in found.items():
        assert callable(entry) and desc, name
        assert importlib.import_module(f"jobs.{name}").JOB[0] is entry


def test_jobs_lists_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs"]) == 0
    out = capsys.readouterr().out
    assert "ingest" in out and "bronze" in out


def test_unknown_job_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown job 'nosuch'" in err[0] and "ingest" in err[0]


def test_bad_job_argument_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "generate", "--rows", "many"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rows" in err[0]


def test_bad_setting_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYAPP_LAKE_URI", "gopher://x")
    assert main(["run", "ingest"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "RAYAPP_LAKE_URI" in err[0]


def test_ray_address_where_nothing_listens_is_one_line_at_once(tmp_path: Path) -> None:
    """ray.init would retry a dead GCS address for many minutes; the job says so in one line instead
    (its own process: this one may already hold a Ray instance)."""
    import os
    import socket
    import subprocess
    import sys

    from rayapp.runtime import unreachable

    with socket.socket() as s:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}", "RAYAPP_DATA_DIR": str(tmp_path / "data")}
        done = subprocess.run([sys.executable, "-m", "rayapp.cli", "run", "ingest"], env=env, capture_output=True, text=True, timeout=120)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1, done.stderr
    assert f"cannot connect to Ray at 127.0.0.1:{port}: nothing answers" in err[0] and "RAY_ADDRESS" in err[0]
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert unreachable(f"127.0.0.1:{listening.getsockname()[1]}") is None
        assert unreachable(f"ray://127.0.0.1:{listening.getsockname()[1]}") is None
    assert unreachable("auto") is None and "not host:port" in (unreachable("127.0.0.1:http") or "")


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_run_args_are_redacted() -> None:
    p = job_parser("x", "x")
    args = p.parse_args(["--set", "s3_secret_access_key=abc", "--set", "source_system=crm",
                         "--set", "postgres_url=postgresql://u:pw@h/db"])  # fmt: skip
    safe = _safe_args(args)
    assert safe["overrides"] == ["s3_secret_access_key=***", "source_system=crm", "postgres_url=***"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == "rayapp 0.1.0"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "bronze_to_silver", "--expect", "bogus=drop"], "unknown expectation 'bogus'"),
        (["run", "bronze_to_silver", "--expect", "invalid_amount=explode"], "invalid_amount"),
        (["run", "pipeline", "--only", "nope"], "unknown stage 'nope'"),
        (["run", "train_fraud_model", "--eval-fraction", "0.9"], "--eval-fraction"),
        (["run", "generate", "--rows", "0"], "rows"),
    ],
)
def test_bad_arguments_exit_2_before_anything_starts(argv: list[str], message: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["--data-dir", str(tmp_path / "data"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "data").exists()  # no lake touched, no run recorded, no Ray started


def test_dry_run_starts_nothing_and_records_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "pipeline", "--dry-run", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "pipeline plan:" in out and "7. publish" in out and "1. ingest_api           skip (no API sources configured)" in out
    assert not (tmp_path / "data").exists()


def test_settings_options_work_after_the_subcommand_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--data-dir", str(tmp_path / "after")]) == 0
    assert f"no runs recorded yet in {tmp_path / 'after'}" in capsys.readouterr().out
    assert main(["--data-dir", str(tmp_path / "before"), "runs", "--data-dir", str(tmp_path / "after")]) == 0
    assert str(tmp_path / "after") in capsys.readouterr().out  # the later one wins
