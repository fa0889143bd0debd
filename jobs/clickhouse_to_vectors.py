"""Job `clickhouse_to_vectors`: rebuild the vectors store from ClickHouse (backfill)."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import JobContext, JobResult, job_parser, run_job


def _parser() -> argparse.ArgumentParser:
    return job_parser("clickhouse_to_vectors", DESCRIPTION)


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.backfill import rebuild_from_clickhouse

    res = rebuild_from_clickhouse(ctx.settings, ctx.ledger, ctx.run_id, "vector")
    c = res.counts
    summary = f"{c['rows_read']} ClickHouse transactions read; vector written {c['vector.written']}, failed {c['vector.failed']} ({res.details['target']})"
    return JobResult(counts=c, details=res.details, status=res.status, summary=summary)


def entrypoint(argv: list[str]) -> int:
    return run_job("clickhouse_to_vectors", argv, _parser(), _body)


DESCRIPTION = "Backfill: rebuild the vectors store from ClickHouse (FINAL rows, read with Ray Data)"
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(entrypoint(sys.argv[1:]))
