"""Worker and actor log lines carry the driver's run id and stage, in the driver's format."""

from __future__ import annotations

import contextvars
import glob
import json
import logging
import os
import time

import pytest

from rayapp import logs

pytestmark = pytest.mark.integration


def _worker_line(pid: int, needle: str) -> str:
    import ray

    logs_dir = ray._private.worker._global_node.get_logs_dir_path()
    deadline = time.time() + 30
    while time.time() < deadline:
        for path in glob.glob(os.path.join(logs_dir, f"worker-*-{pid}.err")):
            with open(path, encoding="utf-8", errors="replace") as fh:
                found = [line.strip() for line in fh if needle in line]
            if found:
                return found[-1]
        time.sleep(0.5)
    raise AssertionError(f"no line with {needle!r} in the logs of worker {pid}")


def _in_driver_context() -> None:
    import ray

    @ray.remote(num_cpus=0)
    def work(message: str) -> int:
        logging.getLogger("rayapp.pipelines.silver").warning(message)
        return os.getpid()

    logs.configure("json", "INFO")
    logs.bind(run_id="bronze_to_silver-20261124T000000-abc123", stage="bronze_to_silver")
    time.sleep(1.2)  # a worker that logged for an earlier test re-reads the driver's context at most once a second
    pid = ray.get(work.remote("quarantined 3 rows (json)"))
    doc = json.loads(_worker_line(pid, "quarantined 3 rows (json)"))
    assert doc["run_id"] == "bronze_to_silver-20261124T000000-abc123" and doc["stage"] == "bronze_to_silver"
    assert doc["level"] == "WARNING" and doc["logger"] == "rayapp.pipelines.silver"

    # The next stage of the same driver, watched on a terminal: text lines with the new run id.
    logs.configure("text", "INFO")
    logs.bind(run_id="publish-20261124T000100-def456", stage="publish")
    time.sleep(1.2)  # workers re-read the driver's context at most once a second
    pid = ray.get(work.remote("wrote 5 rows (text)"))
    line = _worker_line(pid, "wrote 5 rows (text)")
    assert "WARNING [publish-20261124T000100-def456] wrote 5 rows (text)" in line
    assert not line.startswith("{")


def test_worker_logs_carry_run_id_and_stage(ray_local: None) -> None:
    try:
        contextvars.copy_context().run(_in_driver_context)  # leaves this process's own context alone
    finally:
        logs.configure(os.environ.get("RAYAPP_LOG_FORMAT", "text"), "INFO")
        logs.publish()


def test_auto_format_follows_the_terminal() -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    class Pipe:
        def isatty(self) -> bool:
            return False

    assert logs.resolve_format("auto", Tty()) == "text" and logs.resolve_format("auto", Pipe()) == "json"
    assert logs.resolve_format("json", Tty()) == "json" and logs.resolve_format("text", Pipe()) == "text"


def _serve_client_level(driver_level: str) -> int:
    import ray

    @ray.remote(num_cpus=0)
    def level_after_align() -> int:
        from ray import serve  # noqa: F401 - importing Serve sets its client logger to INFO

        logs.align_serve_client()
        return logging.getLogger("ray.serve").getEffectiveLevel()

    logs.configure("text", driver_level)
    logs.publish()
    time.sleep(1.2)  # workers re-read the driver's context at most once a second
    return ray.get(level_after_align.remote())


def test_a_quiet_driver_keeps_serve_clients_in_workers_quiet(ray_local: None) -> None:
    # A Data actor holding a deployment handle announces its router at INFO ("Started <...Router...>"):
    # under a driver at WARNING (the demo on a terminal) that line must not reach the console.
    try:
        assert contextvars.copy_context().run(_serve_client_level, "WARNING") == logging.WARNING
        assert contextvars.copy_context().run(_serve_client_level, "INFO") == logging.INFO
    finally:
        logs.configure(os.environ.get("RAYAPP_LOG_FORMAT", "text"), "INFO")
        logs.publish()
