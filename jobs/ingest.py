"""Job `ingest`: append new landing files to the bronze Delta table (idempotent)."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import JobContext, JobResult, job_parser, run_job


def _parser() -> argparse.ArgumentParser:
    p = job_parser("ingest", DESCRIPTION)
    p.add_argument("--landing", help="landing URI: folder or s3://bucket/prefix (default: RAYAPP_LANDING_URI)")
    p.add_argument("--retry-rejected", action="store_true", help="parse again files rejected by an earlier run")
    return p


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.ingest import BRONZE, ingest

    res = ingest(ctx.settings, ctx.ledger, ctx.run_id, args.landing, retry_rejected=args.retry_rejected)
    lines = [
        f"landing files: {res.files_seen} seen, {res.files_skipped} already ingested, "
        f"{res.files_ingested} ingested, {res.files_rejected} rejected; {res.rows} rows appended to bronze"
    ]
    lines += [f"  rejected {r['file']}: {r['reason']}" for r in res.rejected or []]
    written = {"/".join(BRONZE): res.bronze_version} if res.bronze_version is not None else {}
    return JobResult(
        counts=res.counts(),
        versions_written=written,
        details={"landing": args.landing or ctx.settings.landing, "rejected": res.rejected or []},
        summary="\n".join(lines),
    )


def entrypoint(argv: list[str]) -> int:
    return run_job("ingest", argv, _parser(), _body)


DESCRIPTION = "Append every new landing file (CSV/JSONL/Parquet, local or s3://) to bronze in one commit"
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(entrypoint(sys.argv[1:]))
