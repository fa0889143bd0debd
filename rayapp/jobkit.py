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
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from rayapp.errors import ConfigError, RayappError
from rayapp.jobrun import EXIT_OK, EXIT_USAGE, JobContext, JobResult, fail, run_job
from rayapp.settings import Settings, load_settings

logger = logging.getLogger(__name__)


#: Argument names every job parser has (settings options and bookkeeping), not the job's own.
SETTINGS_OPTIONS = ("config", "overrides", "data_dir", "lake_uri")


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
    g.add_argument("--force", action="store_true", help="take the stage's run lease even while another run holds it (says so)")
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


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the settings options of ``args`` (``--config``, ``--set``, ``--data-dir``, ``--lake-uri``)."""
    overrides: dict[str, Any] = parse_overrides(getattr(args, "overrides", None) or [])
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    if getattr(args, "lake_uri", None):
        overrides["lake_uri"] = args.lake_uri
    return load_settings(getattr(args, "config", None), overrides)


def merge_settings_options(outer: argparse.Namespace, inner: argparse.Namespace) -> argparse.Namespace:
    """The settings options given before a subcommand (``outer``) and after it (``inner``, which wins)."""
    return argparse.Namespace(
        config=getattr(inner, "config", None) or getattr(outer, "config", None),
        overrides=[*(getattr(outer, "overrides", None) or []), *(getattr(inner, "overrides", None) or [])],
        data_dir=getattr(inner, "data_dir", None) or getattr(outer, "data_dir", None),
        lake_uri=getattr(inner, "lake_uri", None) or getattr(outer, "lake_uri", None),
    )


@dataclass(frozen=True)
class Job:
    """A job: its name, description, arguments and body (see the module docstring)."""

    name: str
    description: str
    body: Callable[[JobContext, argparse.Namespace], JobResult]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    needs_ray: bool = True
    #: Whether runs hold the stage's lease (one run of the stage at a time on a lake).
    lease: bool = True
    #: Checks the job's arguments before anything starts (raise RayappError: exit code 2).
    validate: Callable[[argparse.Namespace], None] | None = None
    #: Checks the arguments against the Settings before anything starts (raise RayappError: exit code 2).
    check: Callable[[Settings, argparse.Namespace], None] | None = None
    #: What ``--dry-run`` prints instead of running (the job then records nothing).
    plan: Callable[[Settings, argparse.Namespace], str] | None = None

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
        """Validate, take the stage's lease, run the body under a ledger record; outcomes become exit codes.

        Returns:
            An exit code: see ``EXIT_CODES``.
        """
        try:
            if self.validate is not None:
                self.validate(args)
            if self.check is not None:
                self.check(settings, args)
        except RayappError as exc:
            return fail(f"{self.name}: {exc}", EXIT_USAGE)
        if getattr(args, "dry_run", False) and self.plan is not None:
            print(self.plan(settings, args))  # a dry run starts nothing and records nothing
            return EXIT_OK
        return run_job(self, settings, args, parent_run_id=parent_run_id or getattr(args, "parent_run_id", None), debug=debug)
