"""CLI and job registry without Ray: discovery, errors as one line, redaction of run arguments."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import jobs
from rayapp.cli import discover_jobs, main
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


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_run_args_are_redacted() -> None:
    p = job_parser("x", "x")
    args = p.parse_args(["--set", "s3_secret_access_key=abc", "--set", "source_system=crm",
                         "--set", "postgres_url=postgresql://u:pw@h/db"])  # fmt: skip
    safe = _safe_args(args)
    assert safe["overrides"] == ["s3_secret_access_key=***", "source_system=crm", "postgres_url=***"]
