"""The ``rayapp`` command: list and run jobs, show the run ledger, run the demo, serve the models.

Jobs are discovered at run time from the ``jobs`` package (every module not starting with
``_`` that exposes ``JOB = (entrypoint, description)``, and ``SPEC``, its :class:`Job`); the
library never imports them. Settings are built once here, from the options given before and
after the subcommand, and handed to the job.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from types import ModuleType
from typing import Callable, NoReturn

from rayapp.errors import ConfigError, RayappError
from rayapp.jobkit import Job, merge_settings_options, settings_from_args

JobEntry = tuple[Callable[[list[str]], int], str]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {self.prog}: {message} (see --help)\n")
        raise SystemExit(2)


def _jobs_package() -> ModuleType:
    try:
        return importlib.import_module("jobs")
    except ModuleNotFoundError:
        raise RayappError("the `jobs` package is not importable: run rayapp from the repository root or install it") from None


def _job_modules() -> dict[str, ModuleType]:
    pkg = _jobs_package()
    out: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            out[info.name] = importlib.import_module(f"jobs.{info.name}")
    return out


def discover_jobs() -> dict[str, JobEntry]:
    """Every job module in ``jobs/`` by name (importing a job module does no work)."""
    found: dict[str, JobEntry] = {}
    for name, module in _job_modules().items():
        job = getattr(module, "JOB", None)
        if isinstance(job, tuple) and len(job) == 2 and callable(job[0]):
            found[name] = (job[0], str(job[1]))
    return found


def discover_specs() -> dict[str, Job]:
    """The :class:`Job` of every job module that declares one."""
    return {name: spec for name, m in _job_modules().items() if isinstance(spec := getattr(m, "SPEC", None), Job)}


def _run_spec(spec: Job, outer: argparse.Namespace, job_args: list[str]) -> int:
    """Parse the job's own arguments, build Settings once from both sets of options, execute."""
    try:
        args = spec.parser().parse_args(job_args)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        settings = settings_from_args(merge_settings_options(outer, args))
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return spec.execute(settings, args, debug=bool(getattr(args, "debug", False)))


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs = discover_jobs()
    width = max((len(n) for n in jobs), default=4)
    for name, (_, desc) in jobs.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    jobs = discover_jobs()
    if args.job not in jobs:
        sys.stderr.write(f"error: unknown job {args.job!r}; known jobs: {', '.join(jobs)}\n")
        return 2
    spec = discover_specs().get(args.job)
    if spec is not None:
        return _run_spec(spec, args, list(args.job_args))
    entry, _ = jobs[args.job]  # a job module without a SPEC: hand it everything as argv
    return entry(_settings_argv(args) + list(args.job_args))


def _settings_argv(args: argparse.Namespace) -> list[str]:
    out: list[str] = ["--config", args.config] if args.config else []
    for item in args.overrides:
        out += ["--set", item]
    out += ["--data-dir", args.data_dir] if args.data_dir else []
    return out + (["--lake-uri", args.lake_uri] if args.lake_uri else [])


def cmd_runs(args: argparse.Namespace) -> int:
    from rayapp.lake import Lake
    from rayapp.ledger import Ledger
    from rayapp.tools.runs_view import run_doc, run_tree, runs_table

    lake = Lake(settings_from_args(args))
    lake.check_reachable()
    ledger = Ledger(lake)
    if args.run_id:
        rec = ledger.get_run(args.run_id)
        if rec is None:
            sys.stderr.write(f"error: no run {args.run_id!r} in the ledger at {ledger.runs_uri}\n")
            return 1
        children = [r for r in ledger.runs() if r.parent_run_id == rec.run_id]
        print(json.dumps(run_doc(rec, children), indent=2, default=str) if args.json else run_tree(rec, children))
        return 0
    runs = ledger.runs(job=args.job, limit=args.limit)
    if args.json:
        print(json.dumps([r.to_row() for r in runs], default=str, indent=2))
        return 0
    print(runs_table(runs) if runs else f"no runs recorded yet in {ledger.runs_uri}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``rayapp report``: the run report as one offline HTML page (the Serve app's ``/ui``)."""
    from rayapp.lake import Lake
    from rayapp.report import write_report

    settings = settings_from_args(args)
    lake = Lake(settings)
    lake.check_reachable()
    path = write_report(lake, args.out or str(settings.data_dir / "report.html"), args.run_id)
    sys.stderr.write("run report written (open it in a browser; it needs no network):\n")
    print(path)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """``rayapp keys create|list|revoke``: API keys of the HTTP API (hashes in the lake's ledger)."""
    from rayapp.consumer.keys import KeyStore, parse_scopes
    from rayapp.lake import Lake
    from rayapp.tools.runs_view import fmt_ts

    lake = Lake(settings_from_args(args))
    lake.check_reachable()
    store = KeyStore(lake)
    if args.keys_command == "create":
        record, key = store.create(args.name, parse_scopes(args.scopes))
        sys.stderr.write(f"created key {record.key_id} {record.name!r} with scopes {', '.join(s.value for s in record.scopes)}; "
                         "it is shown once, below (only a hash is stored)\n")  # fmt: skip
        print(key)
        return 0
    if args.keys_command == "revoke":
        record = store.revoke(args.key)
        print(f"revoked key {record.key_id} {record.name!r}")
        return 0
    keys = store.list(include_revoked=args.all)
    if args.json:
        print(json.dumps([k.public() for k in keys], indent=2))
        return 0
    if not keys:
        print("no API keys yet: rayapp keys create --name NAME --scopes datasets:read,search,lookup,score")
        return 0
    print(f"{'KEY ID':<14} {'NAME':<24} {'CREATED (UTC)':<19} {'REVOKED (UTC)':<19} SCOPES")
    for k in keys:
        print(f"{k.key_id:<14} {k.name[:24]:<24} {fmt_ts(k.created_at):<19} {fmt_ts(k.revoked_at):<19} {','.join(s.value for s in k.scopes)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rayapp.tools.demo import run_demo

    return run_demo(settings_from_args(args), args.rows, args.seed, args.files, discover_specs())


def cmd_serve(args: argparse.Namespace) -> int:
    """Deploy the Serve application (models + HTTP) through the ``serve_models`` job."""
    spec = discover_specs().get("serve_models")
    if spec is None:
        raise RayappError("no serve_models job in the jobs package")
    job_args = [*(["--model-version", args.model_version] if args.model_version else []), *(["--detach"] if args.detach else [])]
    if args.port:
        job_args += ["--set", f"serve_port={args.port}"]
    return _run_spec(spec, args, job_args)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rayapp")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _settings_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The settings options; a subcommand's copies (``prefix`` "sub_") are merged over the global ones."""
    p.add_argument("--config", dest=f"{prefix}config", metavar="PATH", help="TOML settings file (default: $RAYAPP_CONFIG)")
    p.add_argument("--set", dest=f"{prefix}overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    p.add_argument("--data-dir", dest=f"{prefix}data_dir", help="override RAYAPP_DATA_DIR")
    p.add_argument("--lake-uri", dest=f"{prefix}lake_uri", help="override RAYAPP_LAKE_URI")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rayapp", description="Ray-native batch data platform: landing -> Delta lake -> serving stores.")
    p.add_argument("--version", action="version", version=f"rayapp {_version()}")
    _settings_options(p)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("jobs", help="list jobs").set_defaults(fn=cmd_jobs)
    r = sub.add_parser("run", help="run a job: rayapp run <job> [args...]")
    r.add_argument("job")
    r.add_argument("job_args", nargs=argparse.REMAINDER)
    r.set_defaults(fn=cmd_run)
    rs = sub.add_parser("runs", help="show the run ledger, newest first")
    rs.add_argument("--limit", type=int, default=20)
    rs.add_argument("--job", help="only runs of this job")
    rs.add_argument("--run-id", help="one run in full: a pipeline as a tree of its stage runs, counts, versions")
    rs.add_argument("--json", action="store_true", help="machine-readable output")
    _settings_options(rs, "sub_")
    rs.set_defaults(fn=cmd_runs)
    rp = sub.add_parser("report", help="the run report: one offline HTML page with plots (also served at /ui)")
    rp.add_argument("--run-id", help="the run to report on (default: the latest pipeline run)")
    rp.add_argument("--out", help="where to write it (default: <data_dir>/report.html)")
    _settings_options(rp, "sub_")
    rp.set_defaults(fn=cmd_report)
    sv = sub.add_parser("serve", help="run the models (FraudScorer, Embedder) and their HTTP API locally")
    sv.add_argument("--port", type=int, help="HTTP port (default: RAYAPP_SERVE_PORT, 8000)")
    sv.add_argument("--model-version", help="fraud model version (default: latest)")
    sv.add_argument("--detach", action="store_true", help="return once deployed (the app lives as long as its Ray cluster)")
    _settings_options(sv, "sub_")
    sv.set_defaults(fn=cmd_serve)
    k = sub.add_parser("keys", help="API keys of the HTTP API: create, list, revoke")
    ks = k.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    kc = ks.add_parser("create", help="create a key and print it (once)")
    kc.add_argument("--name", required=True, help="who or what uses the key")
    kc.add_argument("--scopes", required=True, help="comma-separated: datasets:read, search, lookup, score")
    kl = ks.add_parser("list", help="the keys (never the keys themselves)")
    kl.add_argument("--all", action="store_true", help="include revoked keys")
    kl.add_argument("--json", action="store_true", help="machine-readable output")
    kr = ks.add_parser("revoke", help="revoke a key by id or name")
    kr.add_argument("key", help="key id or name")
    for sp in (kc, kl, kr):
        _settings_options(sp, "sub_")
    k.set_defaults(fn=cmd_keys)
    d = sub.add_parser("demo", help="generate data and run the pipeline on embedded defaults")
    d.add_argument("--rows", type=int, default=200_000)
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--files", type=int, default=8)
    _settings_options(d, "sub_")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if hasattr(args, "sub_overrides"):  # settings options given after the subcommand win
        inner = argparse.Namespace(config=args.sub_config, overrides=args.sub_overrides, data_dir=args.sub_data_dir, lake_uri=args.sub_lake_uri)
        for k, v in vars(merge_settings_options(args, inner)).items():
            setattr(args, k, v)
    try:
        return int(args.fn(args))
    except (RayappError, ConfigError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2 if isinstance(exc, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
