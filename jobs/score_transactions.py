"""Job `score_transactions`: score changed silver rows through the FraudScorer (Serve) or inline; MERGE predictions."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import JobContext, JobResult, job_parser, run_job


def _parser() -> argparse.ArgumentParser:
    p = job_parser("score_transactions", DESCRIPTION)
    p.add_argument("--mode", choices=("serve", "inline"), default="serve",
                   help="serve: through the FraudScorer deployment (default); inline: model in Ray Data actors")  # fmt: skip
    p.add_argument("--full", action="store_true", help="rescore every silver row, not only those changed since the last run")
    p.add_argument("--model-version", help="model version (default: the one Serve runs, or latest)")
    p.add_argument("--concurrency", type=int, default=1, help="scoring actors (default 1)")
    p.add_argument("--batch-size", type=int, default=50_000, help="rows per scoring call (default 50000)")
    return p


def deploy_models(settings: object, model_version: str | None) -> str:
    """Make sure the Serve app runs (deploying it if needed) with ``model_version``; returns the served version."""
    from ray import serve

    from rayapp.pipelines.score import APP_NAME, SCORER, serve_app_running
    from serve.app import build_app

    args = {"data_dir": str(settings.data_dir), "lake_uri": settings.lake_uri, "model_version": model_version or "latest"}  # type: ignore[attr-defined]
    if not serve_app_running():
        serve.start(http_options={"host": "127.0.0.1", "port": settings.serve_port})  # type: ignore[attr-defined]
        serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
    handle = serve.get_deployment_handle(SCORER, app_name=APP_NAME)
    served = handle.describe.remote().result()["model_version"]
    if model_version and model_version not in ("latest", served):
        serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)  # hot swap via user_config
        served = handle.describe.remote().result()["model_version"]
    return str(served)


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.pipelines.score import PREDICTIONS, score_transactions
    from rayapp.pipelines.silver import SILVER

    version = args.model_version
    if args.mode == "serve":
        version = deploy_models(ctx.settings, args.model_version)
    res = score_transactions(
        ctx.settings, ctx.ledger, ctx.run_id, mode=args.mode, full=args.full, model_version=version,
        concurrency=args.concurrency, batch_size=args.batch_size,
    )  # fmt: skip
    c = res.counts
    written = {PREDICTIONS: res.predictions_version} if res.predictions_version is not None else {}
    return JobResult(
        counts=c,
        versions_read={SILVER: res.silver_version},
        versions_written=written,
        details={"model_version": res.model_version, "mode": args.mode, "full": args.full},
        summary=(f"model {res.model_version} ({args.mode}): {c.get('rows_scored', 0)} rows scored; predictions "
                 f"{c.get('inserted', 0)} inserted, {c.get('updated', 0)} updated, {c.get('unchanged', 0)} unchanged"),
    )  # fmt: skip


def entrypoint(argv: list[str]) -> int:
    return run_job("score_transactions", argv, _parser(), _body)


DESCRIPTION = "Score silver rows changed since the last run via the FraudScorer Serve deployment (or inline)"
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(entrypoint(sys.argv[1:]))
