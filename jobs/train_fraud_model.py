"""Job `train_fraud_model`: features on Ray Data from silver, LightGBM, time-based evaluation, versioned artifact."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-fraction", type=float, default=0.2, help="latest share of the time range held out (default 0.2)")


def _validate(args: argparse.Namespace) -> None:
    from rayapp.errors import ConfigError

    if not 0.05 <= args.eval_fraction <= 0.5:
        raise ConfigError("--eval-fraction must be between 0.05 and 0.5")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.train import train_fraud_model

    res = train_fraud_model(ctx.lake, ctx.run_id, args.eval_fraction)
    m = res.model.metrics
    summary = (
        f"fraud model {res.model.version}: ROC-AUC {m['roc_auc']:.4f}, PR-AUC {m['pr_auc']:.4f}, "
        f"precision {m['precision']:.3f} / recall {m['recall']:.3f} at threshold {m['threshold']:.3f} "
        f"({m['rows']['train']} train / {m['rows']['eval']} held-out rows)\nartifact: {res.path}"
    )
    return JobResult.of(res, summary)


DESCRIPTION = "Train the LightGBM fraud model on silver (time split) and save a versioned artifact"
SPEC = Job("train_fraud_model", DESCRIPTION, _body, _arguments, validate=_validate)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
