"""Logging setup: structured JSON lines (or plain text) carrying the run id and stage."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone

_RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("rayapp_run_id", default=None)
_STAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("rayapp_stage", default=None)


def bind(run_id: str | None = None, stage: str | None = None) -> None:
    """Attach a run id / stage to every log record emitted from now on in this context."""
    if run_id is not None:
        _RUN_ID.set(run_id)
    if stage is not None:
        _STAGE.set(stage)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _RUN_ID.get()
        record.stage = _STAGE.get()
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


def configure(fmt: str = "json", level: str = "INFO") -> None:
    """Install one stderr handler on the ``rayapp`` and ``jobs`` loggers (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(run_id)s %(stage)s] %(name)s: %(message)s"))
    for name in ("rayapp", "jobs"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.setLevel(level)
        lg.propagate = False
