"""Job `bronze_to_silver`: typed parse, expectations + quarantine, dedup, change detection, MERGE into silver."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full-refresh", action="store_true", help="reprocess all of bronze and rebuild silver")
    p.add_argument("--as-of-version", type=int, help="read bronze as of this Delta version (backfills)")
    p.add_argument("--expect", action="append", default=[], metavar="RULE=ACTION",
                   help="set a rule's action: warn, drop, fail or fail:<percent> (repeatable)")  # fmt: skip
    p.add_argument("--max-quarantine-pct", type=float, help="fail the run when more than this share is quarantined")
    p.add_argument("--partitions", type=int, help="key partitions for the dedup (default: from the row count)")


def _validate(args: argparse.Namespace) -> None:
    from rayapp.quality import Expectations

    Expectations.from_specs(args.expect, args.max_quarantine_pct)  # a bad rule or action fails before anything starts
    if args.partitions is not None and args.partitions < 1:
        from rayapp.errors import ConfigError

        raise ConfigError("--partitions must be ≥ 1")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.silver import bronze_to_silver
    from rayapp.quality import Expectations

    expectations = Expectations.from_specs(args.expect, args.max_quarantine_pct)
    res = bronze_to_silver(
        ctx.lake, ctx.ledger, ctx.run_id, full_refresh=args.full_refresh, as_of_version=args.as_of_version,
        expectations=expectations, partitions=args.partitions,
    )  # fmt: skip
    c = res.counts
    lines = [
        f"bronze versions ({res.bronze_from if res.bronze_from is not None else '-'}, {res.bronze_to}]: {c.get('rows_in', 0)} rows in, "
        f"{c.get('quarantined', 0)} quarantined; silver: {c.get('inserted', 0)} inserted, {c.get('updated', 0)} updated, "
        f"{c.get('unchanged', 0)} unchanged"
    ]
    lines += [f"  {rule:<24} {n}" for rule, n in res.rules.items() if n]
    return JobResult.of(res, "\n".join(lines))


DESCRIPTION = "Bronze -> silver: parse, expectations (quarantine), normalise, dedup, MERGE (incremental)"
SPEC = Job("bronze_to_silver", DESCRIPTION, _body, _arguments, validate=_validate)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
