"""Job `maintain`: compact small files, Z-order silver, checkpoint logs, vacuum what no kept version needs."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retention-hours", type=float, help="vacuum files removed longer ago than this (default: RAYAPP_LAKE_RETENTION_HOURS)")
    p.add_argument("--table", action="append", default=[], help="only this table, e.g. silver/transactions (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="report what vacuum would remove; change nothing")


def _validate(args: argparse.Namespace) -> None:
    from rayapp.catalog import TABLES
    from rayapp.errors import ConfigError

    if args.retention_hours is not None and args.retention_hours < 0:
        raise ConfigError("--retention-hours must be ≥ 0")
    for t in args.table:
        if t not in TABLES:
            raise ConfigError(f"unknown table {t!r}; tables: {', '.join(TABLES)}")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.maintain import maintain

    hours = ctx.settings.lake_retention_hours if args.retention_hours is None else args.retention_hours
    res = maintain(ctx.lake, ctx.ledger, ctx.run_id, retention_hours=hours, tables=args.table or None, dry_run=args.dry_run)
    lines = [f"{'TABLE':<28} {'FILES READ':>14} {'MiB READ':>17} {'FILES STORED':>14}  VACUUMED"]
    for name, t in res.tables.items():
        lines.append(f"{name:<28} {t['files_before']:>6} -> {t['files_after']:<5} {t['bytes_before'] / 2**20:>7.1f} -> {t['bytes_after'] / 2**20:<7.1f} "
                     f"{t['disk_files_before']:>6} -> {t['disk_files_after']:<5}  {t['vacuumed']}" + (f"  ({t['error']})" if t.get("error") else ""))  # fmt: skip
    c = res.counts
    lines.append(f"files read {c['files_before']} -> {c['files_after']}; on storage {c['disk_files_before']} -> {c['disk_files_after']} files, "
                 f"{c['disk_bytes_before'] / 2**20:.1f} -> {c['disk_bytes_after'] / 2**20:.1f} MiB" + (" (dry run: nothing changed)" if args.dry_run else ""))  # fmt: skip
    return JobResult.of(res, "\n".join(lines))


DESCRIPTION = "Compact small files, Z-order silver, checkpoint the logs, vacuum files no kept version needs"
SPEC = Job("maintain", DESCRIPTION, _body, _arguments, validate=_validate, needs_ray=False)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
