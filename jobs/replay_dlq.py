"""Job `replay_dlq`: re-send dead-lettered batches to their stores; clear what succeeds."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import JobContext, JobResult, job_parser, run_job


def _parser() -> argparse.ArgumentParser:
    p = job_parser("replay_dlq", DESCRIPTION)
    p.add_argument("--store", choices=("postgres", "clickhouse", "graph", "vector"), help="replay this store's dead letters only")
    return p


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.publish import replay_dead_letters

    res = replay_dead_letters(ctx.settings, ctx.ledger, ctx.run_id, store=args.store)
    c = res.counts
    summary = f"{c['dead_letters']} pending dead letter(s): {c['replayed']} replayed, {c['still_failing']} still failing"
    return JobResult(counts=c, details=res.details, status=res.status, summary=summary)


def entrypoint(argv: list[str]) -> int:
    return run_job("replay_dlq", argv, _parser(), _body)


DESCRIPTION = "Re-send dead-lettered batches to their stores (all, or --store X)"
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(entrypoint(sys.argv[1:]))
