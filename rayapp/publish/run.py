"""The publish run, dead-letter replay, and what each store holds.

Plan of one run:

1. **What changed** since the stores' watermarks (:mod:`rayapp.publish.changes`): silver rows
   inserted/updated plus transactions with new predictions; prediction rows; gold rows in the
   date partitions rebuilt since; merchants whose gold rows were rebuilt. A store with no
   watermark gets everything.
2. **Fan-out**: Ray Data reads silver; the router hands each batch to every store that declares
   the dataset, in that store's batch size (:mod:`rayapp.publish.routing`), through its writer
   actors with bounded batches in flight (:mod:`rayapp.publish.writers`).
3. **Vectors**: merchant profiles and high-risk transactions are embedded and routed the same way.
4. **Outcome**: a batch a store still refuses after retries is a dead letter; the run is
   ``partial``. Every batch is written or dead-lettered before the watermarks advance, so a
   watermark never skips data. Then each store ends what the writes left open (PostgreSQL
   rebuilds a first load's indexes); a store that cannot also makes the run ``partial``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow.parquet as pq

from rayapp.catalog import GOLD_DATASETS, GOLD_MERCHANT, PREDICTIONS, SILVER, Dataset
from rayapp.lake import Lake
from rayapp.ledger import DeadLetter, Ledger, StageResult
from rayapp.publish.changes import Changes, find_changes, store_watermark, watermark_stage
from rayapp.publish.embedding import EmbedStats, VectorFeed
from rayapp.publish.readers import ReadAhead, gold_rows, merchant_profile_rows, prediction_batches, tombstone_batches, transaction_batches
from rayapp.publish.routing import Router
from rayapp.progress import Progress
from rayapp.publish.writers import Fanout, StoreTally, start_writers, stop_writers
from rayapp.sinks import select, stores
from rayapp.sinks.base import StoreSpec
from rayapp.transforms import serving as sv
from rayapp.urls import redact_url

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class PublishResult(StageResult):
    dead_letters: list[DeadLetter] = field(default_factory=list)


def router_for(lake: Lake, fan: Fanout, names: list[str]) -> Router:
    specs = select(names)
    return Router(fan, specs, {s.name: s.batch_rows(lake.settings) for s in specs})


def publish(lake: Lake, ledger: Ledger, run_id: str, *, stores: list[str] | None = None, full: bool = False) -> PublishResult:
    """Publish lake changes to ``stores`` (default: all of them). See the module docstring.

    Stores whose watermarks differ get their own change sets: a store pointed at a new URL gets
    the whole history while the others get only what changed since they last received data.
    """
    settings = lake.settings
    chosen = select(stores)
    names = [s.name for s in chosen]
    groups: dict[tuple[tuple[str, int], ...] | None, list[StoreSpec[Any]]] = {}
    for spec in chosen:
        mark = None if full else store_watermark(lake, ledger, spec)
        groups.setdefault(tuple(sorted(mark.items())) if mark else None, []).append(spec)
    pools = start_writers(lake, names, run_id)
    progress = Progress("publish", names)
    fan = Fanout(lake, run_id, pools, progress=progress)
    plans: list[tuple[list[StoreSpec[Any]], Changes]] = []
    rows_read = 0
    embedded = EmbedStats()
    try:
        for key, specs in groups.items():
            ch = find_changes(lake, dict(key) if key is not None else None)
            logger.info("publish plan for %s: %s", ", ".join(s.name for s in specs), ch.describe())
            for spec in specs:
                progress.expect(spec.name, expected_rows(lake, ch, spec))
            rows_read += _send_changes(lake, router_for(lake, fan, [s.name for s in specs]), ch, run_id, embedded)
            plans.append((specs, ch))
        tally = fan.drain()
    finally:
        progress.close()
        stop_writers(pools)
    dead = [d for t in tally.values() for d in t.dead_letters]
    ledger.record_dead_letters(dead)
    record_dlq_size(ledger)
    for specs, ch in plans:
        for spec in specs:
            ledger.advance(watermark_stage(spec, spec.url(settings)), ch.versions, run_id)
    counts: dict[str, int] = {"rows_read": rows_read, "dead_letters": len(dead), **tally_counts(tally), **embedded.counts()}
    details: dict[str, Any] = {"changes": {",".join(s.name for s in specs): ch.describe() for specs, ch in plans}, "stores": {},
                               "embedding": embedded.details()}  # fmt: skip
    for spec in chosen:
        t = tally[spec.name]
        details["stores"][spec.name] = {"url": redact_url(spec.url(settings)), "written": t.written, "failed": t.failed,
                                        "errors": sorted(set(t.errors))[:5], "unfinished": t.unfinished}  # fmt: skip
    versions = {t: v for _, ch in plans for t, v in ch.versions.items()}
    # A store that could not end what the writes left open holds the rows; the next run ends it.
    unfinished = any(t.unfinished for t in tally.values())
    return PublishResult(status="partial" if dead or unfinished else "succeeded", counts=counts, versions_read=versions,
                         details=details, dead_letters=dead)  # fmt: skip


def expected_rows(lake: Lake, ch: Changes, spec: StoreSpec[Any]) -> int:
    """Rows a store will be sent for transactions, predictions and (on a first load) gold, known
    before reading them: the progress display's total (the vector feed adds vector rows as it reads them)."""
    n = 0
    if spec.takes(Dataset.TRANSACTIONS):
        n += lake.rows(SILVER, ch.versions[SILVER.name]) if ch.transaction_ids is None else len(ch.transaction_ids)
        n += 0 if ch.deleted_transactions is None else ch.deleted_transactions.num_rows
    if spec.takes(Dataset.PREDICTIONS) and PREDICTIONS.name in ch.versions:
        n += lake.rows(PREDICTIONS, ch.versions[PREDICTIONS.name]) if ch.prediction_ids is None else len(ch.prediction_ids)
        n += 0 if ch.deleted_predictions is None else ch.deleted_predictions.num_rows
    if ch.since is None:
        n += sum(lake.rows(table, ch.versions.get(table)) for table, ds in GOLD_DATASETS.items() if spec.takes(ds) and table in ch.versions)
    return n


def _send_changes(lake: Lake, router: Router, ch: Changes, run_id: str, embedded: EmbedStats) -> int:
    """Route one change set to the router's stores; returns the silver rows read. Rows for the
    vector datasets are embedded as they are read, while the other stores' writers work."""
    settings = lake.settings
    # While the model embeds, the writes that finished are recorded: the run's progress stays current.
    feed = VectorFeed(router, lake, run_id, while_waiting=router.fan.poll)
    vectors = router.wants(Dataset.TRANSACTION_VECTORS)
    rows_read = 0
    gone = tombstone_batches(ch)
    # Ray Data reads silver on a thread from now on; predictions and gold, read here, go to the
    # writers meanwhile, and transaction batches are routed as soon as they are read.
    silver = ReadAhead(transaction_batches(lake, ch, settings.writer_batch_rows))

    def transactions(batches: Iterable[Any]) -> None:
        nonlocal rows_read
        for batch in batches:
            rows_read += batch.num_rows
            router.send(Dataset.TRANSACTIONS, batch)
            if vectors:
                feed.add(Dataset.TRANSACTION_VECTORS, sv.transaction_vector_rows(batch, settings.vector_min_score, with_deletes=ch.since is not None))

    try:
        for batch in prediction_batches(lake, ch, settings.writer_batch_rows):
            router.send(Dataset.PREDICTIONS, sv.live(batch))
            transactions(silver.ready())
        if Dataset.PREDICTIONS in gone:
            router.send(Dataset.PREDICTIONS, gone[Dataset.PREDICTIONS])
        router.done(Dataset.PREDICTIONS)
        rebuilt_merchants = None
        for table, dataset in GOLD_DATASETS.items():
            needed = router.wants(dataset) or (table == GOLD_MERCHANT.name and router.wants(Dataset.MERCHANT_VECTORS))
            rows = gold_rows(lake, table, ch) if needed else None
            if table == GOLD_MERCHANT.name:
                rebuilt_merchants = rows
            if rows is not None and router.wants(dataset):
                router.send(dataset, rows)
                router.done(dataset)
            transactions(silver.ready())
        transactions(silver)  # the rest, as it is read
        if Dataset.TRANSACTIONS in gone:
            router.send(Dataset.TRANSACTIONS, gone[Dataset.TRANSACTIONS])
            if vectors:
                feed.add(Dataset.TRANSACTION_VECTORS, sv.transaction_vector_rows(gone[Dataset.TRANSACTIONS], settings.vector_min_score, with_deletes=True))
        router.done(Dataset.TRANSACTIONS)
        if router.wants(Dataset.MERCHANT_VECTORS):
            feed.add(Dataset.MERCHANT_VECTORS, merchant_profile_rows(lake, ch, rebuilt_merchants))
        embedded.add(feed.close())
    finally:
        silver.close()
        feed.abort()
    return rows_read


def record_dlq_size(ledger: Ledger) -> None:
    from rayapp.metrics import set_dlq_size

    pending = ledger.dead_letters()
    for name in stores():
        set_dlq_size(name, sum(d.rows for d in pending if d.store == name))


def tally_counts(tally: dict[str, StoreTally]) -> dict[str, int]:
    """``<store>.written`` / ``<store>.failed`` and ``rows_written`` of a fan-out."""
    counts: dict[str, int] = {}
    for name, t in tally.items():
        counts[f"{name}.written"] = sum(t.written.values())
        counts[f"{name}.failed"] = sum(t.failed.values())
    counts["rows_written"] = sum(sum(t.written.values()) for t in tally.values())
    return counts


def replay_dead_letters(lake: Lake, ledger: Ledger, run_id: str, *, store: str | None = None) -> PublishResult:
    """Re-send pending dead letters (of one store or all); those written are marked replayed."""
    import ray

    if store is not None:
        select([store])
    letters = ledger.dead_letters(store=store)
    counts: dict[str, int] = {"dead_letters": len(letters), "replayed": 0, "still_failing": 0}
    if not letters:
        return PublishResult(counts=counts, details={"replayed": []})
    pools = start_writers(lake, sorted({d.store for d in letters}), run_id)
    fan = Fanout(lake, run_id, pools, dead_letter=False)
    try:
        for d in letters:
            fs, path = lake.arrow_fs(d.path)
            fan.submit(d.store, Dataset(d.dataset), ray.put(pq.read_table(path, filesystem=fs)), tag=d.dlq_id)
        tally = fan.drain()
    finally:
        stop_writers(pools)
    replayed = {i for t in tally.values() for i in t.replayed}
    updates = []
    for d in letters:
        if d.dlq_id in replayed:
            updates.append(DeadLetter(**{**d.__dict__, "status": "replayed", "resolved_run_id": run_id}))
        else:
            err = "; ".join(sorted(set(tally[d.store].errors)))[:500] or d.error
            updates.append(DeadLetter(**{**d.__dict__, "error": err, "attempts": d.attempts + lake.settings.writer_retries}))
    ledger.record_dead_letters(updates)
    for d in updates:
        if d.status == "replayed":
            lake.remove(d.path)  # the record says replayed; a leftover file would be harmless
    record_dlq_size(ledger)
    counts.update(tally_counts(tally), replayed=len(replayed), still_failing=len(letters) - len(replayed))
    unfinished = {name: t.unfinished for name, t in tally.items() if t.unfinished}
    return PublishResult(status="partial" if counts["still_failing"] or unfinished else "succeeded", counts=counts,
                         details={"replayed": sorted(replayed), "unfinished": unfinished})  # fmt: skip


def store_counts(lake: Lake, names: list[str] | None = None) -> dict[str, dict[str, int]]:
    """What each store holds now (opened from this process; embedded engines must be free)."""
    out: dict[str, dict[str, int]] = {}
    for spec in select(names):
        sink = spec.make(lake.settings)
        try:
            sink.on_write_start()
            out[spec.name] = sink.counts()
        finally:
            sink.close()
    return out
