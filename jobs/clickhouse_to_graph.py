"""Job `clickhouse_to_graph`: rebuild the graph store from ClickHouse (backfill)."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-partial", action="store_true", help="exit 0 even when batches went to the dead-letter queue")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.publish.backfill import rebuild_from_clickhouse

    res = rebuild_from_clickhouse(ctx.lake, ctx.ledger, ctx.run_id, "graph")
    c = res.counts
    return JobResult.of(res, f"{c['rows_read']} ClickHouse transactions read; graph written {c['graph.written']}, failed {c['graph.failed']} ({res.details['target']})")


DESCRIPTION = "Backfill: rebuild the graph store from ClickHouse (FINAL rows, read with Ray Data)"
SPEC = Job("clickhouse_to_graph", DESCRIPTION, _body, _arguments)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
