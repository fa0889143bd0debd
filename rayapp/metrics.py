"""Prometheus metrics through ``ray.util.metrics``: exported on each node's metrics port.

Counters are created lazily (they need a connected Ray process) and cached per process.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

_METRICS: dict[str, Any] = {}


def _get(name: str, kind: str, description: str, tags: tuple[str, ...]) -> Any:
    metric = _METRICS.get(name)
    if metric is None:
        from ray.util import metrics

        cls = {"counter": metrics.Counter, "gauge": metrics.Gauge, "histogram": metrics.Histogram}[kind]
        kwargs: dict[str, Any] = {"description": description, "tag_keys": tags}
        if kind == "histogram":
            kwargs["boundaries"] = [0.1, 0.5, 1, 5, 15, 60, 300, 1800]
        metric = _METRICS[name] = cls(name, **kwargs)
    return metric


def record_run(job: str, status: str, seconds: float, counts: dict[str, int]) -> None:
    """Rows processed / written / quarantined per stage, run outcomes and durations."""
    try:
        import ray

        if not ray.is_initialized():
            return
        rows = _get("rayapp_rows_total", "counter", "Rows handled by a stage, by kind", ("stage", "kind"))
        for kind in ("rows_read", "rows_written", "quarantined", "rows_scored", "files_rejected"):
            n = int(counts.get(kind, 0) or 0)
            if n > 0:
                rows.inc(n, tags={"stage": job, "kind": kind})
        _get("rayapp_runs_total", "counter", "Job runs by outcome", ("stage", "status")).inc(1, tags={"stage": job, "status": status})
        _get("rayapp_run_seconds", "histogram", "Job run duration", ("stage",)).observe(seconds, tags={"stage": job})
    except Exception as exc:  # noqa: BLE001 - metrics never fail a run
        logger.warning("could not record metrics: %s", exc)


def _safe(fn: Any) -> None:
    try:
        import ray

        if ray.is_initialized():
            fn()
    except Exception as exc:  # noqa: BLE001 - metrics never fail a write
        logger.warning("could not record metrics: %s", exc)


def record_sink_write(store: str, dataset: str, seconds: float, ok: bool) -> None:
    """Latency of one batch write (retries included) and failed batches, per store and table."""

    def _do() -> None:
        tags = {"store": store, "dataset": dataset}
        _get("rayapp_sink_write_seconds", "histogram", "Batch write latency per store", ("store", "dataset")).observe(seconds, tags=tags)
        if not ok:
            _get("rayapp_sink_failures_total", "counter", "Batches a store refused after retries", ("store", "dataset")).inc(1, tags=tags)

    _safe(_do)


def set_dlq_size(store: str, rows: int) -> None:
    """Rows waiting in the dead-letter queue per store."""
    _safe(lambda: _get("rayapp_dlq_rows", "gauge", "Rows in the dead-letter queue", ("store",)).set(rows, tags={"store": store}))


def set_reconcile_mismatches(store: str, rows: int) -> None:
    """Rows in which a store still differs from the lake after the last ``reconcile`` run."""
    _safe(lambda: _get("rayapp_reconcile_mismatches", "gauge", "Rows a store differs from the lake by (last reconcile)",
                       ("store",)).set(rows, tags={"store": store}))  # fmt: skip


def record_alert(condition: str, notifier: str, ok: bool) -> None:
    """Alerts sent, and notifier failures (a notifier that is down never fails a run)."""

    def _do() -> None:
        tags = {"condition": condition, "notifier": notifier}
        name = "rayapp_alerts_sent_total" if ok else "rayapp_alert_failures_total"
        _get(name, "counter", "Alerts delivered" if ok else "Alerts a notifier could not take", ("condition", "notifier")).inc(1, tags=tags)

    _safe(_do)
