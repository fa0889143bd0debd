"""Job `benchmark`: time every stage on generated data (rows/s per stage, JSON report)."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=1_000_000, help="rows to generate (default 1000000)")
    p.add_argument("--files", type=int, default=8, help="landing files (default 8)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keep", action="store_true", help="keep the scratch lake under <data_dir>/bench/work")
    p.add_argument("--api-requests", type=int, default=300, help="requests per HTTP API endpoint under load (0: skip the API load)")
    p.add_argument("--lake-only", action="store_true",
                   help="generate → ingest → bronze_to_silver → silver_to_gold only (scale runs: peak memory, disk, spill)")  # fmt: skip


def _validate(args: argparse.Namespace) -> None:
    from rayapp.errors import ConfigError

    if args.rows < 1 or args.files < 1 or args.api_requests < 0:
        raise ConfigError("--rows and --files must be ≥ 1, --api-requests ≥ 0")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.tools.bench import run_benchmark
    from serve.app import deploy

    from rayapp.tools.bench_api import summary_lines

    report = run_benchmark(ctx.settings, args.rows, args.files, args.seed, keep=args.keep, deploy_models=deploy,
                           api_requests=args.api_requests, lake_only=args.lake_only)  # fmt: skip
    path = report["landing_to_postgres"] or {"shares": {}}
    lines = [f"benchmark at {report['rows']} rows on {report['machine']['cpus']} CPUs:"]
    for s in report["stages"]:
        share = f"{path['shares'][s['stage']]:>6.1%}" if s["stage"] in path["shares"] else ""
        lines.append(f"  {s['stage']:<34} {s['rows']:>10} rows {s['seconds']:>8.2f}s {s['rows_per_s']:>10} rows/s {share}")
    if report["landing_to_postgres"]:
        lines.append(f"landing → PostgreSQL (ingest … publish, shares above): {path['seconds']}s = {path['landing_rows_per_s']} landing rows/s")
    mem = report["memory"]
    lines.append(f"peak memory: driver {mem['driver_peak_rss_mib']} MiB, all {mem['processes_at_peak']} processes "
                 f"{mem['processes_peak_pss_mib']} MiB (PSS); disk grew {mem['disk_peak_growth_mib']} MiB at most; "
                 f"object store spilled {mem['spilled_mib']} MiB")  # fmt: skip
    if "disk_mib" in report:
        lines.append("on disk (MiB): " + ", ".join(f"{k} {v}" for k, v in report["disk_mib"].items()))
    if "bronze_to_silver_vs_polars" in report:
        lines.append(f"bronze_to_silver time / polars reference time: {report['bronze_to_silver_vs_polars']}x")
    if report.get("serve_vs_inline_scoring") is not None:
        lines.append(f"scoring job through Serve / inline: {report['serve_vs_inline_scoring']}x; "
                     f"scoring step alone: {report['serve_vs_inline_scoring_step']}x")  # fmt: skip
    if report["api"]:
        lines.append("HTTP API on 127.0.0.1 under bounded concurrent load:")
        lines += summary_lines(report["api"])
    lines.append(f"report: {report['report_path']}")
    return JobResult(
        counts={f"{s['stage']}_rows_per_s": s["rows_per_s"] for s in report["stages"]},
        details={"report": report},
        summary="\n".join(lines),
    )


DESCRIPTION = "Time each stage on generated data; prints rows/s and writes <data_dir>/bench/*.json"
SPEC = Job("benchmark", DESCRIPTION, _body, _arguments, lease=False, validate=_validate)  # its own scratch lake
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
