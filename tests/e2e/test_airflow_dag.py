"""The Airflow DAGs of cluster/airflow, with Airflow's own loader and `dag.test()` against a local
two-node test cluster. Runs when Airflow is installed (`pip install "apache-airflow>=2.9"`); skipped
otherwise — the Jobs API logic the DAGs call is tested everywhere (test_ray_jobs, test_job_submit)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# Before Airflow reads its configuration: these DAGs are the dags-folder bundle (Airflow 3's dag.test()
# runs a DAG the bundle serialized), without the examples.
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parents[2] / "cluster" / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
pytest.importorskip("airflow")

from tests.conftest import REPO  # noqa: E402
from tests.e2e.test_job_submit import TOKEN, cluster  # noqa: E402,F401  (the two-node cluster fixture)

pytestmark = pytest.mark.e2e
DAGS = REPO / "cluster" / "airflow"


def _dagbag() -> Any:
    try:  # Airflow 3
        from airflow.dag_processing.dagbag import DagBag

        return DagBag(dag_folder=str(DAGS))
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

        return DagBag(dag_folder=str(DAGS), include_examples=False)


def test_dags_load_with_airflows_own_loader() -> None:
    bag = _dagbag()
    assert bag.import_errors == {}
    assert {"rayapp_ingest", "rayapp_publish", "rayapp_pipeline", "rayapp_kuberay"} <= set(bag.dag_ids)
    ingest = bag.get_dag("rayapp_ingest")
    assert [t.task_id for t in ingest.topological_sort()] == ["ingest_api", "ingest", "bronze_to_silver"]
    publish = bag.get_dag("rayapp_publish")
    assert [t.task_id for t in publish.topological_sort()] == ["silver_to_gold", "score_transactions", "publish", "check_freshness"]
    assert ingest.max_active_runs == 1 and all(t.retries == 3 for t in ingest.tasks)


def test_dag_test_runs_the_ingest_dag_on_the_test_cluster(cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from deltalake import DeltaTable

    from rayapp.tools.ray_jobs import submit_and_wait

    runtime_env = {"working_dir": str(REPO), "excludes": ["data/", ".venv/", ".git/", "*.egg-info/"],
                   "env_vars": {"RAYAPP_DATA_DIR": cluster["data"]}}  # fmt: skip
    submit_and_wait(cluster["dashboard"], "python -m jobs.generate --rows 3000 --files 1", runtime_env=runtime_env,
                    headers={"Authorization": f"Bearer {TOKEN}"}, poll_s=1)  # fmt: skip
    monkeypatch.setenv("RAYAPP_RAY_DASHBOARD", cluster["dashboard"])
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("RAYAPP_RUNTIME_ENV_JSON", json.dumps(runtime_env))
    monkeypatch.setenv("RAYAPP_POLL_S", "1")
    dag = _dagbag().get_dag("rayapp_ingest")
    run = dag.test()
    assert str(getattr(run.state, "value", run.state)).lower() == "success"
    lake = Path(cluster["data"]) / "lake"
    assert DeltaTable(str(lake / "bronze" / "transactions")).count() == 3000
    assert DeltaTable(str(lake / "silver" / "transactions")).count() > 0
