"""Silver -> gold: the business aggregates, rebuilt incrementally.

The dates touched since the last gold run come from silver's change data feed (all dates on a
first or full run); each affected date is recomputed from silver by Ray Data tasks over date
chunks, which write Parquet files; each gold table then swaps those dates in with one
partition-replacing commit through :meth:`rayapp.lake.Lake.commit`. The silver version read is
the stage's watermark.
"""

from __future__ import annotations

import logging
import math
import posixpath
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import GOLD_ACCOUNT, GOLD_MERCHANT, SILVER, UTC_US, TableDef
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.ledger import Ledger, StageResult
from rayapp.transforms import silver as tx
from rayapp.urls import is_remote

logger = logging.getLogger(__name__)

STAGE = "silver_to_gold"
#: Each gold table by the key ``aggregate_dates`` files its output under.
TARGETS: dict[str, TableDef] = {"account": GOLD_ACCOUNT, "merchant": GOLD_MERCHANT}
_ACTION_SCHEMA = pa.schema(
    [("table", pa.string()), ("path", pa.string()), ("size", pa.int64()), ("day", pa.string()), ("rows", pa.int64())]
)


@dataclass(kw_only=True)
class GoldResult(StageResult):
    silver_version: int
    dates: int = 0


def _dates_of(event_time: pa.Array | pa.ChunkedArray) -> set[date]:
    if len(event_time) == 0:
        return set()
    return set(pc.unique(tx.activity_date(pc.drop_null(event_time))).to_pylist())


def _all_dates(lake: Lake, version: int) -> set[date]:
    """Every activity date in silver, a batch at a time (never the whole column in the driver)."""
    days: set[date] = set()
    for batch in lake.dataset(SILVER, version).to_batches(columns=["event_time"], batch_size=1 << 20):
        days |= _dates_of(batch.column(0))
    return days


def _touched_dates(lake: Lake, since: int | None, until: int, full: bool) -> set[date]:
    if full or since is None:
        return _all_dates(lake, until)
    if since >= until:
        return set()
    cdf = lake.changes(SILVER, since, until, ["event_time"])
    if cdf is None:
        return _all_dates(lake, until)
    return _dates_of(cdf["event_time"])


def aggregate_dates(batch: pa.Table, *, lake: Lake, version: int, write_id: str) -> pa.Table:
    """Ray Data UDF: a chunk of dates in, gold Parquet files written, their add actions out (one row per file)."""
    import pyarrow.dataset as pds
    import pyarrow.parquet as pq

    out: list[dict[str, Any]] = []
    days = sorted(date.fromisoformat(d) for d in batch["day"].to_pylist())
    if not days:
        return pa.Table.from_pylist([], schema=_ACTION_SCHEMA)
    lo = datetime.combine(days[0], datetime.min.time(), timezone.utc)
    hi = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), timezone.utc)
    field_ = pds.field("event_time")
    silver = lake.dataset(SILVER, version).to_table(
        columns=["account_id", "merchant_id", "amount", "event_time", "is_fraud"],
        filter=(field_ >= pa.scalar(lo, UTC_US)) & (field_ < pa.scalar(hi, UTC_US)),
    )
    silver = silver.filter(pc.is_in(tx.activity_date(silver["event_time"]), pa.array(days, pa.date32())))
    acc, mer = tx.daily_aggregates(silver)
    for key, table in (("account", acc), ("merchant", mer)):
        root_uri = lake.uri(TARGETS[key])
        fs, root = lake.arrow_fs(root_uri)
        for d in days:
            part = table.filter(pc.equal(table["activity_date"], pa.scalar(d, pa.date32())))
            if part.num_rows == 0:
                continue
            rel = f"activity_date={d.isoformat()}/part-{write_id}-{uuid.uuid4().hex[:8]}.parquet"
            path = f"{root}/{rel}"
            if not is_remote(root_uri):
                fs.create_dir(posixpath.dirname(path), recursive=True)
            pq.write_table(part.drop_columns(["activity_date"]), path, filesystem=fs, compression="snappy")
            out.append({"table": key, "path": rel, "size": fs.get_file_info(path).size, "day": d.isoformat(), "rows": part.num_rows})
    return pa.Table.from_pylist(out, schema=_ACTION_SCHEMA)


def silver_to_gold(lake: Lake, ledger: Ledger, run_id: str, *, full_refresh: bool = False) -> GoldResult:
    """Recompute gold for the dates touched since the last gold run (all dates with ``full_refresh``)."""
    import ray

    version = lake.version(SILVER)
    if version is None:
        raise RayappError(f"no silver table at {lake.uri(SILVER)}: run `rayapp run bronze_to_silver` first")
    fresh = not all(lake.exists(t) for t in TARGETS.values())
    for t in TARGETS.values():
        lake.ensure(t)
    since = ledger.watermark(STAGE, SILVER.name)
    result = GoldResult(silver_version=version, versions_read={SILVER.name: version}, details={"full_refresh": full_refresh})
    days = sorted(_touched_dates(lake, since, version, full_refresh or fresh))
    result.dates = len(days)
    if not days:
        result.counts = {"dates": 0, "rows_written": 0}
        ledger.advance(STAGE, result.versions_read, run_id)
        return result
    # Silver is not laid out by date, so every task reads all of it (five columns) and keeps its
    # dates: as many tasks as CPUs while silver is small; more, up to 16, only to bound a task's
    # share of a large table (~8M rows each).
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    tasks = min(len(days), 16, max(cpus, math.ceil(lake.rows(SILVER, version) / 8_000_000)))
    chunk = math.ceil(len(days) / tasks)
    ds = ray.data.from_items([{"day": d.isoformat()} for d in days], override_num_blocks=math.ceil(len(days) / chunk))
    write_id = uuid.uuid4().hex[:12]
    files = ds.map_batches(
        aggregate_dates, batch_size=chunk, batch_format="pyarrow", fn_kwargs={"lake": lake, "version": version, "write_id": write_id},
    ).take_all()  # fmt: skip
    rows = {"account": 0, "merchant": 0}
    day_list = [d.isoformat() for d in days]
    metadata = {"rayapp.run_id": run_id, "rayapp.silver_version": str(version)}
    for key, table in TARGETS.items():
        mine = [f for f in files if f["table"] == key]
        actions = [Lake.add_action(f["path"], f["size"], f["rows"], {"activity_date": f["day"]}) for f in mine]
        rows[key] = sum(f["rows"] for f in mine)
        result.versions_written[table.name] = lake.commit(table, actions, metadata, replace_partitions=day_list)
    result.counts = {
        "dates": len(days), "daily_account_activity_rows": rows["account"], "merchant_daily_stats_rows": rows["merchant"],
        "rows_written": rows["account"] + rows["merchant"],
    }  # fmt: skip
    ledger.advance(STAGE, result.versions_read, run_id)
    return result
