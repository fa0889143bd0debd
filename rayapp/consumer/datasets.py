"""Dataset delivery: the published lake tables as immutable, versioned snapshots.

Modelled on Delta Sharing: a consumer lists the datasets, reads one's schema and versions, and
asks for the Parquet files of one snapshot (pinned to a Delta version) with a presigned URL each
— real S3 presigned GETs on an ``s3://`` lake, URLs the API signs itself on a local lake
(:mod:`rayapp.consumer.signing`). Small consumers download one streamed Parquet or CSV file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import GOLD_ACCOUNT, GOLD_MERCHANT, PREDICTIONS, SILVER, TableDef
from rayapp.consumer import signing
from rayapp.consumer.stream import stream_file
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.ledger import Ledger
from rayapp.storage import s3fs_options
from rayapp.urls import is_remote

logger = logging.getLogger(__name__)

BATCH_ROWS = 65_536  # rows per streamed batch of a download (bounds its memory)


class NotFound(RayappError):
    """No such dataset, version or file."""


class BadRequest(RayappError):
    """A request the API understood but cannot serve as asked."""


@dataclass(frozen=True)
class Published:
    name: str
    table: TableDef
    description: str
    #: The column whose UTC day a ``date`` filter selects.
    date_column: str


PUBLISHED: dict[str, Published] = {
    p.name: p
    for p in (
        Published("transactions", SILVER, "Validated transactions, the latest version of each (silver)", "event_time"),
        Published("predictions", PREDICTIONS, "Fraud scores per transaction and model version", "scored_at"),
        Published("daily_account_activity", GOLD_ACCOUNT, GOLD_ACCOUNT.description + " (gold)", "activity_date"),
        Published("merchant_daily_stats", GOLD_MERCHANT, GOLD_MERCHANT.description + " (gold)", "activity_date"),
    )
}


def published(name: str) -> Published:
    if name not in PUBLISHED:
        raise NotFound(f"unknown dataset {name!r}; datasets: {', '.join(PUBLISHED)}")
    return PUBLISHED[name]


def _actions(dt: Any) -> pa.Table:
    return pa.table(dt.get_add_actions(flatten=True))


def _day(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _footer_days(fs: Any, path: str, column: str) -> tuple[date | None, date | None]:
    """The first and last day of ``column`` in a Parquet file, from its footer's statistics."""
    import pyarrow.parquet as pq

    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if column not in names:
        return None, None
    j = names.index(column)
    lo: date | None = None
    hi: date | None = None
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(j).statistics
        if stats is None or not stats.has_min_max:
            return None, None
        a, b = _day(stats.min), _day(stats.max)
        lo = a if lo is None or (a is not None and a < lo) else lo
        hi = b if hi is None or (b is not None and b > hi) else hi
    return lo, hi


class Delivery:
    """Read side of the published datasets of one lake."""

    def __init__(self, lake: Lake, url_ttl_s: int) -> None:
        self.lake = lake
        self.url_ttl_s = url_ttl_s
        self._key: bytes | None = None
        self._s3: Any = None
        self._days: dict[tuple[str, str], tuple[date | None, date | None]] = {}  # (table, file) -> days; files never change

    def _file_days(self, p: Published, actions: pa.Table) -> list[tuple[date | None, date | None]]:
        """Per file, the first and last day it may hold: its partition value, else its Delta
        statistics, else its Parquet footer's (None where nothing tells)."""
        part = f"partition.{p.date_column}"
        if part in actions.column_names:
            return [(d, d) for d in (_day(v) for v in actions[part].to_pylist())]
        paths = actions["path"].to_pylist()
        lo = actions[f"min.{p.date_column}"].to_pylist() if f"min.{p.date_column}" in actions.column_names else [None] * len(paths)
        hi = actions[f"max.{p.date_column}"].to_pylist() if f"max.{p.date_column}" in actions.column_names else [None] * len(paths)
        fs = None
        out = []
        for path, a, b in zip(paths, lo, hi):
            if a is not None and b is not None:
                out.append((_day(a), _day(b)))
                continue
            key = (p.table.name, path)
            if key not in self._days:
                fs = fs or self.lake.table_fs(p.table)
                self._days[key] = _footer_days(fs, path, p.date_column)
            out.append(self._days[key])
        return out

    # ---- snapshots ---------------------------------------------------------------------------

    def _current(self, p: Published) -> Any:
        """The table at its current version, or None before its first write (one read of the log)."""
        from deltalake.exceptions import TableNotFoundError

        try:
            return self.lake.open(p.table)
        except TableNotFoundError:
            return None

    def _open(self, p: Published, version: int | None = None) -> Any:
        dt = self._current(p)
        if dt is None:
            raise NotFound(f"dataset {p.name} has no data yet (run the pipeline)")
        if version is None or version == dt.version():
            return dt
        if version < 0 or version > dt.version():
            raise NotFound(f"dataset {p.name} has no version {version} (versions 0 to {dt.version()})")
        try:
            dt.load_as_version(version)
        except Exception as exc:  # noqa: BLE001 - delta-rs: the log of that version was cleaned up
            raise NotFound(f"version {version} of {p.name} is no longer kept ({exc})") from None
        return dt

    def summaries(self) -> list[dict[str, Any]]:
        """Every published dataset: description, current version, last update, row count."""
        out = []
        for p in PUBLISHED.values():
            entry: dict[str, Any] = {"name": p.name, "description": p.description, "version": None, "updated_at": None,
                                     "rows": 0, "files": 0, "size_bytes": 0}  # fmt: skip
            dt = self._current(p)
            if dt is not None:
                actions = _actions(dt)
                last = dt.history(1)[0]
                entry.update(version=dt.version(), updated_at=_when(last), rows=int(pc.sum(actions["num_records"]).as_py() or 0),
                             files=actions.num_rows, size_bytes=int(pc.sum(actions["size_bytes"]).as_py() or 0))  # fmt: skip
            out.append(entry)
        return out

    def detail(self, name: str, history: int = 10) -> dict[str, Any]:
        """Schema, partition columns, the days the data covers, and recent versions with their runs."""
        p = published(name)
        dt = self._open(p)
        actions = _actions(dt)
        days: set[date] = set()
        for lo, hi in self._file_days(p, actions):
            d = lo
            while d is not None and hi is not None and d <= hi:
                days.add(d)
                d += timedelta(days=1)
        runs = {r.run_id: r for r in Ledger(self.lake).runs()}
        versions = []
        for h in dt.history(history):
            run_id = h.get("rayapp.run_id")
            run = runs.get(run_id) if run_id else None
            versions.append({"version": int(h["version"]), "timestamp": _when(h), "operation": h.get("operation"), "run_id": run_id,
                             "job": run.job if run else None, "run_status": run.status if run else None})  # fmt: skip
        schema = p.table.schema
        return {
            "name": p.name, "description": p.description, "version": dt.version(),
            "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema],
            "partition_columns": list(p.table.partition_by), "date_column": p.date_column,
            "dates": [d.isoformat() for d in sorted(days)], "versions": versions,
        }  # fmt: skip

    def files(self, name: str, version: int | None, dates: list[date], base_url: str) -> dict[str, Any]:
        """The data files of one snapshot (optionally only those that may hold ``dates``), each with
        size, rows, partition values and a presigned URL valid for ``url_ttl_s``."""
        p = published(name)
        dt = self._open(p, version)
        actions = _actions(dt)
        spans = self._file_days(p, actions)
        wanted = set(dates)
        out = []
        expires_at = None
        part_cols = [c for c in actions.column_names if c.startswith("partition.")]
        for i, path in enumerate(actions["path"].to_pylist()):
            lo, hi = spans[i]
            if wanted and not any(lo is None or hi is None or lo <= d <= hi for d in wanted):
                continue
            url, expires_at = self._presign(p, path, base_url)
            out.append({
                "path": path, "size_bytes": int(actions["size_bytes"][i].as_py()), "rows": int(actions["num_records"][i].as_py() or 0),
                "partition_values": {c.split(".", 1)[1]: _text(actions[c][i].as_py()) for c in part_cols},
                "url": url,
            })  # fmt: skip
        return {"name": p.name, "version": dt.version(), "expires_at": expires_at, "files": out,
                "note": None if p.table.partition_by or not wanted else
                f"files chosen by their {p.date_column} statistics may also hold other days: filter on {p.date_column}"}  # fmt: skip

    # ---- URLs ---------------------------------------------------------------------------------

    def _presign(self, p: Published, path: str, base_url: str) -> tuple[str, str]:
        uri = f"{self.lake.uri(p.table).rstrip('/')}/{path}"
        if is_remote(uri):
            if self._s3 is None:
                import s3fs

                opts = s3fs_options(self.lake.settings)
                opts["config_kwargs"] = {**opts["config_kwargs"], "signature_version": "s3v4"}
                self._s3 = s3fs.S3FileSystem(**opts)
            parts = urlsplit(uri)
            url = self._s3.sign(f"{parts.netloc}{parts.path}", expiration=self.url_ttl_s)
            expires = datetime.now(timezone.utc) + timedelta(seconds=self.url_ttl_s)
            return url, expires.isoformat()
        if self._key is None:
            self._key = signing.signing_key(self.lake.settings)
        expires, sig = signing.sign(self._key, f"{p.name}/{path}", self.url_ttl_s)
        url = f"{base_url.rstrip('/')}/v1/blobs/{p.name}/{quote(path)}?expires={expires}&signature={sig}"
        return url, datetime.fromtimestamp(expires, timezone.utc).isoformat()

    def blob(self, name: str, path: str, expires: int, signature: str) -> Path:
        """The local file a signed URL names.

        Raises:
            signing.BadSignature: altered or expired.
            NotFound: not a file of the dataset (or an ``s3://`` lake, whose URLs go to S3).
        """
        p = published(name)
        if self._key is None:
            self._key = signing.signing_key(self.lake.settings)
        signing.check(self._key, f"{p.name}/{path}", expires, signature)
        root = Path(self.lake.uri(p.table)).resolve()
        if is_remote(self.lake.root):
            raise NotFound("this lake is on S3: its file URLs point there")
        target = (root / path).resolve()
        if root not in target.parents or not target.is_file() or target.suffix != ".parquet":
            raise NotFound(f"{name} has no file {path}")
        return target

    # ---- downloads ----------------------------------------------------------------------------

    def download(self, name: str, version: int | None, dates: list[date], fmt: str) -> tuple[str, Iterator[bytes]]:
        """One Parquet or CSV file of the snapshot (optionally only ``dates``), streamed in batches.

        Returns:
            The file name, and an iterator of its bytes.
        """
        if fmt not in ("parquet", "csv"):
            raise BadRequest("format must be parquet or csv")
        p = published(name)
        dt = self._open(p, version)
        snapshot = dt.version()
        ds = dt.to_pyarrow_dataset(filesystem=self.lake.table_fs(p.table))  # the snapshot already open
        where = _date_filter(p, ds.schema, dates)
        batches = ds.scanner(filter=where, batch_size=BATCH_ROWS).to_batches()
        suffix = "_" + "_".join(d.isoformat() for d in sorted(dates)[:3]) if dates else ""
        return f"{p.name}_v{snapshot}{suffix}.{fmt}", stream_file(ds.schema, batches, fmt)


def _when(history_entry: dict[str, Any]) -> str | None:
    ts = history_entry.get("timestamp")
    return datetime.fromtimestamp(ts / 1000, timezone.utc).isoformat() if ts is not None else None


def _text(value: Any) -> str | None:
    return None if value is None else (value.isoformat() if isinstance(value, (date, datetime)) else str(value))


def _date_filter(p: Published, schema: pa.Schema, dates: list[date]) -> Any:
    import pyarrow.dataset as pds

    if not dates:
        return None
    col = pds.field(p.date_column)
    typ = schema.field(p.date_column).type
    if pa.types.is_date(typ):
        return col.isin(pa.array(sorted(dates), typ))
    where = None
    for d in sorted(set(dates)):
        start = datetime.combine(d, time(), timezone.utc)
        one = (col >= pa.scalar(start, typ)) & (col < pa.scalar(start + timedelta(days=1), typ))
        where = one if where is None else where | one
    return where
