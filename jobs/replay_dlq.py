"""Job `replay_dlq`: re-send dead-lettered batches to their stores; clear what succeeds."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult
from rayapp.sinks import stores


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", choices=list(stores()), help="replay this store's dead letters only")
    p.add_argument("--allow-partial", action="store_true", help="exit 0 even when batches went to the dead-letter queue")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.publish import replay_dead_letters

    res = replay_dead_letters(ctx.lake, ctx.ledger, ctx.run_id, store=args.store)
    c = res.counts
    return JobResult.of(res, f"{c['dead_letters']} pending dead letter(s): {c['replayed']} replayed, {c['still_failing']} still failing")


DESCRIPTION = "Re-send dead-lettered batches to their stores (all, or --store X)"
SPEC = Job("replay_dlq", DESCRIPTION, _body, _arguments)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
