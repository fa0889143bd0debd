"""Job `pipeline`: every stage in order under one pipeline run id (resume, select, dry run).

Each stage is called with this run's Settings object (built once) and its own options: no
argv round trip between stages. A stage's outcome is its run's outcome (a partial publish makes
the pipeline partial).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rayapp.jobkit import Job, JobContext, JobResult
from rayapp.settings import Settings

#: Stage order; a stage whose job module does not exist (yet) is left out.
STAGES = ("ingest_api", "ingest", "bronze_to_silver", "silver_to_gold", "train_fraud_model", "score_transactions", "publish")
#: Stages a flag appends, in this order: --verify, --check-freshness, --maintain.
EXTRA_STAGES = ("reconcile", "check_freshness", "maintain")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--landing", help="landing URI for ingest (default: RAYAPP_LANDING_URI)")
    p.add_argument("--retrain", action="store_true", help="train a new fraud model even when one exists")
    p.add_argument("--resume", action="store_true", help="continue the last failed pipeline run from its failed stage")
    p.add_argument("--only", action="append", default=[], metavar="STAGE", help="run only these stages (repeatable)")
    p.add_argument("--skip", action="append", default=[], metavar="STAGE", help="skip these stages (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit (starts nothing, records nothing)")
    p.add_argument("--score-mode", choices=("serve", "inline"), default="serve", help="score_transactions --mode")
    p.add_argument("--allow-partial", action="store_true", help="exit 0 when publish was partial (dead letters)")
    p.add_argument("--verify", action="store_true", help="end with `reconcile`: prove every store equals the lake (exit 4 if not)")
    p.add_argument("--check-freshness", action="store_true", help="end with `check_freshness`: alert on sources silent for too long")
    p.add_argument("--maintain", action="store_true", help="end with `maintain`: compact, checkpoint and vacuum the lake")


def _validate(args: argparse.Namespace) -> None:
    from rayapp.errors import ConfigError

    for name in [*args.only, *args.skip]:
        if name not in (*STAGES, *EXTRA_STAGES):
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")


def _stage_options(name: str, args: argparse.Namespace) -> dict[str, object]:
    if name == "ingest":
        return {"landing": args.landing}
    if name == "score_transactions":
        return {"mode": args.score_mode}
    return {}


def _stages(settings: Settings, args: argparse.Namespace, current_run_id: str | None) -> tuple[list, str | None]:
    from rayapp.lake import Lake
    from rayapp.ledger import Ledger
    from rayapp.model_store import has_model
    from rayapp.orchestrate import Stage, resume_point, select

    stages: list[Stage] = []
    extra = [name for name, flag in zip(EXTRA_STAGES, (args.verify, args.check_freshness, args.maintain)) if flag]
    for name in (*STAGES, *extra):
        try:
            spec: Job = importlib.import_module(f"jobs.{name}").SPEC
        except ModuleNotFoundError:
            continue
        options = _stage_options(name, args)
        stage_args = spec.options(**options)

        def run(parent: str, spec: Job = spec, stage_args: argparse.Namespace = stage_args) -> int:
            return spec.execute(settings, stage_args, parent_run_id=parent)

        stage = Stage(name, run, options)
        if name == "train_fraud_model" and not args.retrain and has_model(settings):
            stage.skip_reason = "a model exists (use --retrain)"
        if name == "ingest_api" and not settings.sources:
            stage.skip_reason = "no API sources configured"
        stages.append(stage)
    select(stages, args.only, args.skip)
    resumed_from = None
    if args.resume:
        resumed_from, done = resume_point(Ledger(Lake(settings)), current_run_id)
        for s in stages:
            if s.name in done and not s.skip_reason:
                s.skip_reason = f"done in {resumed_from}"
    return stages, resumed_from


def _plan(settings: Settings, args: argparse.Namespace) -> str:
    from rayapp.orchestrate import describe

    stages, _ = _stages(settings, args, None)
    return f"pipeline plan:\n{describe(stages)}"


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.errors import RayappError
    from rayapp.orchestrate import run_stages

    stages, resumed_from = _stages(ctx.settings, args, ctx.run_id)
    outcome = run_stages(stages, ctx.run_id)
    if outcome.failed:
        raise RayappError(f"stage {outcome.failed} failed; later stages did not run (fix it, then `rayapp run pipeline --resume`)")
    ran = [s["stage"] for s in outcome.stages if s["status"] in ("succeeded", "partial", "mismatch")]
    partial = [s["stage"] for s in outcome.stages if s["status"] == "partial"]
    mismatch = any(s["status"] == "mismatch" for s in outcome.stages)
    return JobResult(
        counts={"stages_run": len(ran)},
        details={"stages": outcome.stages, "resumed_from": resumed_from},
        status="mismatch" if mismatch else "partial" if partial else "succeeded",
        summary=f"pipeline stages run: {', '.join(map(str, ran)) or 'none'}" + (f" (partial: {', '.join(partial)})" if partial else ""),
    )


DESCRIPTION = "Run ingest_api (configured sources) -> ingest -> bronze_to_silver -> silver_to_gold -> train (if needed) -> score -> publish (-> reconcile with --verify)"
SPEC = Job("pipeline", DESCRIPTION, _body, _arguments, validate=_validate, plan=_plan)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
