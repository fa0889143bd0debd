"""What every job shares: argument parsing, settings, logging, Ray, the ledger record, exit codes.

A job module stays thin::

    def entrypoint(argv):
        parser = job_parser("ingest", "Append new landing files to bronze")
        parser.add_argument("--landing")
        return run_job("ingest", argv, parser, _body, overrides=lambda a: {"landing_uri": a.landing})
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NoReturn

from rayapp import logs
from rayapp.errors import ConfigError, RayappError
from rayapp.ledger import Ledger, RunRecord, new_run_id, utcnow
from rayapp.settings import Settings, load_settings, redact_url

logger = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What a job body returns: recorded in the ledger and summarised on stdout."""

    counts: dict[str, int] = field(default_factory=dict)
    versions_read: dict[str, int] = field(default_factory=dict)
    versions_written: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "succeeded"
    summary: str = ""


@dataclass
class JobContext:
    job: str
    run_id: str
    settings: Settings
    ledger: Ledger
    parent_run_id: str | None = None


class JobArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {self.prog}: {message} (see --help)\n")
        raise SystemExit(2)


def job_parser(job: str, description: str) -> JobArgumentParser:
    """A parser with the options every job accepts."""
    p = JobArgumentParser(prog=f"rayapp run {job}", description=description)
    g = p.add_argument_group("settings")
    g.add_argument("--config", metavar="PATH", help="TOML settings file (default: $RAYAPP_CONFIG)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    g.add_argument("--data-dir", help="override RAYAPP_DATA_DIR")
    g.add_argument("--lake-uri", help="override RAYAPP_LAKE_URI")
    g.add_argument("--parent-run-id", help=argparse.SUPPRESS)
    g.add_argument("--debug", action="store_true", help="print tracebacks")
    return p


def parse_overrides(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().lower().removeprefix("rayapp_")] = v
    return out


def settings_argv(args: argparse.Namespace) -> list[str]:
    """The settings options of ``args`` as arguments to hand on to another job."""
    out: list[str] = []
    if getattr(args, "config", None):
        out += ["--config", args.config]
    for item in args.overrides:
        out += ["--set", item]
    if getattr(args, "data_dir", None):
        out += ["--data-dir", args.data_dir]
    if getattr(args, "lake_uri", None):
        out += ["--lake-uri", args.lake_uri]
    return out


def settings_from_args(args: argparse.Namespace, extra: Mapping[str, Any] | None = None) -> Settings:
    overrides: dict[str, Any] = parse_overrides(args.overrides)
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    if getattr(args, "lake_uri", None):
        overrides["lake_uri"] = args.lake_uri
    overrides.update({k: v for k, v in (extra or {}).items() if v is not None})
    return load_settings(getattr(args, "config", None), overrides)


def fail(message: str, code: int = 1) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def run_job(
    job: str,
    argv: list[str],
    parser: argparse.ArgumentParser,
    body: Callable[[JobContext, argparse.Namespace], JobResult],
    *,
    overrides: Callable[[argparse.Namespace], Mapping[str, Any]] | None = None,
    needs_ray: bool = True,
) -> int:
    """Parse, configure, run ``body`` under a ledger record, and turn failures into exit codes.

    Returns:
        0 on success (or a partial run), 1 when the job failed, 2 for bad arguments or settings.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        settings = settings_from_args(args, overrides(args) if overrides else None)
    except ConfigError as exc:
        return fail(str(exc), 2)
    logs.configure(settings.log_format.value, "DEBUG" if args.debug else settings.log_level)
    run_id = new_run_id(job)
    logs.bind(run_id=run_id, stage=job)
    ledger = Ledger(settings)
    record = RunRecord(run_id=run_id, job=job, started_at=utcnow(), parent_run_id=args.parent_run_id, args=_safe_args(args))
    try:
        from rayapp import lake

        lake.check_reachable(settings)
    except RayappError as exc:
        return fail(str(exc))
    try:
        ledger.record_run(record)
        if needs_ray:
            from rayapp.runtime import ensure_ray

            ensure_ray(settings)
        ctx = JobContext(job, run_id, settings, ledger, args.parent_run_id)
        result = body(ctx, args)
    except KeyboardInterrupt:
        _finish(ledger, record, "failed", error="interrupted")
        return fail(f"{job} interrupted", 130)
    except RayappError as exc:
        _finish(ledger, record, "failed", error=str(exc))
        return fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line unless --debug
        message = _one_line(exc)
        logger.debug("%s failed", job, exc_info=True)
        _finish(ledger, record, "failed", error=message)
        if args.debug:
            traceback.print_exc()
        return fail(f"{job} failed: {message} (run {run_id}; add --debug for the traceback)")
    record.counts = result.counts
    record.versions_read = result.versions_read
    record.versions_written = result.versions_written
    record.details = result.details
    _finish(ledger, record, result.status)
    from rayapp.metrics import record_run

    record_run(job, result.status, record.duration_s or 0.0, result.counts)
    if result.summary:
        print(result.summary)
    print(f"{job}: {result.status} (run {run_id})")
    return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500] if first else type(exc).__name__


def _finish(ledger: Ledger, record: RunRecord, status: str, error: str | None = None) -> None:
    record.status = status
    record.error = error
    record.ended_at = utcnow()
    try:
        ledger.record_run(record)
    except Exception as exc:  # noqa: BLE001 - an unreachable lake must not hide the real error
        logger.warning("could not write run record %s: %s", record.run_id, _one_line(exc))


def _safe_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in vars(args).items():
        if k == "overrides":
            v = [item.split("=", 1)[0] + "=***" if _secretish(item) else item for item in v]
        elif isinstance(v, str) and "://" in v:
            v = redact_url(v)
        out[k] = v
    return out


def _secretish(item: str) -> bool:
    key = item.split("=", 1)[0].lower()
    return any(s in key for s in ("secret", "password", "key", "token", "url"))
