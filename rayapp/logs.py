"""Logging: JSON lines or human text, every line carrying the run id and stage — in the driver
and in every Ray worker and actor of the job.

``log_format`` is ``auto`` (text on a terminal, JSON lines otherwise), ``text`` or ``json``.
The driver resolves it once and publishes the format, level, run id and stage in Ray's internal
key-value store under its Ray job id (:func:`publish`); ``rayapp.logs.worker_setup``, Ray's
``worker_process_setup_hook`` for the job, configures the same handler in each worker process,
whose filter reads the run id and stage from there (cached for a second), so a Ray Data task
logs with the stage that is running now. Code that knows its own run (a writer actor) binds it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any

_RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("rayapp_run_id", default=None)
_STAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("rayapp_stage", default=None)
_KV_NAMESPACE = "rayapp"
_state: dict[str, str] = {"format": "json", "level": "INFO"}


def resolve_format(fmt: str, stream: Any = None) -> str:
    """``auto`` → ``text`` when ``stream`` (stderr) is a terminal, ``json`` otherwise."""
    if fmt != "auto":
        return fmt
    stream = sys.stderr if stream is None else stream
    return "text" if getattr(stream, "isatty", lambda: False)() else "json"


def is_terminal() -> bool:
    """Whether the user watches this process's output (stderr is where logs and progress go)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bind(run_id: str | None = None, stage: str | None = None) -> None:
    """Attach a run id / stage to every log record emitted from now on in this context (and, in a
    driver connected to Ray, to the job's workers)."""
    if run_id is not None:
        _RUN_ID.set(run_id)
    if stage is not None:
        _STAGE.set(stage)
    publish()


def _kv_key(driver_only: bool = False) -> str | None:
    import ray

    if not ray.is_initialized():
        return None
    if driver_only and ray._private.worker.global_worker.mode != ray._private.worker.SCRIPT_MODE:
        return None  # a worker or actor binding its own run never speaks for the driver
    return f"logctx:{ray.get_runtime_context().get_job_id()}"


def publish() -> None:
    """Driver side: the log format, level, run id and stage for this Ray job's workers."""
    try:
        key = _kv_key(driver_only=True)
        if key is None:
            return
        from ray.experimental.internal_kv import _internal_kv_put

        doc = {**_state, "run_id": _RUN_ID.get(), "stage": _STAGE.get()}
        _internal_kv_put(key, json.dumps(doc), overwrite=True, namespace=_KV_NAMESPACE)
    except Exception:  # noqa: BLE001 - logging context never fails a run
        pass


_cache: dict[str, Any] = {"at": 0.0, "doc": {}}


def _from_driver() -> dict[str, Any]:
    """Worker side: what the driver published, re-read at most once a second."""
    now = time.monotonic()
    if now - _cache["at"] < 1.0:
        return _cache["doc"]
    _cache["at"] = now
    try:
        key = _kv_key()
        if key is not None:
            from ray.experimental.internal_kv import _internal_kv_get

            raw = _internal_kv_get(key, namespace=_KV_NAMESPACE)
            _cache["doc"] = json.loads(raw) if raw else {}
    except Exception:  # noqa: BLE001
        pass
    return _cache["doc"]


class _ContextFilter(logging.Filter):
    def __init__(self, from_driver: bool = False) -> None:
        super().__init__()
        self.from_driver = from_driver

    def filter(self, record: logging.LogRecord) -> bool:
        run_id, stage = _RUN_ID.get(), _STAGE.get()
        if run_id is None and self.from_driver:
            doc = _from_driver()
            run_id, stage = doc.get("run_id"), doc.get("stage")
        record.run_id, record.stage = run_id, stage
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "run_id": getattr(record, "run_id", None),
            "stage": getattr(record, "stage", None),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """``12:03:04 INFO    [ingest-20261124T021412-e42be6] message`` (the stage too when the run
    id does not start with it, as in ``publish:postgres``)."""

    def format(self, record: logging.LogRecord) -> str:
        run_id, stage = getattr(record, "run_id", None), getattr(record, "stage", None)
        where = run_id or stage or "-"
        if stage and run_id and not run_id.startswith(f"{stage}-"):
            where = f"{run_id} {stage}"
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{ts} {record.levelname:<7} [{where}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _DriverFormatter(logging.Formatter):
    """In a worker: the format the driver chose (a worker may start before the driver says)."""

    json, text = JsonFormatter(), TextFormatter()

    def format(self, record: logging.LogRecord) -> str:
        return (self.text if _from_driver().get("format") == "text" else self.json).format(record)


def configure(fmt: str = "auto", level: str = "INFO", *, from_driver: bool = False) -> str:
    """Install one stderr handler on the ``rayapp`` and ``jobs`` loggers (idempotent); returns the
    resolved format (``json`` or ``text``)."""
    resolved = resolve_format(fmt)
    _state.update(format=resolved, level=level)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter(from_driver))
    handler.setFormatter(_DriverFormatter() if from_driver else JsonFormatter() if resolved == "json" else TextFormatter())
    for name in ("rayapp", "jobs"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.setLevel(level)
        lg.propagate = False
    return resolved


def worker_setup() -> None:
    """Ray ``worker_process_setup_hook``: the driver's format and level, its run id and stage."""
    doc = _from_driver()
    configure(doc.get("format", "json"), doc.get("level", "INFO"), from_driver=True)


def align_serve_client() -> None:
    """Serve's import sets its client logger to INFO (handle routers announce themselves there); hold it
    to the driver's rayapp level when that is stricter (back to INFO when it is not), so a quiet run stays
    quiet in Data actors."""
    level = logging.getLevelName(_from_driver().get("level") or _state["level"])
    logging.getLogger("ray.serve").setLevel(max(level, logging.INFO) if isinstance(level, int) else logging.INFO)


def runtime_env_hook() -> dict[str, Any]:
    """What ``ray.init`` adds to the job's runtime env; nothing when the submitted job already has a
    setup hook of its own (Ray refuses two)."""
    import os

    submitted = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if submitted and "worker_process_setup_hook" in (json.loads(submitted).get("runtime_env") or {}):
        return {}
    return {"worker_process_setup_hook": "rayapp.logs.worker_setup"}
