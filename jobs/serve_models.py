"""Job `serve_models`: deploy the Serve application (FraudScorer, Embedder, HTTP API) with this
run's Settings and keep it up until Ctrl-C (``rayapp serve`` runs this job)."""

from __future__ import annotations

import argparse
import sys
import time

from rayapp.jobkit import Job, JobContext, JobResult


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-version", help="fraud model version (default: latest)")
    p.add_argument("--detach", action="store_true", help="return once deployed (the app stays up while its Ray cluster does)")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.errors import RayappError
    from serve.app import deploy

    try:
        version = deploy(ctx.settings, args.model_version)
    except FileNotFoundError as exc:
        raise RayappError(str(exc)) from None
    host = "127.0.0.1" if ctx.settings.serve_host in ("0.0.0.0", "::") else ctx.settings.serve_host
    base = f"http://{host}:{ctx.settings.serve_port}"
    print(f"serving fraud model {version}, the embedder and the /v1 API at {base} (routes and schemas: {base}/docs)")
    if ctx.settings.api_auth:
        print('  every route but /healthz needs a key: export RAYAPP_KEY=$(rayapp keys create --name me --scopes datasets:read,search,lookup,score)')
        auth = ' -H "Authorization: Bearer $RAYAPP_KEY"'
    else:
        auth = ""
        print("  API keys are off (RAYAPP_API_AUTH=false): local development only")
    print(f"  curl {base}/healthz   curl{auth} {base}/models   curl{auth} {base}/v1/datasets")
    print(f"  curl{auth} -X POST {base}/embed -d '{{\"texts\": [\"card purchase\"]}}'")
    if not args.detach:
        print("Ctrl-C stops it.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return JobResult(details={"model_version": version, "url": base})


DESCRIPTION = "Deploy the models (FraudScorer, Embedder) and their HTTP API on Ray Serve"
SPEC = Job("serve_models", DESCRIPTION, _body, _arguments, lease=False)  # long-lived; writes no table
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
