"""Publish: fan what changed in the lake out to the serving stores through writer actors.

Plan of one run:

1. **What changed** since each store's watermark (the lake versions its last ``publish`` run
   read): silver rows inserted/updated (change data feed) plus transactions with new
   predictions; prediction rows; gold rows in files added since (silver_to_gold replaces whole
   date partitions, so new files are exactly the rebuilt rows); merchants whose gold rows were
   rebuilt. A store with no watermark gets everything.
2. **Fan-out**: Ray Data reads silver and joins each block with the latest predictions; the
   driver hands each batch (an object ref, shared by every store) to the store's writer actors —
   a pool per server-backed store, exactly one actor for an embedded engine, pinned to this node
   — with a bounded number of batches in flight per store (backpressure), then waits for all.
3. **Vectors**: merchant profiles and high-risk transactions are embedded (the Serve Embedder
   when the app runs, else an inline Ray Data actor) and written to the vector store.
4. **Outcome**: a batch a store still refuses after retries is a dead letter (Parquet file +
   ``_ledger/dlq`` record); the run is ``partial``. Every batch is written or dead-lettered
   before the run records its versions, so the watermark never skips data.

Writer actors restart when killed and Ray retries their in-flight batches; upserts are
idempotent and version-guarded, so a retry, a replay or a re-run never duplicates or regresses.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from rayapp import lake
from rayapp.errors import RayappError
from rayapp.ledger import DeadLetter, Ledger
from rayapp.pipelines.score import PREDICTIONS, ServeEmbedder, serve_app_running
from rayapp.pipelines.silver import GOLD_ACCOUNT, GOLD_MERCHANT, SILVER, changed_keys, uri
from rayapp.settings import Settings, is_remote, redact_url
from rayapp.sinks import STORES, is_embedded, make_sink
from rayapp.sinks.base import Dataset, RetryExhausted, short_error
from rayapp.transforms import serving as sv

logger = logging.getLogger(__name__)

#: The stores, in the order reports list them.
STORES_ORDER = tuple(STORES)
#: Lake tables a publish run reads; their versions form each store's watermark.
SOURCES = (SILVER, PREDICTIONS, GOLD_ACCOUNT, GOLD_MERCHANT)
GOLD_DATASETS = {GOLD_ACCOUNT: Dataset.DAILY_ACCOUNT_ACTIVITY, GOLD_MERCHANT: Dataset.MERCHANT_DAILY_STATS}
#: A writer that failed this many batches in a row stops retrying: later batches go straight to the DLQ.
BREAKER_AFTER = 3


# ---- writer actor ---------------------------------------------------------------------------------


def write_dead_letter(settings: Settings, run_id: str, store: str, dataset: str, block: pa.Table, error: str, attempts: int) -> DeadLetter:
    """Keep a refused batch as a Parquet file and describe it (the driver records it in the ledger)."""
    import pyarrow.parquet as pq

    dlq_id = uuid.uuid4().hex
    path = Ledger(settings).dlq_file_uri(run_id, store, f"{dataset}-{dlq_id}.parquet")
    fs, fs_path = lake.arrow_fs(settings, path)
    if not is_remote(path):
        os.makedirs(os.path.dirname(fs_path), exist_ok=True)
    pq.write_table(block, fs_path, filesystem=fs)
    return DeadLetter(dlq_id, store, dataset, run_id, error, attempts, block.num_rows, path)


class StoreWriter:
    """Ray actor owning one store's sink: retries transient errors with backoff, then dead-letters."""

    def __init__(self, settings: Settings, store: str, url: str, run_id: str) -> None:
        from rayapp import logs

        logs.configure(settings.log_format.value, settings.log_level)
        logs.bind(run_id=run_id, stage=f"publish:{store}")
        self.settings = settings
        self.store = store
        self.run_id = run_id
        self.sink = make_sink(store, url, settings.sink_options(store))
        self.policy = settings.retry_policy()
        self.ready = False
        self.failed_in_row = 0
        self.last_error: str | None = None

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
        if self.failed_in_row >= BREAKER_AFTER:
            error, attempts = f"not attempted: {self.failed_in_row} batches failed in a row (last: {self.last_error})", 0
        else:
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
                self.last_error = error = str(exc)
                attempts = exc.attempts
                logger.error("%s %s: %d rows failed after %d attempts: %s", self.store, dataset, block.num_rows, attempts, error)
        record_sink_write(self.store, dataset, time.monotonic() - start, ok=False)
        out.update(failed=block.num_rows, attempts=attempts, error=error)
        if dead_letter:
            out["dead_letter"] = write_dead_letter(self.settings, self.run_id, self.store, dataset, block, error, attempts)
        return out

    def counts(self) -> dict[str, int]:
        if not self.ready:
            self.sink.on_write_start()
            self.ready = True
        return self.sink.counts()

    def close(self) -> None:
        self._reset()


def start_writers(settings: Settings, stores: list[str], run_id: str) -> dict[str, list[Any]]:
    """Writer actor pools: ``writer_pool_size`` for servers, one actor pinned to this node for embedded engines."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor_cls = ray.remote(StoreWriter)
    here = ray.get_runtime_context().get_node_id()
    pools: dict[str, list[Any]] = {}
    for store in stores:
        url = settings.store_url(store)
        sink = make_sink(store, url, settings.sink_options(store))
        size = 1 if sink.single_writer else settings.writer_pool_size
        options: dict[str, Any] = {"num_cpus": settings.writer_cpus, "max_restarts": 3, "max_task_retries": 3}
        if is_embedded(url):  # the engine's files are on this node's disk
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(here, soft=False)
        pools[store] = [actor_cls.options(**options).remote(settings, store, url, run_id) for _ in range(size)]
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


# ---- fan-out with backpressure --------------------------------------------------------------------


@dataclass
class StoreTally:
    written: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)


class Fanout:
    """Hands batches to writer pools round-robin, never more than ``max_in_flight`` per actor queued."""

    def __init__(self, settings: Settings, run_id: str, pools: dict[str, list[Any]], max_in_flight: int, dead_letter: bool = True) -> None:
        self.settings = settings
        self.run_id = run_id
        self.pools = pools
        self.max_in_flight = max_in_flight
        self.dead_letter = dead_letter
        self.next = {s: 0 for s in pools}
        self.pending: dict[str, list[tuple[Any, str, Any, Any]]] = {s: [] for s in pools}
        self.tally = {s: StoreTally() for s in pools}

    def submit(self, store: str, dataset: Dataset, block_ref: Any, tag: Any = None) -> None:
        pool = self.pools[store]
        while len(self.pending[store]) >= self.max_in_flight * len(pool):
            self._collect(store, 1)
        actor = pool[self.next[store] % len(pool)]
        self.next[store] += 1
        ref = actor.write.remote(dataset.value, block_ref, self.dead_letter)
        self.pending[store].append((ref, dataset.value, block_ref, tag))

    def _collect(self, store: str, num: int) -> None:
        import ray

        pending = self.pending[store]
        done, _ = ray.wait([p[0] for p in pending], num_returns=min(num, len(pending)))
        done_set = set(done)
        keep = []
        for item in pending:
            if item[0] in done_set:
                self._record(store, item)
            else:
                keep.append(item)
        self.pending[store] = keep

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
                out["dead_letter"] = write_dead_letter(self.settings, self.run_id, store, dataset, block, error, 0)
        t.written[dataset] = t.written.get(dataset, 0) + int(out["written"])
        t.failed[dataset] = t.failed.get(dataset, 0) + int(out["failed"])
        if out.get("dead_letter") is not None:
            t.dead_letters.append(out["dead_letter"])
        if out.get("error"):
            t.errors.append(str(out["error"]))
        elif tag is not None:
            t.replayed.append(tag)

    def drain(self) -> dict[str, StoreTally]:
        for store in self.pools:
            while self.pending[store]:
                self._collect(store, len(self.pending[store]))
        return self.tally


# ---- what changed ---------------------------------------------------------------------------------


def watermark_prefix(settings: Settings, store: str) -> str:
    """Watermarks belong to a store *at its URL*: pointing a store elsewhere publishes everything there."""
    return f"{store}|{redact_url(settings.store_url(store))}|"


def store_watermark(settings: Settings, ledger: Ledger, store: str) -> dict[str, int] | None:
    """Lake versions the last succeeded/partial publish to ``store`` read (None: never published)."""
    prefix = watermark_prefix(settings, store)
    for run in ledger.runs(job="publish"):
        if run.status not in ("succeeded", "partial"):
            continue
        marks = {k[len(prefix) :]: int(v) for k, v in run.versions_read.items() if k.startswith(prefix)}
        if marks:
            return marks
    return None


def _version(settings: Settings, table: str) -> int | None:
    u = uri(settings, table)
    return lake.open_table(settings, u).version() if lake.table_exists(settings, u) else None


def _oldest(marks: list[dict[str, int] | None]) -> dict[str, int] | None:
    """The watermark every selected store has reached (None when any store needs everything)."""
    if not marks or any(m is None for m in marks):
        return None
    out: dict[str, int] = {}
    for table in SOURCES:
        values = [m[table] for m in marks if m is not None and table in m]
        if len(values) == len(marks):
            out[table] = min(values)
    return out


@dataclass
class Changes:
    versions: dict[str, int]
    since: dict[str, int] | None
    transaction_ids: pa.Array | None = None  # None: every transaction
    prediction_ids: pa.Array | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "versions": self.versions,
            "transactions": "all" if self.transaction_ids is None else len(self.transaction_ids),
            "predictions": "all" if self.prediction_ids is None else len(self.prediction_ids),
        }


def find_changes(settings: Settings, since: dict[str, int] | None) -> Changes:
    versions = {t: v for t in SOURCES if (v := _version(settings, t)) is not None}
    if SILVER not in versions:
        raise RayappError("no silver table yet: run ingest and bronze_to_silver first")
    ch = Changes(versions, since)
    if since is None or SILVER not in since:
        return ch
    silver_ids = changed_keys(settings, SILVER, since.get(SILVER), versions[SILVER])
    pred_ids: pa.Array | None = pa.array([], pa.string())
    if PREDICTIONS in versions:
        pred_ids = changed_keys(settings, PREDICTIONS, since.get(PREDICTIONS), versions[PREDICTIONS])
    if silver_ids is None or pred_ids is None:
        return ch
    ch.prediction_ids = pred_ids
    ch.transaction_ids = pc.unique(pa.chunked_array([silver_ids, pred_ids], pa.string()).combine_chunks())
    return ch


# ---- sources ----------------------------------------------------------------------------------------


def _silver_block(batch: pa.Table, *, settings: Settings, ids: pa.Array | None, latest: pa.Table | None) -> Iterator[pa.Table]:
    """Ray Data UDF: silver data files in, their (changed) rows joined with the latest prediction out."""
    import pyarrow.parquet as pq

    for file_uri in batch["path"].to_pylist():
        fs, path = lake.arrow_fs(settings, file_uri)
        t = sv.plain_strings(pq.read_table(path, filesystem=fs, columns=list(sv.TRANSACTION_SOURCE_COLUMNS)))
        if ids is not None:
            t = t.filter(pc.is_in(t["transaction_id"], ids))
        if t.num_rows:
            part = latest.filter(pc.is_in(latest["transaction_id"], t["transaction_id"])) if latest is not None else None
            yield sv.with_prediction(t, part)


def _merchant_block(batch: pa.Table, *, settings: Settings, merchants: pa.Array | None) -> pa.Table:
    import pyarrow.parquet as pq

    parts = []
    for file_uri in batch["path"].to_pylist():
        fs, path = lake.arrow_fs(settings, file_uri)
        t = sv.plain_strings(pq.read_table(path, filesystem=fs, columns=list(sv.MERCHANT_ATTRIBUTE_COLUMNS)))
        if merchants is not None:
            t = t.filter(pc.is_in(t["merchant_id"], merchants))
        parts.append(sv.merchant_attributes(t))
    return pa.concat_tables(parts) if parts else pa.table({})


def _files_dataset(files: list[str]) -> Any:
    import ray

    return ray.data.from_items([{"path": f} for f in files], override_num_blocks=max(1, len(files)))


def _latest_predictions(settings: Settings, version: int | None, ids: pa.Array | None) -> pa.Table | None:
    if version is None:
        return None
    preds = sv.plain_strings(lake.read_table(settings, uri(settings, PREDICTIONS), columns=["transaction_id", *sv.PREDICTION_COLUMNS], version=version))
    if ids is not None:
        preds = preds.filter(pc.is_in(preds["transaction_id"], ids))
    return sv.latest_predictions(preds)


def transaction_batches(settings: Settings, ch: Changes, batch_rows: int) -> Iterator[pa.Table]:
    """Changed silver rows with their latest prediction, in batches of ``batch_rows``."""
    if ch.transaction_ids is not None and len(ch.transaction_ids) == 0:
        return
    latest = _latest_predictions(settings, ch.versions.get(PREDICTIONS), ch.transaction_ids)
    files = lake.open_table(settings, uri(settings, SILVER), ch.versions[SILVER]).file_uris()
    ds = _files_dataset(files).map_batches(
        _silver_block, batch_size=1, batch_format="pyarrow", num_cpus=0.5,
        fn_kwargs={"settings": settings, "ids": ch.transaction_ids, "latest": latest},
    )  # fmt: skip
    yield from ds.iter_batches(batch_size=batch_rows, batch_format="pyarrow")


def prediction_batches(settings: Settings, ch: Changes, batch_rows: int) -> Iterator[pa.Table]:
    version = ch.versions.get(PREDICTIONS)
    if version is None or (ch.prediction_ids is not None and len(ch.prediction_ids) == 0):
        return
    preds = sv.plain_strings(lake.read_table(settings, uri(settings, PREDICTIONS), columns=["transaction_id", *sv.PREDICTION_COLUMNS], version=version))
    if ch.prediction_ids is not None:
        preds = preds.filter(pc.is_in(preds["transaction_id"], ch.prediction_ids))
    preds = preds.append_column("_version", preds["scored_at"])
    yield from _slices(preds, batch_rows)


def gold_rows(settings: Settings, table: str, ch: Changes) -> pa.Table | None:
    """Rows of the date partitions rewritten since the watermark (all rows without one), with ``_version``."""
    version = ch.versions.get(table)
    if version is None:
        return None
    dt = lake.open_table(settings, uri(settings, table), version)
    if ch.since is not None and table in ch.since:
        actions = pa.table(dt.get_add_actions(flatten=True))
        before = lake.open_table(settings, uri(settings, table), ch.since[table])
        old = set(pa.table(before.get_add_actions(flatten=True))["path"].to_pylist())
        pairs = zip(actions["path"].to_pylist(), actions["partition.activity_date"].to_pylist())
        days = sorted({str(d) for p, d in pairs if p not in old})
        if not days:
            return None
        rows = dt.to_pyarrow_table(partitions=[("activity_date", "in", days)])
    else:
        rows = dt.to_pyarrow_table()
    if rows.num_rows == 0:
        return None
    rows = sv.plain_strings(rows)
    return rows.append_column("_version", pa.repeat(pa.scalar(version, pa.int64()), rows.num_rows))


class Coalesce:
    """Gathers batches into tables of at least ``rows`` rows (the graph takes larger writes)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.parts: list[pa.Table] = []
        self.held = 0

    def add(self, batch: pa.Table) -> pa.Table | None:
        self.parts.append(batch)
        self.held += batch.num_rows
        return self.flush() if self.held >= self.rows else None

    def flush(self) -> pa.Table | None:
        if not self.parts:
            return None
        out = pa.concat_tables(self.parts) if len(self.parts) > 1 else self.parts[0]
        self.parts, self.held = [], 0
        return out


def _slices(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


def merchant_profile_rows(settings: Settings, ch: Changes, rebuilt: pa.Table | None) -> pa.Table | None:
    """Profiles of merchants whose gold rows were rebuilt (every merchant without a watermark)."""
    version = ch.versions.get(GOLD_MERCHANT)
    if version is None or rebuilt is None or rebuilt.num_rows == 0:
        return None
    merchants = pc.unique(rebuilt["merchant_id"])
    gold = sv.plain_strings(lake.read_table(settings, uri(settings, GOLD_MERCHANT), columns=["merchant_id", "txn_count", "fraud_count"], version=version))
    stats = sv.merchant_stats(gold.filter(pc.is_in(gold["merchant_id"], merchants)))
    files = lake.open_table(settings, uri(settings, SILVER), ch.versions[SILVER]).file_uris()
    partials = _files_dataset(files).map_batches(
        _merchant_block, batch_size=4, batch_format="pyarrow", num_cpus=0.5, fn_kwargs={"settings": settings, "merchants": merchants}
    ).take_all()  # fmt: skip
    attrs = sv.merchant_attributes_of([pa.Table.from_pylist(partials)] if partials else [])
    return sv.merchant_profiles(attrs, stats, version)


# ---- embedding -------------------------------------------------------------------------------------


class InlineEmbedder:
    """Ray Data actor: the sentence model loaded once, used when the Serve app is not running."""

    def __init__(self, column: str = "text") -> None:
        from rayapp.models.embedder import Embedder

        self.column = column
        self.embedder = Embedder(threads=1)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch[self.column].to_pylist()
        keep = [i for i, t in enumerate(texts) if t is not None]
        vecs = self.embedder.embed([texts[i] for i in keep])
        values: list[Any] = [None] * len(texts)
        for j, i in enumerate(keep):
            values[i] = vecs[j]
        return batch.append_column("vector", pa.array(values, pa.list_(pa.float32())))


def embed(rows: pa.Table, use_serve: bool, chunk: int = 512) -> Iterator[pa.Table]:
    """``rows`` with a ``vector`` column (null where ``text`` is null): through the Serve Embedder's
    handle, or one inline model actor (half a CPU, so it fits beside Serve and the writers).

    Not a Ray Data pipeline on purpose: ``from_arrow`` starts 1-CPU metadata tasks that can wait
    forever on a small cluster whose CPUs the writers and replicas hold."""
    import ray

    if rows.num_rows == 0:
        return
    if use_serve:
        embedder = _ServeEmbedNullable()
        for part in _slices(rows, chunk):
            yield embedder(part)
        return
    actor = ray.remote(num_cpus=0.5)(InlineEmbedder).remote()
    try:
        pending = [actor.__call__.remote(part) for part in _slices(rows, chunk)]
        for ref in pending:
            yield ray.get(ref)
    finally:
        ray.kill(actor)


class _ServeEmbedNullable(ServeEmbedder):
    """ServeEmbedder that leaves rows without text without a vector (they are deletions)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        has = pc.is_valid(batch[self.column])
        embedded = super().__call__(batch.filter(has)) if pc.any(has).as_py() else None
        values: list[Any] = [None] * batch.num_rows
        if embedded is not None:
            vecs = embedded["vector"].to_pylist()
            for j, i in enumerate(pc.indices_nonzero(has).to_pylist()):
                values[i] = vecs[j]
        return batch.append_column("vector", pa.array(values, pa.list_(pa.float32())))


def submit_vectors(fan: Fanout, profiles: pa.Table | None, risky: list[pa.Table]) -> None:
    """Embed merchant profiles and risky-transaction rows, and hand them to the vector writers."""
    import ray

    use_serve = serve_app_running()
    logger.info("embedding through %s", "the Serve Embedder" if use_serve else "an inline model actor")
    for dataset, rows in ((Dataset.MERCHANT_VECTORS, profiles), (Dataset.TRANSACTION_VECTORS, pa.concat_tables(risky) if risky else None)):
        if rows is not None:
            for part in embed(rows, use_serve):
                fan.submit("vector", dataset, ray.put(part))


# ---- the job ----------------------------------------------------------------------------------------


@dataclass
class PublishResult:
    status: str
    counts: dict[str, int]
    versions_read: dict[str, int]
    details: dict[str, Any]
    dead_letters: list[DeadLetter]


def _select_stores(stores: list[str] | None) -> list[str]:
    chosen = list(stores or STORES)
    unknown = [s for s in chosen if s not in STORES]
    if unknown:
        raise RayappError(f"unknown store {unknown[0]!r}; stores: {', '.join(STORES)}")
    return chosen


def publish(settings: Settings, ledger: Ledger, run_id: str, *, stores: list[str] | None = None, full: bool = False) -> PublishResult:
    """Publish lake changes to ``stores`` (default: all four). See the module docstring."""
    import ray

    chosen = _select_stores(stores)
    marks = {s: (None if full else store_watermark(settings, ledger, s)) for s in chosen}
    ch = find_changes(settings, _oldest(list(marks.values())))
    logger.info("publish plan: %s", ch.describe())
    table_sinks = [s for s in chosen if s not in ("vector", "graph")]
    pools = start_writers(settings, chosen, run_id)
    fan = Fanout(settings, run_id, pools, settings.writer_max_in_flight)
    vector_txns: list[pa.Table] = []
    graph_txns = Coalesce(settings.batch_rows("graph"))
    rows_read = 0
    try:
        for batch in transaction_batches(settings, ch, settings.writer_batch_rows):
            rows_read += batch.num_rows
            ref = ray.put(batch)
            for s in table_sinks:
                fan.submit(s, Dataset.TRANSACTIONS, ref)
            if "graph" in chosen and (block := graph_txns.add(batch)) is not None:
                fan.submit("graph", Dataset.TRANSACTIONS, ray.put(block))
            if "vector" in chosen:
                vector_txns.append(sv.transaction_vector_rows(batch, settings.vector_min_score, with_deletes=ch.since is not None))
        if (block := graph_txns.flush()) is not None:
            fan.submit("graph", Dataset.TRANSACTIONS, ray.put(block))
        for batch in prediction_batches(settings, ch, settings.writer_batch_rows):
            ref = ray.put(batch)
            for s in table_sinks:
                fan.submit(s, Dataset.PREDICTIONS, ref)
        rebuilt_merchants = None
        for table, dataset in GOLD_DATASETS.items():
            rows = gold_rows(settings, table, ch)
            if table == GOLD_MERCHANT:
                rebuilt_merchants = rows
            if rows is None:
                continue
            for part in _slices(rows, settings.writer_batch_rows):
                ref = ray.put(part)
                for s in table_sinks:
                    fan.submit(s, dataset, ref)
        if "vector" in chosen:
            submit_vectors(fan, merchant_profile_rows(settings, ch, rebuilt_merchants), vector_txns)
        tally = fan.drain()
    finally:
        stop_writers(pools)
    dead = [d for t in tally.values() for d in t.dead_letters]
    ledger.record_dead_letters(dead)
    record_dlq_size(ledger)
    counts: dict[str, int] = {"rows_read": rows_read, "dead_letters": len(dead)}
    details: dict[str, Any] = {"changes": ch.describe(), "stores": {}}
    for s in chosen:
        t = tally[s]
        counts[f"{s}.written"] = sum(t.written.values())
        counts[f"{s}.failed"] = sum(t.failed.values())
        details["stores"][s] = {"url": redact_url(settings.store_url(s)), "written": t.written, "failed": t.failed,
                                "errors": sorted(set(t.errors))[:5]}  # fmt: skip
    counts["rows_written"] = sum(counts[f"{s}.written"] for s in chosen)
    versions = {watermark_prefix(settings, s) + table: v for s in chosen for table, v in ch.versions.items()}
    versions.update(ch.versions)
    return PublishResult("partial" if dead else "succeeded", counts, versions, details, dead)


def record_dlq_size(ledger: Ledger) -> None:
    from rayapp.metrics import set_dlq_size

    pending = ledger.dead_letters()
    for store in STORES:
        set_dlq_size(store, sum(d.rows for d in pending if d.store == store))


def replay_dead_letters(settings: Settings, ledger: Ledger, run_id: str, *, store: str | None = None) -> PublishResult:
    """Re-send pending dead letters (of one store or all); those written are marked replayed."""
    import pyarrow.parquet as pq
    import ray

    if store is not None:
        _select_stores([store])
    letters = ledger.dead_letters(store=store)
    counts: dict[str, int] = {"dead_letters": len(letters), "replayed": 0, "still_failing": 0}
    if not letters:
        return PublishResult("succeeded", counts, {}, {"replayed": []}, [])
    stores = sorted({d.store for d in letters})
    pools = start_writers(settings, stores, run_id)
    fan = Fanout(settings, run_id, pools, settings.writer_max_in_flight, dead_letter=False)
    by_id = {d.dlq_id: d for d in letters}
    try:
        for d in letters:
            fs, path = lake.arrow_fs(settings, d.path)
            fan.submit(d.store, Dataset(d.dataset), ray.put(pq.read_table(path, filesystem=fs)), tag=d.dlq_id)
        tally = fan.drain()
    finally:
        stop_writers(pools)
    updates = []
    replayed = {i for t in tally.values() for i in t.replayed}
    for dlq_id, d in by_id.items():
        if dlq_id in replayed:
            updates.append(DeadLetter(**{**d.__dict__, "status": "replayed", "resolved_run_id": run_id}))
        else:
            err = "; ".join(sorted(set(tally[d.store].errors)))[:500] or d.error
            updates.append(DeadLetter(**{**d.__dict__, "error": err, "attempts": d.attempts + settings.writer_retries}))
    ledger.record_dead_letters(updates)
    for d in updates:
        if d.status == "replayed":
            _remove_file(settings, d.path)
    record_dlq_size(ledger)
    counts["replayed"] = len(replayed)
    counts["still_failing"] = len(letters) - len(replayed)
    counts["rows_written"] = sum(sum(t.written.values()) for t in tally.values())
    for s in stores:
        counts[f"{s}.written"] = sum(tally[s].written.values())
        counts[f"{s}.failed"] = sum(tally[s].failed.values())
    status = "partial" if counts["still_failing"] else "succeeded"
    return PublishResult(status, counts, {}, {"replayed": sorted(replayed)}, [])


def _remove_file(settings: Settings, path: str) -> None:
    try:
        fs, p = lake.fsspec_fs(settings, path)
        fs.rm(p)
    except Exception as exc:  # noqa: BLE001 - the record says replayed; a leftover file is harmless
        logger.warning("could not remove replayed dead letter %s: %s", path, exc)


def store_counts(settings: Settings, stores: list[str] | None = None) -> dict[str, dict[str, int]]:
    """What each store holds now (opened from this process; embedded engines must be free)."""
    out: dict[str, dict[str, int]] = {}
    for s in _select_stores(stores):
        sink = make_sink(s, settings.store_url(s), settings.sink_options())
        try:
            sink.on_write_start()
            out[s] = sink.counts()
        finally:
            sink.close()
    return out
