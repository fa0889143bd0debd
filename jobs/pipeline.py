"""Job `pipeline`: every stage in order under one pipeline run id (resume, select, dry run)."""

from __future__ import annotations

import argparse
import importlib
import sys

from rayapp.jobkit import JobContext, JobResult, job_parser, run_job, settings_argv

#: Stage order; a stage whose job module does not exist (yet) is left out.
STAGES = ("ingest", "bronze_to_silver", "silver_to_gold", "train_fraud_model", "score_transactions", "publish")


def _parser() -> argparse.ArgumentParser:
    p = job_parser("pipeline", DESCRIPTION)
    p.add_argument("--landing", help="landing URI for ingest (default: RAYAPP_LANDING_URI)")
    p.add_argument("--retrain", action="store_true", help="train a new fraud model even when one exists")
    p.add_argument("--resume", action="store_true", help="continue the last failed pipeline run from its failed stage")
    p.add_argument("--only", action="append", default=[], metavar="STAGE", help="run only these stages (repeatable)")
    p.add_argument("--skip", action="append", default=[], metavar="STAGE", help="skip these stages (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--score-mode", choices=("serve", "inline"), default="serve", help="score_transactions --mode")
    return p


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.errors import RayappError
    from rayapp.orchestrate import Stage, describe, resume_point, run_stages, select
    from rayapp.pipelines.train import model_root

    stages: list[Stage] = []
    for name in STAGES:
        try:
            module = importlib.import_module(f"jobs.{name}")
        except ModuleNotFoundError:
            continue
        argv: list[str] = []
        if name == "ingest" and args.landing:
            argv = ["--landing", args.landing]
        if name == "score_transactions":
            argv = ["--mode", args.score_mode]
        stage = Stage(name, module.JOB[0], argv)
        if name == "train_fraud_model" and not args.retrain and (model_root(ctx.settings) / "latest").is_file():
            stage.skip_reason = "a model exists (use --retrain)"
        stages.append(stage)
    select(stages, args.only, args.skip)
    resumed_from = None
    if args.resume:
        resumed_from, done = resume_point(ctx.ledger, ctx.run_id)
        for s in stages:
            if s.name in done and not s.skip_reason:
                s.skip_reason = f"done in {resumed_from}"
    plan = describe(stages)
    if args.dry_run:
        return JobResult(details={"plan": plan, "dry_run": True}, summary=f"pipeline plan:\n{plan}")
    outcome = run_stages(stages, settings_argv(args), ctx.run_id)
    if outcome.failed:
        raise RayappError(f"stage {outcome.failed} failed; later stages did not run (fix it, then `rayapp run pipeline --resume`)")
    ran = [s["stage"] for s in outcome.stages if s["status"] == "succeeded"]
    return JobResult(
        counts={"stages_run": len(ran)},
        details={"stages": outcome.stages, "resumed_from": resumed_from},
        summary=f"pipeline stages run: {', '.join(map(str, ran)) or 'none'}",
    )


def entrypoint(argv: list[str]) -> int:
    return run_job("pipeline", argv, _parser(), _body)


DESCRIPTION = "Run ingest -> bronze_to_silver -> silver_to_gold -> train (if needed) -> score -> publish"
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(entrypoint(sys.argv[1:]))
