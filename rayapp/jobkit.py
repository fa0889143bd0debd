"""What every job shares: a :class:`Job` spec (arguments, body), settings built once, logging,
Ray, the ledger record and exit codes.

A job module stays thin::

    def _body(ctx: JobContext, args: Namespace) -> JobResult:
        res = ingest(ctx.lake, ctx.ledger, ctx.run_id, args.landing)
        return JobResult.of(res, summary=...)

    SPEC = Job("ingest", "Append new landing files to bronze", _body, arguments=_arguments)
    JOB = (SPEC.entrypoint, SPEC.description)

``SPEC.entrypoint(argv)`` (``python -m jobs.ingest`` / ``ray job submit``) parses the settings
options and builds Settings once; the CLI, ``pipeline`` and ``demo`` build Settings themselves and
call ``SPEC.execute(settings, args)``: no argv round trip.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NoReturn

from rayapp import logs
from rayapp.errors import ConfigError, RayappError
from rayapp.lake import Lake
from rayapp.ledger import Ledger, RunRecord, StageResult, new_run_id, utcnow
from rayapp.settings import Settings, load_settings
from rayapp.urls import redact_url

logger = logging.getLogger(__name__)

#: Argument names every job parser has (settings options and bookkeeping), not the job's own.
SETTINGS_OPTIONS = ("config", "overrides", "data_dir", "lake_uri")


@dataclass(kw_only=True)
class JobResult(StageResult):
    """What a job body returns: a stage's result plus the line(s) printed for the user."""

    summary: str = ""

    @classmethod
    def of(cls, res: StageResult, summary: str = "") -> "JobResult":
        return cls(counts=res.counts, versions_read=res.versions_read, versions_written=res.versions_written,
                   details=res.details, status=res.status, summary=summary)  # fmt: skip


@dataclass
class JobContext:
    job: str
    run_id: str
    settings: Settings
    lake: Lake
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


def settings_from_args(args: argparse.Namespace, extra: Mapping[str, Any] | None = None) -> Settings:
    """Settings from the settings options of ``args`` (``--config``, ``--set``, ``--data-dir``,
    ``--lake-uri``) plus ``extra`` overrides."""
    overrides: dict[str, Any] = parse_overrides(getattr(args, "overrides", None) or [])
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    if getattr(args, "lake_uri", None):
        overrides["lake_uri"] = args.lake_uri
    overrides.update({k: v for k, v in (extra or {}).items() if v is not None})
    return load_settings(getattr(args, "config", None), overrides)


def merge_settings_options(outer: argparse.Namespace, inner: argparse.Namespace) -> argparse.Namespace:
    """The settings options given before a subcommand (``outer``) and after it (``inner``, which wins)."""
    return argparse.Namespace(
        config=getattr(inner, "config", None) or getattr(outer, "config", None),
        overrides=[*(getattr(outer, "overrides", None) or []), *(getattr(inner, "overrides", None) or [])],
        data_dir=getattr(inner, "data_dir", None) or getattr(outer, "data_dir", None),
        lake_uri=getattr(inner, "lake_uri", None) or getattr(outer, "lake_uri", None),
    )


def fail(message: str, code: int = 1) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


@dataclass(frozen=True)
class Job:
    """A job: its name, description, arguments and body (see the module docstring)."""

    name: str
    description: str
    body: Callable[[JobContext, argparse.Namespace], JobResult]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    needs_ray: bool = True

    def parser(self) -> JobArgumentParser:
        p = job_parser(self.name, self.description)
        if self.arguments is not None:
            self.arguments(p)
        return p

    def options(self, **values: Any) -> argparse.Namespace:
        """The job's arguments with their defaults, ``values`` set on top (unknown names are refused)."""
        ns = self.parser().parse_args([])
        unknown = sorted(set(values) - set(vars(ns)))
        if unknown:
            raise ConfigError(f"{self.name}: unknown option {unknown[0]!r}")
        for k, v in values.items():
            setattr(ns, k, v)
        return ns

    def entrypoint(self, argv: list[str]) -> int:
        """``python -m jobs.<name>`` / ``ray job submit``: parse, build Settings once, execute."""
        try:
            args = self.parser().parse_args(argv)
        except SystemExit as exc:
            return int(exc.code or 0)
        try:
            settings = settings_from_args(args)
        except ConfigError as exc:
            return fail(str(exc), 2)
        return self.execute(settings, args, debug=args.debug)

    def execute(self, settings: Settings, args: argparse.Namespace, *, parent_run_id: str | None = None, debug: bool = False) -> int:
        """Run the body under a ledger record; failures become exit codes.

        Returns:
            0 on success (or a partial run), 1 when the job failed, 2 for bad arguments or settings.
        """
        parent_run_id = parent_run_id or getattr(args, "parent_run_id", None)
        logs.configure(settings.log_format.value, "DEBUG" if debug else settings.log_level)
        run_id = new_run_id(self.name)
        logs.bind(run_id=run_id, stage=self.name)
        lake = Lake(settings)
        ledger = Ledger(lake)
        record = RunRecord(run_id=run_id, job=self.name, started_at=utcnow(), parent_run_id=parent_run_id,
                           args={**_safe_args(args), "settings": settings.redacted()})  # fmt: skip
        try:
            lake.check_reachable()
        except RayappError as exc:
            return fail(str(exc))
        try:
            ledger.record_run(record)
            if self.needs_ray:
                from rayapp.runtime import ensure_ray

                ensure_ray(settings)
            result = self.body(JobContext(self.name, run_id, settings, lake, ledger, parent_run_id), args)
        except KeyboardInterrupt:
            _finish(ledger, record, "failed", error="interrupted")
            return fail(f"{self.name} interrupted", 130)
        except RayappError as exc:
            _finish(ledger, record, "failed", error=str(exc))
            return fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - last line of defence: one line unless --debug
            message = _one_line(exc)
            logger.debug("%s failed", self.name, exc_info=True)
            _finish(ledger, record, "failed", error=message)
            if debug:
                traceback.print_exc()
            return fail(f"{self.name} failed: {message} (run {run_id}; add --debug for the traceback)")
        record.counts = result.counts
        record.versions_read = result.versions_read
        record.versions_written = result.versions_written
        record.details = result.details
        _finish(ledger, record, result.status)
        from rayapp.metrics import record_run

        record_run(self.name, result.status, record.duration_s or 0.0, result.counts)
        if result.summary:
            print(result.summary)
        print(f"{self.name}: {result.status} (run {run_id})")
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
        if k in ("config", "data_dir", "lake_uri", "debug"):
            continue  # the settings they made are recorded whole
        if k == "overrides":
            v = [item.split("=", 1)[0] + "=***" if _secretish(item) else item for item in v]
        elif isinstance(v, str) and "://" in v:
            v = redact_url(v)
        out[k] = v
    return out


def _secretish(item: str) -> bool:
    key = item.split("=", 1)[0].lower()
    return any(s in key for s in ("secret", "password", "key", "token", "url"))
