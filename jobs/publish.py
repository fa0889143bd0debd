"""Job `publish`: fan lake changes out to PostgreSQL, ClickHouse, the graph and the vector store."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import JobContext, JobResult, job_parser, run_job

STORE_CHOICES = ("postgres", "clickhouse", "graph", "vector")


def _parser() -> argparse.ArgumentParser:
    p = job_parser("publish", DESCRIPTION)
    p.add_argument("--store", action="append", choices=STORE_CHOICES, help="publish to this store only (repeatable; default: all)")
    p.add_argument("--full", action="store_true", help="republish everything, not just what changed since the last publish")
    return p


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.publish import publish

    res = publish(ctx.settings, ctx.ledger, ctx.run_id, stores=args.store, full=args.full)
    lines = [f"{s:<11} written {res.counts[f'{s}.written']:>9}  failed {res.counts[f'{s}.failed']:>7}  ({d['url']})"
             for s, d in res.details["stores"].items()]  # fmt: skip
    if res.dead_letters:
        lines.append(f"{len(res.dead_letters)} batch(es) in the dead-letter queue: fix the store, then `rayapp run replay_dlq`")
    return JobResult(counts=res.counts, versions_read=res.versions_read, details=res.details, status=res.status, summary="\n".join(lines))


def entrypoint(argv: list[str]) -> int:
    return run_job("publish", argv, _parser(), _body)


DESCRIPTION = "Publish changed transactions, predictions, gold rows and vectors to the serving stores"
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(entrypoint(sys.argv[1:]))
