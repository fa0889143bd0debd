"""Bronze -> silver on Ray Data.

Plan (memory stays bounded as data grows; nothing is collected in the driver):

1. **Stage** (Ray Data, streaming): read the bronze files added since the watermark, parse +
   check expectations + dedup inside each block, and write valid rows to Parquet staging files
   split by ``hash(transaction_id) % P``; quarantine rows to their own staging files; per-rule
   counts come back to the driver. A blocking expectation stops the run here: nothing is committed.
2. **Reduce** (Ray Data, one task per key partition): dedup each partition completely (the
   latest valid version per key), hash the business columns.
3. **Commit**: the winners stream from the driver into one delta-rs MERGE into silver (insert
   new keys; update only when the hash differs *and* the incoming version is newer), then the
   quarantine rows are merged by ``(_source_file, _source_row)``, so a re-run never duplicates.
4. **Watermark**: the bronze version read is recorded for stage ``bronze_to_silver``; the next
   run takes only bronze files added after it.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

import pyarrow as pa

from rayapp.catalog import BRONZE, QUARANTINE, QUARANTINE_SCHEMA, SILVER, SILVER_SCHEMA, STANDARD_SCHEMA
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.lake_sink import DeltaAppendSink
from rayapp.ledger import Ledger, StageResult, utcnow
from rayapp.pipelines.staging import read_ipc_dir, split_write, stream_ipc_dir, write_ipc
from rayapp.quality import Expectations
from rayapp.transforms import silver as tx

logger = logging.getLogger(__name__)

STAGE = "bronze_to_silver"

_NEWER = (
    "(s.updated_at > t.updated_at OR (s.updated_at = t.updated_at AND (s._ingested_at > t._ingested_at OR "
    "(s._ingested_at = t._ingested_at AND (s._source_file > t._source_file OR "
    "(s._source_file = t._source_file AND s._source_row > t._source_row))))))"
)
_UPDATE_COLUMNS = [f.name for f in SILVER_SCHEMA if f.name != "_first_seen_at"]


# ---- stage 1: parse, expectations, local dedup, key partitioning -----------------------------------


def stage_files(
    batch: pa.Table, *, lake: Lake, staging_uri: str, partitions: int, expectations: Expectations, run_id: str, now: datetime
) -> pa.Table:
    """Ray Data UDF: bronze data files in; valid rows (deduped, split by key partition) and quarantine
    rows written to staging; one row of per-rule counts out per file."""
    import pyarrow.parquet as pq

    out = []
    for file_uri in batch["path"].to_pylist():
        fs, path = lake.arrow_fs(file_uri)
        bronze = pq.read_table(path, filesystem=fs)
        valid, quarantine, counts = tx.apply_expectations(bronze, expectations, run_id, now)
        name = f"{uuid.uuid4().hex}.arrow"
        if quarantine.num_rows:
            write_ipc(lake, f"{staging_uri}/quarantine/{name}", quarantine)
        valid = tx.dedup_latest(valid)
        counts["staged"] = valid.num_rows
        split_write(lake, valid, "transaction_id", partitions, staging_uri, name)
        out.append({"counts": json.dumps(counts)})
    return pa.Table.from_pylist(out, schema=pa.schema([("counts", pa.string())]))


# ---- stage 2: per-partition dedup ---------------------------------------------------------------------


def reduce_partitions(batch: pa.Table, *, lake: Lake, staging_uri: str, run_id: str, now: datetime) -> Iterator[pa.Table]:
    """Ray Data UDF: a partition id in, that partition's winning versions as silver rows out."""
    for pid in batch["pid"].to_pylist():
        staged = read_ipc_dir(lake, f"{staging_uri}/p={pid:04d}", STANDARD_SCHEMA)
        if staged.num_rows:
            yield tx.to_silver_rows(tx.dedup_latest(staged), run_id, now)


# ---- bronze -> silver -------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SilverResult(StageResult):
    bronze_from: int | None = None
    bronze_to: int = 0
    silver_version: int | None = None
    quarantine_version: int | None = None
    rules: dict[str, int] = field(default_factory=dict)


def _bronze_files(lake: Lake, version: int | None) -> set[str]:
    return set(lake.files(BRONZE, version)) if version is not None else set()


def bronze_to_silver(
    lake: Lake,
    ledger: Ledger,
    run_id: str,
    *,
    full_refresh: bool = False,
    as_of_version: int | None = None,
    expectations: Expectations | None = None,
    partitions: int | None = None,
) -> SilverResult:
    """Process bronze rows not yet in silver (or all of them with ``full_refresh``).

    Raises:
        ExpectationFailed: a ``fail`` rule tripped; nothing was committed.
        RayappError: no bronze table, or a bad ``as_of_version``.
    """
    import ray

    expectations = expectations or Expectations()
    latest = lake.version(BRONZE)
    if latest is None:
        raise RayappError(f"no bronze table at {lake.uri(BRONZE)}: run `rayapp run ingest` first")
    target = latest if as_of_version is None else as_of_version
    if not 0 <= target <= latest:
        raise RayappError(f"--as-of-version {target} is outside bronze versions 0..{latest}")
    watermark = None if full_refresh else ledger.watermark(STAGE, BRONZE.name)
    if watermark is not None and watermark > target:
        raise RayappError(f"bronze version {target} is older than the watermark {watermark}: use --full-refresh")
    result = SilverResult(bronze_from=watermark, bronze_to=target, versions_read={BRONZE.name: target},
                          details={"bronze_from": watermark, "full_refresh": full_refresh})  # fmt: skip
    new_files = sorted(_bronze_files(lake, target) - _bronze_files(lake, watermark))
    if not new_files and not full_refresh:
        logger.info("no new bronze data since version %s", watermark)
        result.counts = {"rows_in": 0, "inserted": 0, "updated": 0, "unchanged": 0, "quarantined": 0}
        return result

    bronze_dt = lake.open(BRONZE, target)
    actions = pa.table(bronze_dt.get_add_actions(flatten=True))
    new_names = {f.rsplit("/", 1)[-1] for f in new_files}  # data file names are unique within a table
    n_rows = sum(n for p, n in zip(actions["path"].to_pylist(), actions["num_records"].to_pylist()) if p.rsplit("/", 1)[-1] in new_names)
    parts = partitions or max(2, min(128, math.ceil(n_rows / 500_000)))  # ≤ ~800k rows a reduce task at 100M rows
    now = utcnow()
    staging = lake.path("_staging", run_id)
    t0 = time.perf_counter()
    try:
        counts: dict[str, int] = {}
        if new_files:
            # One task per bronze file: even load, no listing step, memory bounded by the file size.
            staged = ray.data.from_items([{"path": f} for f in new_files], override_num_blocks=len(new_files)).map_batches(
                stage_files, batch_size=1, batch_format="pyarrow",
                fn_kwargs={"lake": lake, "staging_uri": staging, "partitions": parts,
                           "expectations": expectations, "run_id": run_id, "now": now},
            ).take_all()  # fmt: skip
            for row in staged:
                for k, v in json.loads(row["counts"]).items():
                    counts[k] = counts.get(k, 0) + v
        logger.info("staged %d bronze rows in %.1fs", counts.get("rows_in", 0), time.perf_counter() - t0)
        rows_in = counts.get("rows_in", 0)
        result.rules = {r: counts.get(r, 0) for r in expectations.rules}
        expectations.check(rows_in, result.rules, counts.get("quarantined", 0))

        lake.ensure(SILVER)
        winners = ray.data.from_items([{"pid": p} for p in range(parts)], override_num_blocks=parts).map_batches(
            reduce_partitions, batch_size=1, batch_format="pyarrow",
            fn_kwargs={"lake": lake, "staging_uri": staging, "run_id": run_id, "now": now},
        )  # fmt: skip
        if not lake.files(SILVER):
            metrics = _append_silver(lake, winners, run_id)  # empty silver: MERGE == append
        else:
            metrics = _merge_silver(lake, winners, run_id, full_refresh)
        result.silver_version = lake.version(SILVER)
        logger.info("reduced and merged into silver in %.1fs total", time.perf_counter() - t0)
        if counts.get("quarantined", 0):
            q = stream_ipc_dir(lake, f"{staging}/quarantine", QUARANTINE_SCHEMA)  # never all of it in the driver
            result.quarantine_version = _merge_quarantine(lake, q, run_id)
        else:
            lake.ensure(QUARANTINE)
    finally:
        lake.remove(staging)
    inserted, updated = metrics["num_target_rows_inserted"], metrics["num_target_rows_updated"]
    result.counts = {
        "rows_in": rows_in,
        "rows_read": rows_in,
        "quarantined": counts.get("quarantined", 0),
        "candidates": metrics["num_source_rows"],
        "inserted": inserted,
        "updated": updated,
        "unchanged": metrics["num_source_rows"] - inserted - updated,
        "deleted": metrics.get("num_target_rows_deleted", 0),
        "rows_written": inserted + updated,
    }
    result.counts |= {f"rule_{k}": v for k, v in result.rules.items()}
    result.details["rules"] = result.rules
    written = {SILVER.name: result.silver_version, QUARANTINE.name: result.quarantine_version}
    result.versions_written = {k: v for k, v in written.items() if v is not None}
    ledger.advance(STAGE, result.versions_read, run_id)
    return result


def _append_silver(lake: Lake, winners: Any, run_id: str) -> dict[str, int]:
    """First load: reduce tasks write silver Parquet files in parallel; one commit."""
    sink = DeltaAppendSink(lake, SILVER, {"rayapp.run_id": run_id})
    winners.write_datasink(sink)
    n = sink.rows_written
    logger.info("silver first load: %d rows appended", n)
    return {"num_source_rows": n, "num_target_rows_inserted": n, "num_target_rows_updated": 0, "num_target_rows_deleted": 0}


def _merge_silver(lake: Lake, winners: Any, run_id: str, full_refresh: bool) -> dict[str, int]:
    def batches() -> Iterator[pa.RecordBatch]:
        for t in winners.iter_batches(batch_format="pyarrow", batch_size=None):
            yield from pa.Table.from_batches(t.to_batches(), schema=SILVER_SCHEMA).cast(SILVER_SCHEMA).to_batches()

    source = pa.RecordBatchReader.from_batches(SILVER_SCHEMA, batches())
    changed = "s._row_hash <> t._row_hash" + ("" if full_refresh else f" AND {_NEWER}")
    merger = (
        lake.merge(SILVER, source, "t.transaction_id = s.transaction_id", {"rayapp.run_id": run_id})
        .when_matched_update(updates={c: f"s.{c}" for c in _UPDATE_COLUMNS}, predicate=changed)
        .when_not_matched_insert_all()
    )
    if full_refresh:
        merger = merger.when_not_matched_by_source_delete()
    metrics = merger.execute()
    logger.info("silver MERGE: %s", {k: v for k, v in metrics.items() if k.startswith("num_")})
    return metrics


def _merge_quarantine(lake: Lake, rows: pa.RecordBatchReader, run_id: str) -> int | None:
    lake.merge(
        QUARANTINE, rows, "t._source_file = s._source_file AND t._source_row = s._source_row", {"rayapp.run_id": run_id}
    ).when_not_matched_insert_all().execute()
    return lake.version(QUARANTINE)
