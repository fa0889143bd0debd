"""Job `pipeline`: every stage in order under one pipeline run id (resume, select, dry run).

Each stage is called with this run's Settings object (built once) and its own options: no
argv round trip between stages.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rayapp.jobkit import Job, JobContext, JobResult

#: Stage order; a stage whose job module does not exist (yet) is left out.
STAGES = ("ingest", "bronze_to_silver", "silver_to_gold", "train_fraud_model", "score_transactions", "publish")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--landing", help="landing URI for ingest (default: RAYAPP_LANDING_URI)")
    p.add_argument("--retrain", action="store_true", help="train a new fraud model even when one exists")
    p.add_argument("--resume", action="store_true", help="continue the last failed pipeline run from its failed stage")
    p.add_argument("--only", action="append", default=[], metavar="STAGE", help="run only these stages (repeatable)")
    p.add_argument("--skip", action="append", default=[], metavar="STAGE", help="skip these stages (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--score-mode", choices=("serve", "inline"), default="serve", help="score_transactions --mode")


def _stage_options(name: str, args: argparse.Namespace) -> dict[str, object]:
    if name == "ingest":
        return {"landing": args.landing}
    if name == "score_transactions":
        return {"mode": args.score_mode}
    return {}


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.errors import RayappError
    from rayapp.model_store import has_model
    from rayapp.orchestrate import Stage, describe, resume_point, run_stages, select

    stages: list[Stage] = []
    for name in STAGES:
        try:
            spec: Job = importlib.import_module(f"jobs.{name}").SPEC
        except ModuleNotFoundError:
            continue
        options = _stage_options(name, args)
        stage_args = spec.options(**options)

        def run(parent: str, spec: Job = spec, stage_args: argparse.Namespace = stage_args) -> int:
            return spec.execute(ctx.settings, stage_args, parent_run_id=parent)

        stage = Stage(name, run, options)
        if name == "train_fraud_model" and not args.retrain and has_model(ctx.settings):
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
    outcome = run_stages(stages, ctx.run_id)
    if outcome.failed:
        raise RayappError(f"stage {outcome.failed} failed; later stages did not run (fix it, then `rayapp run pipeline --resume`)")
    ran = [s["stage"] for s in outcome.stages if s["status"] == "succeeded"]
    return JobResult(
        counts={"stages_run": len(ran)},
        details={"stages": outcome.stages, "resumed_from": resumed_from},
        summary=f"pipeline stages run: {', '.join(map(str, ran)) or 'none'}",
    )


DESCRIPTION = "Run ingest -> bronze_to_silver -> silver_to_gold -> train (if needed) -> score -> publish"
SPEC = Job("pipeline", DESCRIPTION, _body, _arguments)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
