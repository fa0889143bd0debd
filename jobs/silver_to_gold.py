"""Job `silver_to_gold`: rebuild the gold aggregates for the dates silver changed."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import JobContext, JobResult, job_parser, run_job


def _parser() -> argparse.ArgumentParser:
    p = job_parser("silver_to_gold", DESCRIPTION)
    p.add_argument("--full-refresh", action="store_true", help="recompute every date")
    return p


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.silver import SILVER, silver_to_gold

    res = silver_to_gold(ctx.settings, ctx.ledger, ctx.run_id, full_refresh=args.full_refresh)
    c = res.counts
    summary = (
        f"silver version {res.silver_version}: {res.dates} date(s) recomputed; "
        f"{c.get('daily_account_activity_rows', 0)} daily_account_activity rows, "
        f"{c.get('merchant_daily_stats_rows', 0)} merchant_daily_stats rows"
    )
    return JobResult(
        counts=c,
        versions_read={SILVER: res.silver_version},
        versions_written=res.versions,
        details={"full_refresh": args.full_refresh},
        summary=summary,
    )


def entrypoint(argv: list[str]) -> int:
    return run_job("silver_to_gold", argv, _parser(), _body)


DESCRIPTION = "Silver -> gold: daily account activity and merchant stats, recomputed for touched dates"
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(entrypoint(sys.argv[1:]))
