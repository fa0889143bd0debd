"""Prometheus metrics through ``ray.util.metrics``: exported on each node's metrics port.

Every metric is declared once in :data:`METRICS`. Ray exports an application metric as
``ray_<name>``, and a counter whose name does not end in ``_total`` gets that suffix
(:func:`exported_name`); the README, the Grafana dashboard and the alert rules in
``cluster/monitoring/`` use the exported names, and tests check them against a live endpoint.
The label holding a job's name is ``job``.

Every value goes through one long-lived actor per cluster (``rayapp_metrics``, detached, no CPU):
a job's driver is often gone before Ray's metrics agent has exported what it recorded, and a
counter that lives in one actor only ever grows, as Prometheus expects. Recording never fails
the work it describes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter | gauge | histogram
    description: str
    labels: tuple[str, ...]


_DURATION_BUCKETS = [0.1, 0.5, 1, 5, 15, 60, 300, 1800]
_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("rayapp_rows_total", "counter", "Rows handled by a job, by kind (rows_read, rows_written, quarantined, rows_scored)",
               ("job", "kind")),  # fmt: skip
        Metric("rayapp_files_rejected_total", "counter", "Landing files ingest refused (unreadable, wrong schema)", ("job",)),
        Metric("rayapp_runs_total", "counter", "Job runs by outcome (succeeded, partial, failed, mismatch, abandoned)", ("job", "status")),
        Metric("rayapp_run_seconds", "histogram", "Job run duration in seconds", ("job",)),
        Metric("rayapp_last_success_timestamp_seconds", "gauge", "Unix time a job last ended succeeded (or partial)", ("job",)),
        Metric("rayapp_sink_write_seconds", "histogram", "Batch write latency per store and table, retries included", ("store", "dataset")),
        Metric("rayapp_sink_failures_total", "counter", "Batches a store refused after retries (dead-lettered)", ("store", "dataset")),
        Metric("rayapp_dlq_rows", "gauge", "Rows waiting in the dead-letter queue", ("store",)),
        Metric("rayapp_reconcile_mismatches", "gauge", "Rows a store differs from the lake by (last reconcile)", ("store",)),
        Metric("rayapp_alerts_sent_total", "counter", "Alerts delivered", ("condition", "notifier")),
        Metric("rayapp_alert_failures_total", "counter", "Alerts a notifier could not take", ("condition", "notifier")),
    )
}

#: ``counts`` keys a run reports that go to ``rayapp_rows_total`` as its ``kind`` label.
ROW_KINDS = ("rows_read", "rows_written", "quarantined", "rows_scored")


def exported_name(name: str) -> str:
    """The name Prometheus sees: Ray prefixes ``ray_`` and gives counters a ``_total`` suffix."""
    metric = METRICS[name]
    suffix = "_total" if metric.kind == "counter" and not name.endswith("_total") else ""
    return f"ray_{name}{suffix}"


def exported_series(name: str) -> list[str]:
    """Every series name a metric is scraped as (a histogram's ``_bucket``, ``_count``, ``_sum``)."""
    base = exported_name(name)
    return [f"{base}_{s}" for s in ("bucket", "count", "sum")] if METRICS[name].kind == "histogram" else [base]


class MetricsActor:
    """Holds the Ray metric objects; takes each metric's definition with the value, so an actor
    started by an older version of the code records newer metrics too.

    Ray's metrics agent forgets a gauge value nobody re-reports within two export intervals, so
    gauges are set again every ``refresh_s`` until they change.
    """

    def __init__(self, refresh_s: float = 5.0) -> None:
        import threading

        self.live: dict[str, Any] = {}
        self.gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.lock = threading.Lock()
        self.refresh_s = refresh_s
        threading.Thread(target=self._refresh, daemon=True, name="rayapp-gauges").start()

    def _refresh(self) -> None:
        import time

        while True:
            time.sleep(self.refresh_s)
            with self.lock:
                for (name, tags), value in self.gauges.items():
                    self.live[name].set(value, tags=dict(tags))

    def record(self, spec: tuple[str, str, str, tuple[str, ...], list[float]], op: str, value: float, tags: dict[str, str]) -> None:
        name, kind, description, labels, boundaries = spec
        with self.lock:
            metric = self.live.get(name)
            if metric is None:
                from ray.util import metrics

                cls = {"counter": metrics.Counter, "gauge": metrics.Gauge, "histogram": metrics.Histogram}[kind]
                extra = {"boundaries": boundaries} if kind == "histogram" else {}
                metric = self.live[name] = cls(name, description=description, tag_keys=tuple(labels), **extra)
            getattr(metric, op)(value, tags=tags)
            if kind == "gauge":
                self.gauges[(name, tuple(sorted(tags.items())))] = value

    def ping(self) -> bool:
        return True


ACTOR_NAME, ACTOR_NAMESPACE = "rayapp_metrics", "rayapp"
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray's resource of the head node
_actor: dict[str, Any] = {}


def _recorder() -> Any:
    import ray

    key = ray.get_runtime_context().get_job_id()
    if key not in _actor:
        _actor.clear()
        # On the head node: it lives as long as the cluster (workers come and go with the autoscaler).
        _actor[key] = ray.remote(MetricsActor).options(
            name=ACTOR_NAME, namespace=ACTOR_NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0, max_restarts=-1,
            resources={HEAD_NODE_RESOURCE: 0.001},
        ).remote()  # fmt: skip
    return _actor[key]


def _spec(name: str) -> tuple[str, str, str, tuple[str, ...], list[float]]:
    m = METRICS[name]
    return (m.name, m.kind, m.description, m.labels, _LATENCY_BUCKETS if name == "rayapp_sink_write_seconds" else _DURATION_BUCKETS)


def _send(items: list[tuple[str, str, float, dict[str, str]]], wait: bool) -> None:
    """``(metric, op, value, tags)`` to the metrics actor; ``wait``: until it has them (a driver
    about to exit), else fire and forget (a writer's batch latencies)."""
    try:
        import ray

        if not ray.is_initialized() or not items:
            return
        actor = _recorder()
        refs = [actor.record.remote(_spec(name), op, value, tags) for name, op, value, tags in items]
        if wait:
            ray.get(refs, timeout=30)
    except Exception as exc:  # noqa: BLE001 - metrics never fail a run or a write
        logger.warning("could not record metrics: %s", exc)


def record_run(job: str, status: str, seconds: float, counts: dict[str, int], ended_at: float) -> None:
    """A finished run: its outcome and duration, rows per kind, files rejected, last success time."""
    items: list[tuple[str, str, float, dict[str, str]]] = []
    for kind in ROW_KINDS:
        if (n := int(counts.get(kind, 0) or 0)) > 0:
            items.append(("rayapp_rows_total", "inc", n, {"job": job, "kind": kind}))
    if (rejected := int(counts.get("files_rejected", 0) or 0)) > 0:
        items.append(("rayapp_files_rejected_total", "inc", rejected, {"job": job}))
    items.append(("rayapp_runs_total", "inc", 1, {"job": job, "status": status}))
    items.append(("rayapp_run_seconds", "observe", seconds, {"job": job}))
    if status in ("succeeded", "partial"):
        items.append(("rayapp_last_success_timestamp_seconds", "set", ended_at, {"job": job}))
    _send(items, wait=True)


def record_sink_write(store: str, dataset: str, seconds: float, ok: bool) -> None:
    """Latency of one batch write (retries included) and failed batches, per store and table."""
    tags = {"store": store, "dataset": dataset}
    items = [("rayapp_sink_write_seconds", "observe", seconds, tags)]
    if not ok:
        items.append(("rayapp_sink_failures_total", "inc", 1, tags))
    _send(items, wait=False)


def set_dlq_size(store: str, rows: int) -> None:
    """Rows waiting in the dead-letter queue per store."""
    _send([("rayapp_dlq_rows", "set", rows, {"store": store})], wait=True)


def set_reconcile_mismatches(store: str, rows: int) -> None:
    """Rows in which a store still differs from the lake after the last ``reconcile`` run."""
    _send([("rayapp_reconcile_mismatches", "set", rows, {"store": store})], wait=True)


def record_alert(condition: str, notifier: str, ok: bool) -> None:
    """Alerts sent, and notifier failures (a notifier that is down never fails a run)."""
    name = "rayapp_alerts_sent_total" if ok else "rayapp_alert_failures_total"
    _send([(name, "inc", 1, {"condition": condition, "notifier": notifier})], wait=True)
