"""Job `reconcile`: prove each serving store equals the lake (by key and content, in key
ranges), print the differences, and with ``--repair`` re-send or delete them through the writers.
Exits 4 while a difference remains."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult
from rayapp.sinks import stores


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", action="append", choices=list(stores()), help="check this store (repeatable; default: all)")
    p.add_argument("--repair", action="store_true", help="re-send missing/different rows and delete extra ones, then check again")


def summary(res: JobResult | object) -> str:
    """Per store and view: rows checked, missing, extra, different, total, and example keys."""
    lines = []
    details = getattr(res, "details", {})
    for name, store in details.get("stores", {}).items():
        after = store.get("after_repair")
        for view, d in store["views"].items():
            line = (f"{name:<10} {view:<24} checked {d['checked']:>9}  missing {d['missing']:>6}  extra {d['extra']:>6}  "
                    f"different {d['different']:>6}  total {d['total']:>6}")  # fmt: skip
            if after is not None:
                line += f"  after repair {after[view]['total']}"
            lines.append(line)
            for kind, keys in d.get("examples", {}).items():
                lines.append(f"{'':<11}{kind}: {', '.join(keys)}")
    return "\n".join(lines)


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.reconcile import reconcile

    res = reconcile(ctx.lake, ctx.ledger, ctx.run_id, stores=args.store, repair=args.repair)
    c = res.counts
    verdict = (f"parity: every store equals the lake ({c['mismatches']} difference(s) found, {c['repaired']} repaired)"
               if not c["remaining"] else f"{c['remaining']} difference(s) remain: run `rayapp run reconcile --repair`")  # fmt: skip
    return JobResult.of(res, summary(res) + "\n" + verdict)


DESCRIPTION = "Prove each store equals the lake (missing/extra/different rows); --repair fixes them"
SPEC = Job("reconcile", DESCRIPTION, _body, _arguments)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
