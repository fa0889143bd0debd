"""The run ledger: Delta tables under ``<lake>/_ledger`` recording runs, ingested files,
dead letters (batches a store refused, kept as Parquet files until replayed) and watermarks.

``runs`` gets a ``running`` record when a job starts and its final record when it ends
(the newest record per run id wins), so a run killed mid-way still shows up.

A **watermark** is how far a stage has read a source table (a Delta version), keyed by the
stage's name — never by a job file name — and written by the stage itself once its commits are
in, so the next run of the stage starts where this one ended.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import DLQ_SCHEMA, FILES_SCHEMA, LEDGER_DLQ, LEDGER_FILES, LEDGER_RUNS, LEDGER_WATERMARKS, RUNS_SCHEMA, WATERMARKS_SCHEMA
from rayapp.lake import Lake

logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id(job: str, now: datetime | None = None) -> str:
    ts = (now or utcnow()).strftime("%Y%m%dT%H%M%S")
    return f"{job}-{ts}-{secrets.token_hex(3)}"


@dataclass(kw_only=True)
class StageResult:
    """What a stage returns: recorded in its run record (pipelines fill it; jobs only summarise)."""

    counts: dict[str, int] = field(default_factory=dict)
    versions_read: dict[str, int] = field(default_factory=dict)
    versions_written: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "succeeded"


@dataclass
class RunRecord:
    """One job run as stored in ``<lake>/_ledger/runs``."""

    run_id: str
    job: str
    started_at: datetime
    status: str = "running"
    parent_run_id: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    ended_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    versions_read: dict[str, int] = field(default_factory=dict)
    versions_written: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def to_row(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "parent_run_id": self.parent_run_id,
            "args": json.dumps(self.args, default=str),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "status": self.status,
            "counts": json.dumps(self.counts),
            "versions_read": json.dumps(self.versions_read),
            "versions_written": json.dumps(self.versions_written),
            "details": json.dumps(self.details, default=str),
            "error": self.error,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "RunRecord":
        return cls(
            run_id=row["run_id"],
            job=row["job"],
            parent_run_id=row.get("parent_run_id"),
            args=json.loads(row["args"] or "{}"),
            started_at=row["started_at"],
            ended_at=row.get("ended_at"),
            status=row["status"],
            counts=json.loads(row["counts"] or "{}"),
            versions_read=json.loads(row["versions_read"] or "{}"),
            versions_written=json.loads(row["versions_written"] or "{}"),
            details=json.loads(row["details"] or "{}"),
            error=row.get("error"),
        )


@dataclass(frozen=True)
class FileRecord:
    """A landing file as seen by one ingest run."""

    path: str
    checksum: str
    size: int | None
    status: str  # ingested | rejected
    rows: int | None
    reason: str | None
    run_id: str
    bronze_version: int | None


class Ledger:
    """Reads and appends the ledger tables of one lake."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.runs_uri = lake.uri(LEDGER_RUNS)

    def dlq_file_uri(self, run_id: str, store: str, name: str) -> str:
        """Where a dead-letter batch's Parquet file lives."""
        return self.lake.path("_ledger", "dlq_files", run_id, store, name)

    # -- runs --
    def record_run(self, record: RunRecord) -> None:
        self.lake.append(LEDGER_RUNS, pa.Table.from_pylist([record.to_row()], schema=RUNS_SCHEMA))

    def runs(self, job: str | None = None, limit: int | None = None) -> list[RunRecord]:
        """Latest record of each run, newest first."""
        table = self.lake.read(LEDGER_RUNS)
        if table.num_rows == 0:
            return []
        if job is not None:
            table = table.filter(pc.equal(table["job"], job))
        rows = table.to_pylist()
        latest: dict[str, dict[str, Any]] = {}
        for row in rows:  # later appends win; a final record beats 'running'
            prev = latest.get(row["run_id"])
            if prev is None or prev["status"] == "running" or row["status"] != "running":
                latest[row["run_id"]] = row
        records = sorted((RunRecord.from_row(r) for r in latest.values()), key=lambda r: r.started_at, reverse=True)
        return records[:limit] if limit else records

    def get_run(self, run_id: str) -> RunRecord | None:
        for r in self.runs():
            if r.run_id == run_id:
                return r
        return None

    def last_run(self, job: str, status: tuple[str, ...] = ("succeeded",)) -> RunRecord | None:
        for r in self.runs(job=job):
            if r.status in status:
                return r
        return None

    # -- landing files --
    def known_files(self) -> dict[tuple[str, str], str]:
        """``(path, checksum) -> status`` of every landing file recorded so far."""
        table = self.lake.read(LEDGER_FILES, columns=["path", "checksum", "status"])
        if table.num_rows == 0:
            return {}
        out: dict[tuple[str, str], str] = {}
        for p, c, s in zip(table["path"].to_pylist(), table["checksum"].to_pylist(), table["status"].to_pylist()):
            if out.get((p, c)) != "ingested":  # an ingest after a rejection wins
                out[(p, c)] = s
        return out

    def recorded_runs_with_files(self) -> set[str]:
        table = self.lake.read(LEDGER_FILES, columns=["run_id"])
        return set(table["run_id"].to_pylist()) if table.num_rows else set()

    def record_files(self, files: list[FileRecord]) -> None:
        if not files:
            return
        now = utcnow()
        rows = [{**f.__dict__, "recorded_at": now} for f in files]
        self.lake.append(LEDGER_FILES, pa.Table.from_pylist(rows, schema=FILES_SCHEMA))

    # -- dead letters --
    def record_dead_letters(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        now = utcnow()
        rows = [{**d.__dict__, "recorded_at": now} for d in letters]
        self.lake.append(LEDGER_DLQ, pa.Table.from_pylist(rows, schema=DLQ_SCHEMA))

    def dead_letters(self, store: str | None = None, status: str | None = "pending") -> list[DeadLetter]:
        """The latest record of each dead letter (oldest first), optionally by store and status."""
        table = self.lake.read(LEDGER_DLQ)
        if table.num_rows == 0:
            return []
        latest: dict[str, dict[str, Any]] = {}
        for row in table.sort_by([("recorded_at", "ascending")]).to_pylist():
            latest[row["dlq_id"]] = row
        out = [DeadLetter(**{k: v for k, v in r.items() if k != "recorded_at"}) for r in latest.values()]
        out = [d for d in out if (store is None or d.store == store) and (status is None or d.status == status)]
        return sorted(out, key=lambda d: d.created_at)


    # -- watermarks --
    def watermarks(self, stage: str) -> dict[str, int]:
        """``source table -> version`` this stage has processed (empty: it never ran to the end)."""
        table = self.lake.read(LEDGER_WATERMARKS)
        if table.num_rows == 0:
            return {}
        table = table.filter(pc.equal(table["stage"], stage)).sort_by([("recorded_at", "ascending")])
        return {src: int(v) for src, v in zip(table["source"].to_pylist(), table["version"].to_pylist())}

    def oldest_watermarks(self) -> dict[str, int]:
        """Per source table, the oldest version any stage's (latest) watermark still points at."""
        table = self.lake.read(LEDGER_WATERMARKS)
        if table.num_rows == 0:
            return {}
        latest: dict[tuple[str, str], int] = {}
        for stage, src, v in zip(*(table.sort_by([("recorded_at", "ascending")])[c].to_pylist() for c in ("stage", "source", "version"))):
            latest[(stage, src)] = int(v)
        out: dict[str, int] = {}
        for (_, src), v in latest.items():
            out[src] = min(out.get(src, v), v)
        return out

    def watermark(self, stage: str, source: str) -> int | None:
        return self.watermarks(stage).get(source)

    def advance(self, stage: str, versions: dict[str, int], run_id: str) -> None:
        """Record that ``stage`` has processed ``versions`` of its sources (one commit)."""
        if not versions:
            return
        now = utcnow()
        rows = [{"stage": stage, "source": s, "version": int(v), "run_id": run_id, "recorded_at": now} for s, v in versions.items()]
        self.lake.append(LEDGER_WATERMARKS, pa.Table.from_pylist(rows, schema=WATERMARKS_SCHEMA))


@dataclass
class DeadLetter:
    """A batch one store could not take: its rows are in the Parquet file at ``path``."""

    dlq_id: str
    store: str
    dataset: str
    run_id: str
    error: str | None
    attempts: int
    rows: int
    path: str
    status: str = "pending"
    resolved_run_id: str | None = None
    created_at: datetime = field(default_factory=utcnow)
