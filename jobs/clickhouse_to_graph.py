"""Job `clickhouse_to_graph`: rebuild the graph store from ClickHouse (backfill)."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import JobContext, JobResult, job_parser, run_job


def _parser() -> argparse.ArgumentParser:
    return job_parser("clickhouse_to_graph", DESCRIPTION)


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.backfill import rebuild_from_clickhouse

    res = rebuild_from_clickhouse(ctx.settings, ctx.ledger, ctx.run_id, "graph")
    c = res.counts
    summary = f"{c['rows_read']} ClickHouse transactions read; graph written {c['graph.written']}, failed {c['graph.failed']} ({res.details['target']})"
    return JobResult(counts=c, details=res.details, status=res.status, summary=summary)


def entrypoint(argv: list[str]) -> int:
    return run_job("clickhouse_to_graph", argv, _parser(), _body)


DESCRIPTION = "Backfill: rebuild the graph store from ClickHouse (FINAL rows, read with Ray Data)"
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(entrypoint(sys.argv[1:]))
