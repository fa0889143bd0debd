"""Job `ingest`: append new landing files to the bronze Delta table (idempotent)."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--landing", help="landing URI: folder or s3://bucket/prefix (default: RAYAPP_LANDING_URI)")
    p.add_argument("--retry-rejected", action="store_true", help="parse again files rejected by an earlier run")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.ingest import ingest

    res = ingest(ctx.lake, ctx.ledger, ctx.run_id, args.landing, retry_rejected=args.retry_rejected)
    lines = [
        f"landing files: {res.files_seen} seen, {res.files_skipped} already ingested, "
        f"{res.files_ingested} ingested, {res.files_rejected} rejected; {res.rows} rows appended to bronze"
    ]
    lines += [f"  rejected {r['file']}: {r['reason']}" for r in res.rejected]
    lines += [f"  note {n['file']}: {n['note']}" for n in res.notes]
    return JobResult.of(res, "\n".join(lines))


DESCRIPTION = "Append every new landing file (CSV/JSONL/Parquet, local or s3://) to bronze in one commit"
SPEC = Job("ingest", DESCRIPTION, _body, _arguments)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
