"""Writer actors and dead letters: one actor pool per store, retries with backoff, a circuit
breaker, and a Parquet dead letter for every batch a store still refuses.

Writer actors restart when killed and Ray retries their in-flight batches; upserts are
idempotent and version-guarded, so a retry never duplicates or regresses.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from rayapp.catalog import Dataset
from rayapp.lake import Lake
from rayapp.ledger import DeadLetter, Ledger
from rayapp.progress import Progress
from rayapp.sinks import store as store_spec
from rayapp.sinks.base import RetryExhausted, RetryPolicy, short_error
from rayapp.urls import is_remote

logger = logging.getLogger(__name__)

#: After this many failed batches in a row a writer's breaker opens: later batches go straight to the
#: DLQ until ``writer_breaker_cooldown_s`` has passed; then one batch is tried (half-open) and a
#: success closes the breaker again.
BREAKER_AFTER = 3


def retry_policy(lake: Lake) -> RetryPolicy:
    s = lake.settings
    return RetryPolicy(attempts=s.writer_retries, base_s=s.writer_backoff_s, cap_s=s.writer_backoff_max_s)


def write_dead_letter(lake: Lake, run_id: str, store: str, dataset: str, block: pa.Table, error: str, attempts: int) -> DeadLetter:
    """Keep a refused batch as a Parquet file and describe it (the driver records it in the ledger)."""
    import pyarrow.parquet as pq

    dlq_id = uuid.uuid4().hex
    path = Ledger(lake).dlq_file_uri(run_id, store, f"{dataset}-{dlq_id}.parquet")
    fs, fs_path = lake.arrow_fs(path)
    if not is_remote(path):
        os.makedirs(os.path.dirname(fs_path), exist_ok=True)
    pq.write_table(block, fs_path, filesystem=fs)
    return DeadLetter(dlq_id, store, dataset, run_id, error, attempts, block.num_rows, path)


class StoreWriter:
    """Ray actor owning one store's sink: retries transient errors with backoff, then dead-letters."""

    def __init__(self, lake: Lake, store: str, url: str, run_id: str) -> None:
        from rayapp import logs

        settings = lake.settings
        logs.worker_setup()  # as Ray's setup hook does (a job may bring its own hook instead of ours)
        logs.bind(run_id=run_id, stage=f"publish:{store}")
        self.lake = lake
        self.store = store
        self.run_id = run_id
        self.sink = store_spec(store).make(settings, url)
        self.policy = retry_policy(lake)
        self.ready = False
        self.failed_in_row = 0
        self.last_error: str | None = None
        self.opened_at = 0.0
        self.cooldown_s = settings.writer_breaker_cooldown_s

    def pid(self) -> int:
        return os.getpid()

    def _reset(self, _exc: BaseException | None = None) -> None:
        try:
            self.sink.close()
        except Exception:  # noqa: BLE001 - a broken client may fail to close; we reconnect anyway
            pass
        self.ready = False

    def _attempt(self, dataset: Dataset, block: pa.Table) -> int:
        if not self.ready:
            self.sink.on_write_start()
            self.ready = True
        return self.sink.write(dataset, block)

    def write(self, dataset: str, block: pa.Table, dead_letter: bool = True) -> dict[str, Any]:
        """Write one batch. Returns an outcome dict (counts, attempts, error, dead letter)."""
        from rayapp.metrics import record_sink_write

        out: dict[str, Any] = {"store": self.store, "dataset": dataset, "rows": block.num_rows, "written": 0, "failed": 0,
                               "attempts": 0, "error": None, "dead_letter": None}  # fmt: skip
        start = time.monotonic()
        if self.failed_in_row >= BREAKER_AFTER and time.monotonic() - self.opened_at < self.cooldown_s:
            error, attempts = f"not attempted: {self.failed_in_row} batches failed in a row (last: {self.last_error})", 0
        else:  # closed, or half-open after the cool-down: a success closes the breaker
            try:
                written, attempts = self.policy.call(
                    lambda: self._attempt(Dataset(dataset), block), f"{self.store} {dataset} ({block.num_rows} rows)", on_retry=self._reset
                )
                self.failed_in_row = 0
                out.update(written=written, attempts=attempts)
                record_sink_write(self.store, dataset, time.monotonic() - start, ok=True)
                return out
            except RetryExhausted as exc:
                self._reset()
                self.failed_in_row += 1
                if self.failed_in_row >= BREAKER_AFTER:
                    self.opened_at = time.monotonic()
                self.last_error = error = str(exc)
                attempts = exc.attempts
                logger.error("%s %s: %d rows failed after %d attempts: %s", self.store, dataset, block.num_rows, attempts, error)
        record_sink_write(self.store, dataset, time.monotonic() - start, ok=False)
        out.update(failed=block.num_rows, attempts=attempts, error=error)
        if dead_letter:
            out["dead_letter"] = write_dead_letter(self.lake, self.run_id, self.store, dataset, block, error, attempts)
        return out

    def counts(self) -> dict[str, int]:
        if not self.ready:
            self.sink.on_write_start()
            self.ready = True
        return self.sink.counts()

    def finish(self, dataset: str | None = None) -> str | None:
        """The writes (of ``dataset``, or all) are done: the sink ends what they left open (see
        ``StoreSink.finish``), retrying transient errors like a write. Returns the error, if any."""
        what = f"{self.store} finishing {dataset or 'its writes'}"
        try:
            self.policy.call(lambda: self.sink.finish(None if dataset is None else Dataset(dataset)), what, on_retry=self._reset)
        except RetryExhausted as exc:
            logger.error("%s: %s", what, exc)
            return f"finishing {dataset or 'the writes'}: {exc}"
        return None

    def close(self) -> None:
        self._reset()


def start_writers(lake: Lake, stores: list[str], run_id: str) -> dict[str, list[Any]]:
    """Writer actor pools: ``writer_pool_size`` for servers, one actor pinned to this node for embedded engines."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    settings = lake.settings
    actor_cls = ray.remote(StoreWriter)
    here = ray.get_runtime_context().get_node_id()
    pools: dict[str, list[Any]] = {}
    for name in stores:
        spec = store_spec(name)
        url = spec.url(settings)
        size = 1 if spec.single_writer(url) else settings.writer_pool_size
        options: dict[str, Any] = {"num_cpus": settings.writer_cpus, "max_restarts": 3, "max_task_retries": 3}
        if spec.is_embedded(url):  # the engine's files are on this node's disk
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(here, soft=False)
        pools[name] = [actor_cls.options(**options).remote(lake, name, url, run_id) for _ in range(size)]
    return pools


def stop_writers(pools: dict[str, list[Any]]) -> None:
    """Close every sink, then end the actors and wait for their processes to exit (an embedded
    engine's files are free for the next process)."""
    import ray

    actors = [a for pool in pools.values() for a in pool]
    pids: list[int] = []
    for a in actors:
        try:
            ray.get(a.close.remote(), timeout=120)
            pids.append(ray.get(a.pid.remote(), timeout=30))
        except Exception as exc:  # noqa: BLE001 - a dead actor has nothing left to close
            logger.warning("closing a writer: %s", short_error(exc))
    for a in actors:
        ray.kill(a, no_restart=True)
    _wait_exited(pids)


def _wait_exited(pids: list[int], timeout_s: float = 30.0) -> None:
    """Wait for local writer processes to exit (pids on other nodes simply are not found here)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                proc = psutil.Process(pid)
                if proc.status() == psutil.STATUS_ZOMBIE or "StoreWriter" not in " ".join(proc.cmdline()):
                    break
            except psutil.Error:
                break
            time.sleep(0.05)


@dataclass
class StoreTally:
    written: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)
    #: Errors ending what the writes left open (a first load's indexes): the rows are in, the next run ends it.
    unfinished: list[str] = field(default_factory=list)


class Fanout:
    """Hands batches to writer pools round-robin, never more than ``max_in_flight`` per actor queued."""

    def __init__(self, lake: Lake, run_id: str, pools: dict[str, list[Any]], dead_letter: bool = True,
                 progress: Progress | None = None) -> None:  # fmt: skip
        self.lake = lake
        self.progress = progress
        self.submitted = {s: 0 for s in pools}
        self.run_id = run_id
        self.pools = pools
        self.max_in_flight = lake.settings.writer_max_in_flight
        self.dead_letter = dead_letter
        self.next = {s: 0 for s in pools}
        self.pending: dict[str, list[tuple[Any, str, Any, Any]]] = {s: [] for s in pools}
        self.tally = {s: StoreTally() for s in pools}
        self.closing: dict[str, set[str]] = {s: set() for s in pools}  # datasets all submitted, not all written
        self.finishing: list[tuple[str, Any]] = []  # writers' finish calls (see finish_when_written)

    def expect(self, store: str, rows: int) -> None:
        """Rows a store will be sent beyond the total known up front (counted once: submitting them
        raises the total no further)."""
        if self.progress is not None:
            self.progress.expect(store, rows)

    def submit(self, store: str, dataset: Dataset, block_ref: Any, tag: Any = None, rows: int = 0) -> None:
        pool = self.pools[store]
        if self.progress is not None and rows:  # beyond the total known or announced (an incremental run's gold): raise it
            self.submitted[store] += rows
            extra = self.submitted[store] - self.progress.counts[store].total
            if extra > 0:
                self.progress.expect(store, extra)
        while len(self.pending[store]) >= self.max_in_flight * len(pool):
            self._collect(store, 1)
        actor = pool[self.next[store] % len(pool)]
        self.next[store] += 1
        ref = actor.write.remote(dataset.value, block_ref, self.dead_letter)
        self.pending[store].append((ref, dataset.value, block_ref, tag))

    def finish_when_written(self, store: str, dataset: Dataset) -> None:
        """Every block of ``dataset`` has been submitted to ``store``: once they are written, one of
        its writers ends what they left open (a first load's indexes), while the others go on."""
        self.closing[store].add(dataset.value)
        self._finish_written(store)

    def _finish_written(self, store: str) -> None:
        for name in sorted(self.closing[store]):
            if all(item[1] != name for item in self.pending[store]):
                self.closing[store].discard(name)
                pool = self.pools[store]
                actor = pool[self.next[store] % len(pool)]
                self.next[store] += 1
                self.finishing.append((store, actor.finish.remote(name)))

    def poll(self) -> None:
        """Record every write that has finished, without waiting (progress stays current while the
        driver waits on something else, such as the embedding model)."""
        for store, pending in self.pending.items():
            if pending:
                self._collect(store, len(pending), timeout=0)
        if self.progress is not None:
            self.progress.tick()

    def _collect(self, store: str, num: int, timeout: float | None = None) -> None:
        import ray

        pending = self.pending[store]
        done, _ = ray.wait([p[0] for p in pending], num_returns=min(num, len(pending)), timeout=timeout)
        done_set = set(done)
        keep = []
        for item in pending:
            if item[0] in done_set:
                self._record(store, item)
            else:
                keep.append(item)
        self.pending[store] = keep
        if self.closing[store]:
            self._finish_written(store)

    def _record(self, store: str, item: tuple[Any, str, Any, Any]) -> None:
        import ray

        ref, dataset, block_ref, tag = item
        t = self.tally[store]
        try:
            out = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - the actor died for good: the driver keeps the batch
            block = ray.get(block_ref)
            error = f"writer actor lost: {short_error(exc)}"
            out = {"written": 0, "failed": block.num_rows, "error": error, "dead_letter": None}
            if self.dead_letter:
                out["dead_letter"] = write_dead_letter(self.lake, self.run_id, store, dataset, block, error, 0)
        if self.progress is not None:
            self.progress.advance(store, int(out["written"]) + int(out["failed"]))
        t.written[dataset] = t.written.get(dataset, 0) + int(out["written"])
        t.failed[dataset] = t.failed.get(dataset, 0) + int(out["failed"])
        if out.get("dead_letter") is not None:
            t.dead_letters.append(out["dead_letter"])
        if out.get("error"):
            t.errors.append(str(out["error"]))
        elif tag is not None:
            t.replayed.append(tag)

    def drain(self) -> dict[str, StoreTally]:
        """Wait for every write; then every writer ends what the writes left open, sharing the work."""
        import ray

        for store in self.pools:
            while self.pending[store]:
                self._collect(store, len(self.pending[store]))
        self.finishing += [(store, a.finish.remote()) for store, pool in self.pools.items() for a in pool]
        finishing, self.finishing = self.finishing, []
        for (store, _), error in zip(finishing, ray.get([ref for _, ref in finishing])):
            if error is not None:
                self.tally[store].unfinished.append(error)
        return self.tally
