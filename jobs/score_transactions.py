"""Job `score_transactions`: score changed silver rows through the FraudScorer (Serve) or inline; MERGE predictions."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("serve", "inline"), default="serve",
                   help="serve: through the FraudScorer deployment (default); inline: model in Ray Data actors")  # fmt: skip
    p.add_argument("--full", action="store_true", help="rescore every silver row, not only those changed since the last run")
    p.add_argument("--model-version", help="model version (default: the one Serve runs, or latest)")
    p.add_argument("--concurrency", type=int, default=1, help="scoring actors (default 1)")
    p.add_argument("--batch-size", type=int, default=50_000, help="rows per scoring call (default 50000)")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.score import score_transactions

    version = args.model_version
    if args.mode == "serve":
        from rayapp.logs import is_terminal
        from serve.app import deploy

        version = deploy(ctx.settings, args.model_version, quiet=is_terminal())
    res = score_transactions(
        ctx.lake, ctx.ledger, ctx.run_id, mode=args.mode, full=args.full, model_version=version,
        concurrency=args.concurrency, batch_size=args.batch_size,
    )  # fmt: skip
    c = res.counts
    return JobResult.of(res, (f"model {res.model_version} ({args.mode}): {c.get('rows_scored', 0)} rows scored; predictions "
                              f"{c.get('inserted', 0)} inserted, {c.get('updated', 0)} updated, {c.get('unchanged', 0)} unchanged"))  # fmt: skip


DESCRIPTION = "Score silver rows changed since the last run via the FraudScorer Serve deployment (or inline)"
SPEC = Job("score_transactions", DESCRIPTION, _body, _arguments)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
