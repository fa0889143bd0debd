"""Airflow DAGs that run rayapp's stages on a Ray cluster through the Ray Jobs API.

Copy this file into the DAGs folder (rayapp must be importable by the Airflow workers, for
``rayapp.tools.ray_jobs``, which needs only ``ray[default]``'s Jobs SDK) and set:

    RAYAPP_RAY_DASHBOARD      the cluster's dashboard / Jobs API, e.g. http://ray-head:8265
    RAY_AUTH_TOKEN            the cluster's token when token authentication is on
    RAYAPP_RUNTIME_ENV_JSON   optional runtime_env for every job (e.g. {"working_dir": "..."}; the
                              image's rayapp is used when unset)
    RAYAPP_JOB_ARGS           optional arguments for every job (e.g. "--data-dir /data")

Four DAGs:
  rayapp_ingest     every 15 minutes: ingest_api -> ingest -> bronze_to_silver
  rayapp_publish    hourly:           silver_to_gold -> score_transactions -> publish, and check_freshness
  rayapp_pipeline   on demand:        the whole `pipeline` job as one Ray job
  rayapp_kuberay    on demand:        a KubeRay RayJob made from kuberay/ray-job.pipeline.yaml (KUBERAY_MANIFEST)

Each task keeps the CLI's exit-code semantics (rayapp.tools.ray_jobs): exit 75 (another run holds
the stage's lease) and other failures are retried; 2 (bad arguments), 3 (partial publish) and 4
(a store differs from the lake) fail at once — retrying does not fix them.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, task
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task
    from airflow.exceptions import AirflowException, AirflowFailException

DEFAULTS = {"owner": "data-platform", "retries": 3, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True}
START = datetime(2025, 1, 1)


def run_stage(entry: str, allow_partial: bool = False) -> dict[str, Any]:
    """Submit ``python -m jobs.<entry>`` and wait; map the outcome onto Airflow's retry semantics."""
    from rayapp.tools.ray_jobs import JobFailed, submit_and_wait

    address = os.environ.get("RAYAPP_RAY_DASHBOARD", "http://127.0.0.1:8265")
    token = os.environ.get("RAY_AUTH_TOKEN")
    runtime_env = json.loads(os.environ["RAYAPP_RUNTIME_ENV_JSON"]) if os.environ.get("RAYAPP_RUNTIME_ENV_JSON") else None
    extra = shlex.split(os.environ.get("RAYAPP_JOB_ARGS", ""))
    entrypoint = " ".join(["python", "-m", f"jobs.{entry.split()[0]}", *entry.split()[1:], *map(shlex.quote, extra)])
    try:
        outcome = submit_and_wait(address, entrypoint, runtime_env=runtime_env, headers={"Authorization": f"Bearer {token}"} if token else None,
                                  poll_s=float(os.environ.get("RAYAPP_POLL_S", "5")), timeout_s=3 * 3600, allow_partial=allow_partial)  # fmt: skip
    except JobFailed as exc:
        if exc.retryable:
            raise AirflowException(str(exc)) from None
        raise AirflowFailException(str(exc)) from None
    return {"job_id": outcome.job_id, "exit_code": outcome.exit_code, "seconds": round(outcome.seconds, 1)}


def stage(name: str, entry: str | None = None, allow_partial: bool = False) -> Any:
    @task(task_id=name)
    def _run() -> dict[str, Any]:
        return run_stage(entry or name, allow_partial)

    return _run()


with DAG("rayapp_ingest", schedule="*/15 * * * *", start_date=START, catchup=False, max_active_runs=1, default_args=DEFAULTS,
         tags=["rayapp"], doc_md="Landing (files and REST API sources) -> bronze -> silver, every 15 minutes.") as ingest_dag:  # fmt: skip
    stage("ingest_api") >> stage("ingest") >> stage("bronze_to_silver")

with DAG("rayapp_publish", schedule="30 * * * *", start_date=START, catchup=False, max_active_runs=1, default_args=DEFAULTS,
         tags=["rayapp"], doc_md="Silver -> gold -> scores -> serving stores, hourly; then freshness.") as publish_dag:  # fmt: skip
    stage("silver_to_gold") >> stage("score_transactions", "score_transactions --mode inline") >> stage("publish") >> stage("check_freshness")

with DAG("rayapp_pipeline", schedule=None, start_date=START, catchup=False, max_active_runs=1, default_args=DEFAULTS,
         tags=["rayapp"], doc_md="The whole pipeline as one Ray job (its stages are recorded under one pipeline run id).") as pipeline_dag:  # fmt: skip
    stage("pipeline", "pipeline --score-mode inline")


def _rayjob_from_manifest(path: Path, name: str) -> dict[str, Any]:
    import yaml

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    body = next(d for d in docs if d.get("kind") == "RayJob")
    body["metadata"] = {**body.get("metadata", {}), "name": name}
    return body


with DAG("rayapp_kuberay", schedule=None, start_date=START, catchup=False, max_active_runs=1, default_args=DEFAULTS,
         tags=["rayapp", "kubernetes"], doc_md="A RayJob (its own RayCluster) from kuberay/ray-job.pipeline.yaml, waited for.") as kuberay_dag:  # fmt: skip

    @task(task_id="rayjob")
    def rayjob(**context: Any) -> dict[str, Any]:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        namespace = os.environ.get("KUBERAY_NAMESPACE", "default")
        manifest = Path(os.environ.get("KUBERAY_MANIFEST", Path(__file__).resolve().parents[2] / "kuberay" / "ray-job.pipeline.yaml"))
        name = f"rayapp-pipeline-{context['ts_nodash'].lower()}"[:63]
        api = client.CustomObjectsApi()
        try:
            api.create_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", _rayjob_from_manifest(manifest, name))
        except client.ApiException as exc:
            if exc.status != 409:  # 409: this try already created it (a retried task waits for the same RayJob)
                raise
        deadline = time.monotonic() + 3 * 3600
        while time.monotonic() < deadline:
            status = api.get_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs", name).get("status", {})
            if status.get("jobStatus") == "SUCCEEDED":
                return {"rayjob": name, "status": "SUCCEEDED"}
            if status.get("jobStatus") in ("FAILED", "STOPPED") or status.get("jobDeploymentStatus") == "Failed":
                raise AirflowException(f"RayJob {name}: {status.get('jobStatus')} {status.get('message', '')}")
            time.sleep(15)
        raise AirflowException(f"RayJob {name} still running after 3 h")

    rayjob()
