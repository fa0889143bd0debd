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


def _validate(args: argparse.Namespace) -> None:
    from rayapp.errors import ConfigError

    if args.rows < 1 or args.files < 1 or args.api_requests < 0:
        raise ConfigError("--rows and --files must be ≥ 1, --api-requests ≥ 0")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.tools.bench import run_benchmark
    from serve.app import deploy

    from rayapp.tools.bench_api import summary_lines

    report = run_benchmark(ctx.settings, args.rows, args.files, args.seed, keep=args.keep, deploy_models=deploy, api_requests=args.api_requests)
    lines = [f"benchmark at {report['rows']} rows on {report['machine']['cpus']} CPUs:"]
    lines += [f"  {s['stage']:<24} {s['rows']:>10} rows {s['seconds']:>8.2f}s {s['rows_per_s']:>10} rows/s" for s in report["stages"]]
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
