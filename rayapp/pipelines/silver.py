"""Bronze -> silver on Ray Data, and silver -> gold.

bronze -> silver plan (memory stays bounded as data grows; nothing is collected in the driver):

1. **Stage** (Ray Data, streaming): read the bronze files added since the watermark, parse +
   check expectations + dedup inside each block, and write valid rows to Parquet staging files
   split by ``hash(transaction_id) % P``; quarantine rows to their own staging files; per-rule
   counts come back to the driver. A blocking expectation stops the run here: nothing is committed.
2. **Reduce** (Ray Data, one task per key partition): dedup each partition completely (the
   latest valid version per key), hash the business columns.
3. **Commit**: the winners stream from the driver into one delta-rs MERGE into silver (insert
   new keys; update only when the hash differs *and* the incoming version is newer), then the
   quarantine rows are merged by ``(_source_file, _source_row)``, so a re-run never duplicates.

silver -> gold: the dates touched since the last gold run come from silver's change data feed;
each affected date is recomputed from silver (Ray Data tasks over date chunks write Parquet
files) and swapped in with one partition-replacing commit per gold table.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from rayapp import lake
from rayapp.errors import RayappError
from rayapp.ledger import Ledger, utcnow
from rayapp.quality import Expectations
from rayapp.settings import Settings, is_remote
from rayapp.pipelines.staging import read_ipc_dir, remove_dir, split_write, write_ipc
from rayapp.transforms import silver as tx

logger = logging.getLogger(__name__)

BRONZE = "bronze/transactions"
SILVER = "silver/transactions"
QUARANTINE = "quarantine/transactions"
GOLD_ACCOUNT = "gold/daily_account_activity"
GOLD_MERCHANT = "gold/merchant_daily_stats"
CDF = {"delta.enableChangeDataFeed": "true"}

_NEWER = (
    "(s.updated_at > t.updated_at OR (s.updated_at = t.updated_at AND (s._ingested_at > t._ingested_at OR "
    "(s._ingested_at = t._ingested_at AND (s._source_file > t._source_file OR "
    "(s._source_file = t._source_file AND s._source_row > t._source_row))))))"
)
_UPDATE_COLUMNS = [f.name for f in tx.SILVER_SCHEMA if f.name != "_first_seen_at"]


def uri(settings: Settings, table: str) -> str:
    return settings.table_uri(*table.split("/"))


# ---- stage 1: parse, expectations, local dedup, key partitioning -----------------------------------


def stage_files(
    batch: pa.Table, *, settings: Settings, staging_uri: str, partitions: int, expectations: Expectations, run_id: str, now: datetime
) -> pa.Table:
    """Ray Data UDF: bronze data files in; valid rows (deduped, split by key partition) and quarantine
    rows written to staging; one row of per-rule counts out per file."""
    import pyarrow.parquet as pq

    out = []
    for file_uri in batch["path"].to_pylist():
        fs, path = lake.arrow_fs(settings, file_uri)
        bronze = pq.read_table(path, filesystem=fs)
        valid, quarantine, counts = tx.apply_expectations(bronze, expectations, run_id, now)
        name = f"{uuid.uuid4().hex}.arrow"
        if quarantine.num_rows:
            write_ipc(settings, f"{staging_uri}/quarantine/{name}", quarantine)
        valid = tx.dedup_latest(valid)
        counts["staged"] = valid.num_rows
        split_write(settings, valid, "transaction_id", partitions, staging_uri, name)
        out.append({"counts": json.dumps(counts)})
    return pa.Table.from_pylist(out, schema=pa.schema([("counts", pa.string())]))


# ---- stage 2: per-partition dedup ---------------------------------------------------------------------


def reduce_partitions(batch: pa.Table, *, settings: Settings, staging_uri: str, run_id: str, now: datetime) -> Iterator[pa.Table]:
    """Ray Data UDF: a partition id in, that partition's winning versions as silver rows out."""
    for pid in batch["pid"].to_pylist():
        staged = read_ipc_dir(settings, f"{staging_uri}/p={pid:04d}", tx.STANDARD_SCHEMA)
        if staged.num_rows:
            yield tx.to_silver_rows(tx.dedup_latest(staged), run_id, now)


# ---- bronze -> silver -------------------------------------------------------------------------------------


@dataclass
class SilverResult:
    bronze_from: int | None
    bronze_to: int
    counts: dict[str, int] = field(default_factory=dict)
    silver_version: int | None = None
    quarantine_version: int | None = None
    rules: dict[str, int] = field(default_factory=dict)


def _bronze_files(settings: Settings, version: int | None) -> set[str]:
    if version is None:
        return set()
    return set(lake.open_table(settings, uri(settings, BRONZE), version).file_uris())


def changed_keys(settings: Settings, table: str, since: int | None, until: int, column: str = "transaction_id") -> pa.Array | None:
    """Keys inserted or updated in ``table`` after version ``since`` up to ``until``, from its change
    data feed. None means "every row": no ``since``, or a table written without the feed."""
    if since is None:
        return None
    if since >= until:
        return pa.array([], pa.string())
    dt = lake.open_table(settings, uri(settings, table), until)
    if dt.metadata().configuration.get("delta.enableChangeDataFeed") != "true":
        return None
    cdf = pa.table(dt.load_cdf(starting_version=since + 1, ending_version=until, columns=[column, "_change_type"]))
    # delta-rs hands the feed over as string_view, which few Arrow kernels take.
    kinds, keys = cdf["_change_type"].cast(pa.string()), cdf[column].cast(pa.string())
    keep = pc.is_in(kinds, pa.array(["insert", "update_postimage"]))
    return pc.unique(keys.filter(keep))


def last_watermark(ledger: Ledger, job: str, table: str) -> int | None:
    run = ledger.last_run(job)
    if run is None:
        return None
    v = run.versions_read.get(table)
    return int(v) if v is not None else None


def bronze_to_silver(
    settings: Settings,
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
    bronze_uri = uri(settings, BRONZE)
    if not lake.table_exists(settings, bronze_uri):
        raise RayappError(f"no bronze table at {bronze_uri}: run `rayapp run ingest` first")
    latest = lake.open_table(settings, bronze_uri).version()
    target = latest if as_of_version is None else as_of_version
    if not 0 <= target <= latest:
        raise RayappError(f"--as-of-version {target} is outside bronze versions 0..{latest}")
    watermark = None if full_refresh else last_watermark(ledger, "bronze_to_silver", BRONZE)
    if watermark is not None and watermark > target:
        raise RayappError(f"bronze version {target} is older than the watermark {watermark}: use --full-refresh")
    result = SilverResult(bronze_from=watermark, bronze_to=target)
    new_files = sorted(_bronze_files(settings, target) - _bronze_files(settings, watermark))
    silver_uri = uri(settings, SILVER)
    if not new_files and not full_refresh:
        logger.info("no new bronze data since version %s", watermark)
        result.counts = {"rows_in": 0, "inserted": 0, "updated": 0, "unchanged": 0, "quarantined": 0}
        return result

    bronze_dt = lake.open_table(settings, bronze_uri, target)
    actions = pa.table(bronze_dt.get_add_actions(flatten=True))
    new_names = {f.rsplit("/", 1)[-1] for f in new_files}  # data file names are unique within a table
    n_rows = sum(n for p, n in zip(actions["path"].to_pylist(), actions["num_records"].to_pylist()) if p.rsplit("/", 1)[-1] in new_names)
    parts = partitions or max(2, min(64, math.ceil(n_rows / 500_000)))
    now = utcnow()
    staging = settings.table_uri("_staging", run_id)
    t0 = time.perf_counter()
    try:
        counts: dict[str, int] = {}
        if new_files:
            # One task per bronze file: even load, no listing step, memory bounded by the file size.
            staged = ray.data.from_items([{"path": f} for f in new_files], override_num_blocks=len(new_files)).map_batches(
                stage_files, batch_size=1, batch_format="pyarrow",
                fn_kwargs={"settings": settings, "staging_uri": staging, "partitions": parts,
                           "expectations": expectations, "run_id": run_id, "now": now},
            ).take_all()  # fmt: skip
            for row in staged:
                for k, v in json.loads(row["counts"]).items():
                    counts[k] = counts.get(k, 0) + v
        logger.info("staged %d bronze rows in %.1fs", counts.get("rows_in", 0), time.perf_counter() - t0)
        rows_in = counts.get("rows_in", 0)
        result.rules = {r: counts.get(r, 0) for r in expectations.rules}
        expectations.check(rows_in, result.rules, counts.get("quarantined", 0))

        lake.ensure_table(settings, silver_uri, tx.SILVER_SCHEMA, configuration=CDF)
        winners = ray.data.from_items([{"pid": p} for p in range(parts)], override_num_blocks=parts).map_batches(
            reduce_partitions, batch_size=1, batch_format="pyarrow",
            fn_kwargs={"settings": settings, "staging_uri": staging, "run_id": run_id, "now": now},
        )  # fmt: skip
        if not lake.open_table(settings, silver_uri).file_uris():
            metrics = _append_silver(settings, silver_uri, winners, run_id)  # empty silver: MERGE == append
        else:
            metrics = _merge_silver(settings, silver_uri, winners, run_id, full_refresh)
        result.silver_version = lake.open_table(settings, silver_uri).version()
        logger.info("reduced and merged into silver in %.1fs total", time.perf_counter() - t0)
        q = read_ipc_dir(settings, f"{staging}/quarantine", tx.QUARANTINE_SCHEMA)
        result.quarantine_version = _merge_quarantine(settings, q, run_id)
    finally:
        remove_dir(settings, staging)
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
    return result


def _append_silver(settings: Settings, silver_uri: str, winners: Any, run_id: str) -> dict[str, int]:
    """First load: reduce tasks write silver Parquet files in parallel; one commit."""
    sink = lake.DeltaAppendSink(settings, silver_uri, tx.SILVER_SCHEMA, {"rayapp.run_id": run_id})
    winners.write_datasink(sink)
    n = sink.rows_written
    logger.info("silver first load: %d rows appended", n)
    return {"num_source_rows": n, "num_target_rows_inserted": n, "num_target_rows_updated": 0, "num_target_rows_deleted": 0}


def _merge_silver(settings: Settings, silver_uri: str, winners: Any, run_id: str, full_refresh: bool) -> dict[str, int]:
    from deltalake import CommitProperties

    def batches() -> Iterator[pa.RecordBatch]:
        for t in winners.iter_batches(batch_format="pyarrow", batch_size=None):
            yield from pa.Table.from_batches(t.to_batches(), schema=tx.SILVER_SCHEMA).cast(tx.SILVER_SCHEMA).to_batches()

    source = pa.RecordBatchReader.from_batches(tx.SILVER_SCHEMA, batches())
    dt = lake.open_table(settings, silver_uri)
    changed = "s._row_hash <> t._row_hash" + ("" if full_refresh else f" AND {_NEWER}")
    merger = (
        dt.merge(
            source, predicate="t.transaction_id = s.transaction_id", source_alias="s", target_alias="t",
            commit_properties=CommitProperties(custom_metadata={"rayapp.run_id": run_id}),
        )
        .when_matched_update(updates={c: f"s.{c}" for c in _UPDATE_COLUMNS}, predicate=changed)
        .when_not_matched_insert_all()
    )  # fmt: skip
    if full_refresh:
        merger = merger.when_not_matched_by_source_delete()
    metrics = merger.execute()
    logger.info("silver MERGE: %s", {k: v for k, v in metrics.items() if k.startswith("num_")})
    return metrics


def _merge_quarantine(settings: Settings, rows: pa.Table, run_id: str) -> int | None:
    from deltalake import CommitProperties

    q_uri = uri(settings, QUARANTINE)
    dt = lake.ensure_table(settings, q_uri, tx.QUARANTINE_SCHEMA)
    if rows.num_rows == 0:
        return None
    dt.merge(
        rows, predicate="t._source_file = s._source_file AND t._source_row = s._source_row",
        source_alias="s", target_alias="t", commit_properties=CommitProperties(custom_metadata={"rayapp.run_id": run_id}),
    ).when_not_matched_insert_all().execute()  # fmt: skip
    return lake.open_table(settings, q_uri).version()


# ---- silver -> gold ------------------------------------------------------------------------------------------


@dataclass
class GoldResult:
    silver_version: int
    dates: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _dates_of(event_time: pa.Array | pa.ChunkedArray) -> set[date]:
    if len(event_time) == 0:
        return set()
    d = pc.unique(tx.activity_date(pc.drop_null(event_time)))
    return set(d.to_pylist())


def _touched_dates(settings: Settings, silver_uri: str, since: int | None, until: int, full: bool) -> set[date]:
    dt = lake.open_table(settings, silver_uri, until)
    if full or since is None:
        return _dates_of(dt.to_pyarrow_table(columns=["event_time"])["event_time"])
    if since >= until:
        return set()
    cdf = pa.table(dt.load_cdf(starting_version=since + 1, ending_version=until, columns=["event_time"]))
    return _dates_of(cdf["event_time"])


def aggregate_dates(
    batch: pa.Table, *, settings: Settings, silver_uri: str, version: int, targets: dict[str, str], write_id: str
) -> pa.Table:
    """Ray Data UDF: a chunk of dates in, gold Parquet files written, their add actions out (one row per file)."""
    import pyarrow.dataset as pds
    import pyarrow.parquet as pq

    out: list[dict[str, Any]] = []
    days = sorted(date.fromisoformat(d) for d in batch["day"].to_pylist())
    if not days:
        return pa.Table.from_pylist([], schema=_ACTION_SCHEMA)
    dt = lake.open_table(settings, silver_uri, version)
    lo = datetime.combine(days[0], datetime.min.time(), timezone.utc)
    hi = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), timezone.utc)
    field_ = pds.field("event_time")
    silver = dt.to_pyarrow_dataset().to_table(
        columns=["account_id", "merchant_id", "amount", "event_time", "is_fraud"],
        filter=(field_ >= pa.scalar(lo, tx.UTC_US)) & (field_ < pa.scalar(hi, tx.UTC_US)),
    )
    silver = silver.filter(pc.is_in(tx.activity_date(silver["event_time"]), pa.array(days, pa.date32())))
    acc, mer = tx.daily_aggregates(silver)
    for table_name, table in (("account", acc), ("merchant", mer)):
        root_uri = targets[table_name]
        fs, root = lake.arrow_fs(settings, root_uri)
        for d in days:
            part = table.filter(pc.equal(table["activity_date"], pa.scalar(d, pa.date32())))
            if part.num_rows == 0:
                continue
            rel = f"activity_date={d.isoformat()}/part-{write_id}-{uuid.uuid4().hex[:8]}.parquet"
            path = f"{root}/{rel}"
            if not is_remote(root_uri):
                fs.create_dir(posixpath.dirname(path), recursive=True)
            pq.write_table(part.drop_columns(["activity_date"]), path, filesystem=fs, compression="snappy")
            size = fs.get_file_info(path).size
            out.append({"table": table_name, "path": rel, "size": size, "day": d.isoformat(), "rows": part.num_rows})
    return pa.Table.from_pylist(out, schema=_ACTION_SCHEMA)


_ACTION_SCHEMA = pa.schema(
    [("table", pa.string()), ("path", pa.string()), ("size", pa.int64()), ("day", pa.string()), ("rows", pa.int64())]
)


def silver_to_gold(settings: Settings, ledger: Ledger, run_id: str, *, full_refresh: bool = False) -> GoldResult:
    """Recompute gold for the dates touched since the last gold run (all dates with ``full_refresh``)."""
    import ray
    from deltalake import CommitProperties
    from deltalake.transaction import AddAction

    silver_uri = uri(settings, SILVER)
    if not lake.table_exists(settings, silver_uri):
        raise RayappError(f"no silver table at {silver_uri}: run `rayapp run bronze_to_silver` first")
    version = lake.open_table(settings, silver_uri).version()
    targets = {"account": uri(settings, GOLD_ACCOUNT), "merchant": uri(settings, GOLD_MERCHANT)}
    schemas = {"account": tx.DAILY_ACCOUNT_SCHEMA, "merchant": tx.MERCHANT_DAILY_SCHEMA}
    fresh = not all(lake.table_exists(settings, u) for u in targets.values())
    for name, u in targets.items():
        lake.ensure_table(settings, u, schemas[name], partition_by=["activity_date"])
    since = last_watermark(ledger, "silver_to_gold", SILVER)
    result = GoldResult(silver_version=version)
    days = sorted(_touched_dates(settings, silver_uri, since, version, full_refresh or fresh))
    result.dates = len(days)
    if not days:
        result.counts = {"dates": 0, "rows_written": 0}
        return result
    chunk = max(1, math.ceil(len(days) / 16))
    ds = ray.data.from_items([{"day": d.isoformat()} for d in days], override_num_blocks=math.ceil(len(days) / chunk))
    write_id = uuid.uuid4().hex[:12]
    files = ds.map_batches(
        aggregate_dates, batch_size=chunk, batch_format="pyarrow",
        fn_kwargs={"settings": settings, "silver_uri": silver_uri, "version": version, "targets": targets, "write_id": write_id},
    ).take_all()  # fmt: skip
    rows = {"account": 0, "merchant": 0}
    now_ms = int(time.time() * 1000)
    day_list = [d.isoformat() for d in days]
    for name, u in targets.items():
        actions = [
            AddAction(path=f["path"], size=f["size"], partition_values={"activity_date": f["day"]}, modification_time=now_ms,
                      data_change=True, stats=json.dumps({"numRecords": f["rows"]}))
            for f in files if f["table"] == name
        ]  # fmt: skip
        rows[name] = sum(f["rows"] for f in files if f["table"] == name)
        dt = lake.open_table(settings, u)
        dt.create_write_transaction(
            actions=actions, mode="overwrite", schema=schemas[name], partition_by=["activity_date"],
            partition_filters=[("activity_date", "in", day_list)],
            commit_properties=CommitProperties(custom_metadata={"rayapp.run_id": run_id, "rayapp.silver_version": str(version)}),
        )  # fmt: skip
        dt.update_incremental()
        result.versions[u.rsplit("/", 2)[-2] + "/" + u.rsplit("/", 1)[-1]] = dt.version()
    result.counts = {
        "dates": len(days), "daily_account_activity_rows": rows["account"], "merchant_daily_stats_rows": rows["merchant"],
        "rows_written": rows["account"] + rows["merchant"],
    }  # fmt: skip
    return result
