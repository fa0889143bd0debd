"""Job `bronze_to_silver`: typed parse, expectations + quarantine, dedup, change detection, MERGE into silver."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import JobContext, JobResult, job_parser, run_job


def _parser() -> argparse.ArgumentParser:
    p = job_parser("bronze_to_silver", DESCRIPTION)
    p.add_argument("--full-refresh", action="store_true", help="reprocess all of bronze and rebuild silver")
    p.add_argument("--as-of-version", type=int, help="read bronze as of this Delta version (backfills)")
    p.add_argument("--expect", action="append", default=[], metavar="RULE=ACTION",
                   help="set a rule's action: warn, drop, fail or fail:<percent> (repeatable)")  # fmt: skip
    p.add_argument("--max-quarantine-pct", type=float, help="fail the run when more than this share is quarantined")
    p.add_argument("--partitions", type=int, help="key partitions for the dedup (default: from the row count)")
    return p


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.silver import BRONZE, QUARANTINE, SILVER, bronze_to_silver
    from rayapp.quality import Expectations

    expectations = Expectations.from_specs(args.expect, args.max_quarantine_pct)
    res = bronze_to_silver(
        ctx.settings, ctx.ledger, ctx.run_id, full_refresh=args.full_refresh, as_of_version=args.as_of_version,
        expectations=expectations, partitions=args.partitions,
    )  # fmt: skip
    c = res.counts
    lines = [
        f"bronze versions ({res.bronze_from if res.bronze_from is not None else '-'}, {res.bronze_to}]: {c.get('rows_in', 0)} rows in, "
        f"{c.get('quarantined', 0)} quarantined; silver: {c.get('inserted', 0)} inserted, {c.get('updated', 0)} updated, "
        f"{c.get('unchanged', 0)} unchanged"
    ]
    lines += [f"  {rule:<24} {n}" for rule, n in res.rules.items() if n]
    written = {SILVER: res.silver_version, QUARANTINE: res.quarantine_version}
    return JobResult(
        counts=c | {f"rule_{k}": v for k, v in res.rules.items()},
        versions_read={BRONZE: res.bronze_to},
        versions_written={k: v for k, v in written.items() if v is not None},
        details={"rules": res.rules, "bronze_from": res.bronze_from, "full_refresh": args.full_refresh},
        summary="\n".join(lines),
    )


def entrypoint(argv: list[str]) -> int:
    return run_job("bronze_to_silver", argv, _parser(), _body)


DESCRIPTION = "Bronze -> silver: parse, expectations (quarantine), normalise, dedup, MERGE (incremental)"
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(entrypoint(sys.argv[1:]))
