"""Job `generate`: write deterministic synthetic transaction files to a landing location."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any

from rayapp.jobkit import Job, JobContext, JobResult


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=100_000, help="total records to write (default 100000)")
    p.add_argument("--seed", type=int, default=42, help="same seed => same bytes (default 42)")
    p.add_argument("--files", type=int, default=8, help="number of files (default 8)")
    p.add_argument("--formats", default="csv,jsonl,parquet", help="comma list of csv,jsonl,parquet, used in turn")
    p.add_argument("--out", help="landing URI: folder or s3://bucket/prefix (default: RAYAPP_LANDING_URI)")
    p.add_argument("--start", default="2025-01-01", help="first event date, UTC (default 2025-01-01)")
    p.add_argument("--days", type=int, default=30, help="days of events (default 30)")


def _spec(args: argparse.Namespace) -> Any:
    from rayapp.errors import ConfigError
    from rayapp.tools.datagen import GenSpec

    try:
        start = datetime.fromisoformat(args.start).replace(tzinfo=timezone.utc)
        return GenSpec(
            rows=args.rows, seed=args.seed, files=args.files, days=args.days, start=start,
            formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.generate import generate

    spec = _spec(args)
    out = args.out or ctx.settings.landing
    files = generate(ctx.lake, spec, out)
    rows = sum(f.rows for f in files)
    return JobResult(
        counts={"rows_written": rows, "files_written": len(files)},
        details={"out": out, "seed": spec.seed, "files": [f.uri for f in files]},
        summary=f"generated {rows} rows in {len(files)} file(s) under {out}",
    )


DESCRIPTION = "Write deterministic synthetic transaction files (CSV/JSONL/Parquet) to a landing zone"
SPEC = Job("generate", DESCRIPTION, _body, _arguments, lease=False, validate=_spec)  # writes landing files only
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
