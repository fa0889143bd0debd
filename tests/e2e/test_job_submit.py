"""A real two-node local Ray cluster (`ray start --head` + a worker), the pipeline via `ray job submit`."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayapp.errors import PortInUseError
from tests.conftest import REPO, _free_port, on_a_free_port

pytestmark = pytest.mark.e2e

RAY = str(Path(sys.executable).with_name("ray"))


#: This test cluster's own token, in the environment of every process: nothing written to ~/.ray.
TOKEN = secrets.token_hex(16)


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYAPP_", "RAY_ADDRESS", "RAY_AUTH_TOKEN"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, RAYAPP_DATA_DIR=str(tmp / "data"), PYTHONPATH=str(REPO))
    # The nodes (and the job's `python`) come from this interpreter's environment, activated or not.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def cluster(tmp_path: Path) -> dict[str, str]:
    env = _env(tmp_path)
    temp_dir = Path("/tmp") / f"rayapp-e2e-{os.getpid()}"  # short: Ray's socket paths have a length limit
    from rayapp.tools.raynodes import stop

    def start_head(gcs: int) -> tuple[int, int, int]:
        dash, metrics = _free_port(), _free_port()
        head = subprocess.run(
            [RAY, "start", "--head", f"--port={gcs}", "--num-cpus=1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
             f"--temp-dir={temp_dir}", "--include-dashboard=true", "--disable-usage-stats", f"--metrics-export-port={metrics}"],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        if head.returncode != 0 and any(m in head.stderr.lower() for m in ("already in use", "already occupied", "failed to bind")):
            stop(gcs)  # whatever of this attempt started, by its own GCS port
            raise PortInUseError(head.stderr[-500:])  # another process took one of the ports first: new ports
        assert head.returncode == 0, head.stderr[-2000:]
        return gcs, dash, metrics

    gcs, dash, metrics = on_a_free_port(start_head)
    try:
        worker = subprocess.run(
            [RAY, "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1", "--disable-usage-stats"],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr[-2000:]
        yield {"dashboard": f"http://127.0.0.1:{dash}", "data": env["RAYAPP_DATA_DIR"], "tmp": str(tmp_path),
               "metrics": f"http://127.0.0.1:{metrics}/metrics"}  # fmt: skip
    finally:
        stop(gcs)  # this cluster's processes only, found by its GCS port
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_pipeline_via_ray_job_submit_on_two_nodes(cluster: dict[str, str]) -> None:
    env = _env(Path(cluster["tmp"]))

    def ray_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout)

    nodes = ray_cli("list", "nodes", "--address", cluster["dashboard"], "--format", "json")
    assert nodes.returncode == 0, nodes.stderr[-2000:]
    assert sum(1 for n in json.loads(nodes.stdout) if n["state"] == "ALIVE") == 2
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:  # token authentication is on: no token, no Jobs API
        urllib.request.urlopen(f"{cluster['dashboard']}/api/jobs/", timeout=30)
    assert refused.value.code in (401, 403)
    entry = (
        "python -m jobs.generate --rows 6000 --files 2 && "
        "python -m jobs.pipeline --score-mode inline"
    )
    runtime_env = {"working_dir": str(REPO), "excludes": ["data/", ".venv/", ".git/", "*.egg-info/"],
                   "env_vars": {"RAYAPP_DATA_DIR": cluster["data"], "RAYAPP_LOG_FORMAT": "json"}}  # fmt: skip
    deadline = time.time() + 300  # on a loaded 2-core machine the agent has taken minutes
    while True:  # a fresh head's job agent may not be up yet: Ray answers "No available agent … try again later"
        submit = subprocess.run(
            [RAY, "job", "submit", "--address", cluster["dashboard"], "--no-wait",
             "--runtime-env-json", json.dumps(runtime_env), "--", "bash", "-c", entry],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if submit.returncode == 0 or "No available agent" not in submit.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert submit.returncode == 0, submit.stderr[-3000:]
    found = re.search(r"raysubmit_[A-Za-z0-9]+", submit.stdout + submit.stderr)
    assert found, submit.stdout[-2000:]
    job_id = found.group(0)
    deadline = time.time() + 900
    status = ""
    while time.time() < deadline:  # the Jobs API, through the CLI (which presents the auth token)
        res = ray_cli("job", "status", "--address", cluster["dashboard"], job_id)
        m = re.search(rf"{job_id}'?:? ?(succeeded|failed|stopped)\b", res.stdout + res.stderr, re.IGNORECASE)
        if m:
            status = m.group(1).upper()
            break
        time.sleep(3)
    logs = ray_cli("job", "logs", "--address", cluster["dashboard"], job_id).stdout
    assert status == "SUCCEEDED", logs[-4000:]
    assert "pipeline: succeeded" in logs and '"run_id": "pipeline-' in logs  # structured logs carry the run id

    from deltalake import DeltaTable

    lake = Path(cluster["data"]) / "lake"
    assert DeltaTable(str(lake / "bronze" / "transactions")).count() == 6000
    silver = DeltaTable(str(lake / "silver" / "transactions")).count()
    assert silver > 0 and DeltaTable(str(lake / "silver" / "predictions")).count() == silver
    assert (Path(cluster["data"]) / "models" / "fraud" / "latest").is_file()
    from rayapp.lake import Lake
    from rayapp.ledger import Ledger
    from rayapp.settings import load_settings

    publish = Ledger(Lake(load_settings(overrides={"data_dir": cluster["data"]}))).last_run("publish")
    assert publish is not None and publish.status == "succeeded"
    gold = sum(DeltaTable(str(lake / "gold" / t)).count() for t in ("daily_account_activity", "merchant_daily_stats"))
    # every silver row, its prediction and every gold row, once; the graph takes the transactions
    assert publish.counts["postgres.written"] == 2 * silver + gold and publish.counts["graph.written"] == silver

    # Custom metrics reach the head's Prometheus endpoint under exactly the names the README,
    # the Grafana dashboard and the alert rules use (they outlive the job's driver: one actor holds them).
    import urllib.request

    from rayapp.metrics import METRICS, exported_series

    declared = {series for name in METRICS for series in exported_series(name)}
    wanted = {"ray_rayapp_rows_total", "ray_rayapp_runs_total", "ray_rayapp_run_seconds_bucket", "ray_rayapp_last_success_timestamp_seconds",
              "ray_rayapp_sink_write_seconds_bucket", "ray_rayapp_dlq_rows"}  # fmt: skip
    series: dict[str, list[str]] = {}
    deadline = time.time() + 90
    while time.time() < deadline and not wanted <= set(series):
        time.sleep(3)
        with urllib.request.urlopen(cluster["metrics"], timeout=10) as resp:
            series = {}
            for line in resp.read().decode().splitlines():
                if line.startswith("ray_rayapp_"):
                    series.setdefault(line.split("{", 1)[0].split(" ", 1)[0], []).append(line)
    assert wanted <= set(series), sorted(series)
    assert set(series) <= declared, set(series) - declared  # nothing exported under a name we do not document
    rows = series["ray_rayapp_rows_total"]
    assert any('job="ingest"' in x and 'kind="rows_written"' in x for x in rows) and not any("stage=" in x for x in rows)
    assert any('job="publish"' in x and 'status="succeeded"' in x for x in series["ray_rayapp_runs_total"])
    assert any('store="postgres"' in x for x in series["ray_rayapp_sink_write_seconds_bucket"])

    # What schedulers call (cluster/airflow): the Jobs API with the CLI's exit-code semantics.
    from rayapp.tools.ray_jobs import JobFailed, submit_and_wait

    auth = {"Authorization": f"Bearer {TOKEN}"}
    ok = submit_and_wait(cluster["dashboard"], "python -m jobs.check_freshness", runtime_env=runtime_env, headers=auth, poll_s=1)
    assert ok.status == "SUCCEEDED" and ok.exit_code == 0
    with pytest.raises(JobFailed) as usage:
        submit_and_wait(cluster["dashboard"], "python -m jobs.ingest --no-such-flag", runtime_env=runtime_env, headers=auth, poll_s=1)
    assert usage.value.outcome.exit_code == 2 and not usage.value.retryable  # retrying bad arguments does not help
    with pytest.raises(JobFailed) as busy:
        submit_and_wait(cluster["dashboard"], "bash -c 'exit 75'", runtime_env=runtime_env, headers=auth, poll_s=1)
    assert busy.value.outcome.exit_code == 75 and busy.value.retryable  # a held lease: try again later
