"""Job `publish`: fan lake changes out to the serving stores (PostgreSQL, ClickHouse, graph, vectors)."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult
from rayapp.sinks import stores


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", action="append", choices=list(stores()), help="publish to this store only (repeatable; default: all)")
    p.add_argument("--full", action="store_true", help="republish everything, not just what changed since the last publish")
    p.add_argument("--allow-partial", action="store_true", help="exit 0 even when batches went to the dead-letter queue")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.publish import publish

    res = publish(ctx.lake, ctx.ledger, ctx.run_id, stores=args.store, full=args.full)
    lines = [f"{s:<11} written {res.counts[f'{s}.written']:>9}  failed {res.counts[f'{s}.failed']:>7}  ({d['url']})"
             for s, d in res.details["stores"].items()]  # fmt: skip
    if res.dead_letters:
        lines.append(f"{len(res.dead_letters)} batch(es) in the dead-letter queue: fix the store, then `rayapp run replay_dlq`")
    return JobResult.of(res, "\n".join(lines))


DESCRIPTION = "Publish changed transactions, predictions, gold rows and vectors to the serving stores"
SPEC = Job("publish", DESCRIPTION, _body, _arguments)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
