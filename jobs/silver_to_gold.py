"""Job `silver_to_gold`: rebuild the gold aggregates for the dates silver changed."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full-refresh", action="store_true", help="recompute every date")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.gold import silver_to_gold

    res = silver_to_gold(ctx.lake, ctx.ledger, ctx.run_id, full_refresh=args.full_refresh)
    c = res.counts
    summary = (
        f"silver version {res.silver_version}: {res.dates} date(s) recomputed; "
        f"{c.get('daily_account_activity_rows', 0)} daily_account_activity rows, "
        f"{c.get('merchant_daily_stats_rows', 0)} merchant_daily_stats rows"
    )
    return JobResult.of(res, summary)


DESCRIPTION = "Silver -> gold: daily account activity and merchant stats, recomputed for touched dates"
SPEC = Job("silver_to_gold", DESCRIPTION, _body, _arguments)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
