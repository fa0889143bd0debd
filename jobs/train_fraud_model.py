"""Job `train_fraud_model`: features on Ray Data from silver, LightGBM, time-based evaluation, versioned artifact."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import JobContext, JobResult, job_parser, run_job


def _parser() -> argparse.ArgumentParser:
    p = job_parser("train_fraud_model", DESCRIPTION)
    p.add_argument("--eval-fraction", type=float, default=0.2, help="latest share of the time range held out (default 0.2)")
    return p


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.errors import RayappError
    from rayapp.pipelines.silver import SILVER
    from rayapp.pipelines.train import train_fraud_model

    if not 0.05 <= args.eval_fraction <= 0.5:
        raise RayappError("--eval-fraction must be between 0.05 and 0.5")
    res = train_fraud_model(ctx.settings, ctx.run_id, args.eval_fraction)
    m = res.model.metrics
    summary = (
        f"fraud model {res.model.version}: ROC-AUC {m['roc_auc']:.4f}, PR-AUC {m['pr_auc']:.4f}, "
        f"precision {m['precision']:.3f} / recall {m['recall']:.3f} at threshold {m['threshold']:.3f} "
        f"({m['rows']['train']} train / {m['rows']['eval']} held-out rows)\nartifact: {res.path}"
    )
    return JobResult(
        counts={"rows_read": res.rows, "train_rows": m["rows"]["train"], "eval_rows": m["rows"]["eval"]},
        versions_read={SILVER: res.silver_version},
        details={"model_version": res.model.version, "path": str(res.path), "metrics": m},
        summary=summary,
    )


def entrypoint(argv: list[str]) -> int:
    return run_job("train_fraud_model", argv, _parser(), _body)


DESCRIPTION = "Train the LightGBM fraud model on silver (time split) and save a versioned artifact"
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(entrypoint(sys.argv[1:]))
