"""Landing -> bronze: append every new landing file to ``<lake>/bronze/transactions``.

Files are listed on the driver, then parsed in parallel by Ray Data (one task per file, which
also takes the MD5 of the bytes it parses: a file is read once) and written by :class:`BronzeSink` workers as Parquet; the driver commits all
of them in one Delta transaction whose commit metadata names the run and its files. The
file ledger is written after the commit and repaired from that metadata if a run died in
between, so a file is never ingested twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import BRONZE, BRONZE_SCHEMA
from rayapp.errors import FileRejectedError, LakeUnreachableError
from rayapp.lake import Lake
from rayapp.lake_sink import DeltaAppendSink
from rayapp.ledger import FileRecord, Ledger, StageResult, utcnow
from rayapp.transforms.raw import detect_format, parse_landing, to_bronze

logger = logging.getLogger(__name__)

STAGE = "ingest"
_REJECT = "_reject_reason"
_MARKER_SCHEMA = BRONZE_SCHEMA.append(pa.field(_REJECT, pa.string()))
_CHUNK_ROWS = 250_000
_NOTE = "note:"  # a marker whose reason starts so carries a note for the file ledger, not a rejection
_SUM = "checksum:"  # ... or the checksum of the file's bytes, taken by the task that parsed them


@dataclass(frozen=True)
class LandingFile:
    uri: str
    fmt: str
    size: int
    checksum: str | None  # None: taken while parsing (a path the file ledger has never seen)


@dataclass(kw_only=True)
class IngestResult(StageResult):
    run_id: str
    landing: str
    files_seen: int = 0
    files_skipped: int = 0
    files_ingested: int = 0
    files_rejected: int = 0
    files_ignored: int = 0
    rows: int = 0
    bronze_version: int | None = None
    rejected: list[dict[str, str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)

    def finish(self) -> "IngestResult":
        """Fill the recorded counts, details and versions from the tallies."""
        self.counts = {
            "files_seen": self.files_seen,
            "files_skipped": self.files_skipped,
            "files_ingested": self.files_ingested,
            "files_rejected": self.files_rejected,
            "files_ignored": self.files_ignored,
            "rows_read": self.rows,
            "rows_written": self.rows,
        }
        self.details = {"landing": self.landing, "rejected": self.rejected, "notes": self.notes}
        self.versions_written = {BRONZE.name: self.bronze_version} if self.bronze_version is not None else {}
        return self


def _md5(fs: Any, path: str) -> str:
    h = hashlib.md5()
    with fs.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return "md5:" + h.hexdigest()


def list_landing(lake: Lake, landing_uri: str, seen: set[str] | None = None) -> tuple[list[LandingFile], int]:
    """Landing files (sorted by URI) and the count of ignored files. A file's checksum is its S3 ETag,
    else the MD5 of its content for a URI in ``seen`` (the file ledger knows it: is it the same
    content?); a URI never seen is new whatever its content, and its parse task takes the MD5."""
    try:
        fs, root = lake.fsspec(landing_uri)
        if not fs.exists(root):
            raise LakeUnreachableError(f"landing location {landing_uri} does not exist")
        infos = fs.find(root, detail=True)
    except LakeUnreachableError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise LakeUnreachableError(f"cannot list landing location {landing_uri}: {str(exc).splitlines()[0]}") from None
    candidates: list[tuple[str, str, int, str | None]] = []
    ignored = 0
    for path, info in sorted(infos.items()):
        if info.get("type") == "directory":
            continue
        fmt = detect_format(path)
        name = path.rsplit("/", 1)[-1]
        if fmt is None or name.startswith((".", "_")):
            ignored += 1
            continue
        etag = info.get("ETag") or info.get("etag")
        candidates.append((path, fmt, int(info.get("size") or 0), etag.strip('"') if etag else None))

    def checksum(c: tuple[str, str, int, str | None]) -> str | None:
        if c[3]:
            return f"etag:{c[3]}"
        return _md5(fs, c[0]) if seen is None or lake.to_uri(landing_uri, c[0]) in seen else None

    with ThreadPoolExecutor(max_workers=4) as pool:
        sums = list(pool.map(checksum, candidates))
    files = [LandingFile(lake.to_uri(landing_uri, c[0]), c[1], c[2], s) for c, s in zip(candidates, sums)]
    return files, ignored


#: Parse seconds per byte relative to CSV (measured on generated files: JSON Lines ~1.2x per byte,
#: Parquet ~3x, being compressed).
_COST_PER_BYTE = {"csv": 1.0, "jsonl": 1.2, "parquet": 3.0}


def _parse_cost(f: LandingFile) -> float:
    return f.size * _COST_PER_BYTE.get(f.fmt, 1.0)


def source_system_of(uri: str, landing: str, default: str) -> str:
    """``_source_system`` of a landing file: the source's name for ``<landing>/api/<source>/…`` (``ingest_api``), else ``default``."""
    rel = uri[len(landing.rstrip("/")) + 1 :].split("/") if uri.startswith(landing.rstrip("/") + "/") else []
    return rel[1] if len(rel) > 2 and rel[0] == "api" and rel[1] else default


def parse_files(
    batch: pa.Table, *, lake: Lake, run_id: str, ingested_at: datetime, source_system: str, landing: str = ""
) -> Iterator[pa.Table]:
    """Ray Data UDF: landing-file descriptors in, bronze rows (or one rejection marker per bad file) out."""
    default_system = source_system
    sums = batch["checksum"].to_pylist() if "checksum" in batch.column_names else [None] * batch.num_rows
    for uri, fmt, known in zip(batch["uri"].to_pylist(), batch["fmt"].to_pylist(), sums):
        source_system = source_system_of(uri, landing, default_system) if landing else default_system
        fs, path = lake.fsspec(uri)
        with fs.open(path, "rb") as fh:
            data = fh.read()
        if known is None:  # the checksum of exactly the bytes parsed here
            yield _marker(uri, _SUM + "md5:" + hashlib.md5(data).hexdigest(), run_id, ingested_at, source_system)
        try:
            parsed = parse_landing(data, fmt)
            del data
            table = to_bronze(parsed, batch_id=run_id, ingested_at=ingested_at, source_file=uri, source_system=source_system)
        except FileRejectedError as exc:
            logger.warning("rejected %s: %s", uri, exc)
            yield _marker(uri, str(exc), run_id, ingested_at, source_system)
            continue
        table = table.append_column(_REJECT, pa.nulls(table.num_rows, pa.string()))
        if parsed.note:
            logger.warning("%s: %s", uri, parsed.note)
            yield _marker(uri, _NOTE + parsed.note, run_id, ingested_at, source_system)
        if table.num_rows == 0:
            yield _marker(uri, None, run_id, ingested_at, source_system)  # counts the empty file as ingested
        for off in range(0, table.num_rows, _CHUNK_ROWS):
            yield table.slice(off, _CHUNK_ROWS)


def _marker(uri: str, reason: str | None, run_id: str, ingested_at: datetime, source_system: str) -> pa.Table:
    row = {c: None for c in _MARKER_SCHEMA.names}
    row.update(_batch_id=run_id, _ingested_at=ingested_at, _source_file=uri, _source_row=0, _source_system=source_system)
    row[_REJECT] = reason if reason is not None else ""
    return pa.Table.from_pylist([row], schema=_MARKER_SCHEMA)


class BronzeSink(DeltaAppendSink):
    """Appends parsed rows to bronze; pulls rejection markers and per-file row counts aside."""

    def __init__(self, lake: Lake, run_id: str, checksums: dict[str, str | None]) -> None:
        super().__init__(lake, BRONZE, {"rayapp.run_id": run_id})
        self.listed = checksums

    def split_block(self, table: pa.Table) -> tuple[pa.Table, list[Any]]:
        side: list[Any] = []
        if _REJECT not in table.column_names:
            return table, side
        is_marker = pc.is_valid(table[_REJECT])
        markers = table.filter(is_marker)
        for uri, reason in zip(markers["_source_file"].to_pylist(), markers[_REJECT].to_pylist()):
            if reason.startswith(_NOTE):
                side.append(("note", uri, reason.removeprefix(_NOTE)))
            elif reason.startswith(_SUM):
                side.append(("checksum", uri, reason.removeprefix(_SUM)))
            else:
                side.append(("rejected", uri, reason) if reason else ("rows", uri, 0))
        data = table.filter(pc.invert(is_marker)).drop_columns([_REJECT])
        if data.num_rows:
            vc = pc.value_counts(data["_source_file"])
            for item in vc.to_pylist():
                side.append(("rows", item["values"], item["counts"]))
        return data, side

    def file_rows(self) -> dict[str, int]:
        rows: dict[str, int] = {}
        for kind, uri, value in self.side_results:
            if kind == "rows":
                rows[uri] = rows.get(uri, 0) + int(value)
        return rows

    def rejected(self) -> dict[str, str]:
        return {uri: value for kind, uri, value in self.side_results if kind == "rejected"}

    def notes(self) -> dict[str, str]:
        return {uri: value for kind, uri, value in self.side_results if kind == "note"}

    def checksums(self) -> dict[str, str]:
        """Each file's checksum: from the listing, else the one its parse task took."""
        taken = {uri: value for kind, uri, value in self.side_results if kind == "checksum"}
        return {uri: listed or taken[uri] for uri, listed in self.listed.items() if listed or uri in taken}

    def commit_metadata(self) -> dict[str, str]:
        rejected = self.rejected()
        sums = self.checksums()
        manifest = [[u, sums[u], n] for u, n in sorted(self.file_rows().items()) if u not in rejected]
        return {**self.metadata, "rayapp.files": json.dumps(manifest)}


def reconcile_file_ledger(lake: Lake, ledger: Ledger) -> int:
    """Record files of bronze commits whose run died before writing the file ledger; returns how many."""
    if not lake.exists(BRONZE):
        return 0
    history = lake.open(BRONZE).history(limit=10)
    recorded = ledger.recorded_runs_with_files()
    repaired: list[FileRecord] = []
    for commit in history:
        run_id = commit.get("rayapp.run_id")
        if not run_id or run_id in recorded or "rayapp.files" not in commit:
            continue
        for path, checksum, rows in json.loads(commit["rayapp.files"]):
            repaired.append(FileRecord(path, checksum, None, "ingested", rows, "recovered from bronze commit", run_id, commit["version"]))
    if repaired:
        logger.warning("recovering %d file record(s) from bronze commits without ledger entries", len(repaired))
        ledger.record_files(repaired)
    return len(repaired)


def ingest(
    lake: Lake,
    ledger: Ledger,
    run_id: str,
    landing_uri: str | None = None,
    retry_rejected: bool = False,
) -> IngestResult:
    """Append every landing file not ingested before to bronze, in one commit.

    Args:
        landing_uri: local folder or ``s3://`` prefix (default: the ``landing_uri`` setting).
        retry_rejected: parse again files that an earlier run rejected (same content).
    """
    import ray

    landing = landing_uri or lake.settings.landing
    lake.check_reachable()
    reconcile_file_ledger(lake, ledger)
    known = ledger.known_files()
    files, ignored = list_landing(lake, landing, {uri for uri, _ in known})
    todo = [
        f for f in files
        if (status := known.get((f.uri, f.checksum))) is None or (retry_rejected and status == "rejected")
    ]  # fmt: skip
    result = IngestResult(run_id=run_id, landing=landing, files_seen=len(files), files_skipped=len(files) - len(todo), files_ignored=ignored)
    logger.info("landing %s: %d file(s), %d new, %d already seen", landing, len(files), len(todo), result.files_skipped)
    if not todo:
        return result.finish()

    ingested_at = utcnow()
    sink = BronzeSink(lake, run_id, {f.uri: f.checksum for f in todo})
    # Largest first: the long parses start at once and the short ones fill in beside them, so
    # no core idles at the end waiting on one big file (bronze rows do not depend on the order).
    items = [{"uri": f.uri, "fmt": f.fmt, "checksum": f.checksum} for f in sorted(todo, key=_parse_cost, reverse=True)]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        parse_files,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={
            "lake": lake,
            "run_id": run_id,
            "ingested_at": ingested_at,
            "source_system": lake.settings.source_system,
            "landing": landing,
        },
    )
    ds.write_datasink(sink)

    rows, rejected, notes, sums = sink.file_rows(), sink.rejected(), sink.notes(), sink.checksums()
    result.bronze_version = sink.committed_version
    records: list[FileRecord] = []
    for f in todo:
        if f.uri in rejected:
            records.append(FileRecord(f.uri, sums[f.uri], f.size, "rejected", None, rejected[f.uri], run_id, None))
            result.rejected.append({"file": f.uri, "reason": rejected[f.uri]})
        else:
            n = rows.get(f.uri, 0)
            records.append(FileRecord(f.uri, sums[f.uri], f.size, "ingested", n, notes.get(f.uri), run_id, sink.committed_version))
            result.rows += n
            if f.uri in notes:
                result.notes.append({"file": f.uri, "note": notes[f.uri]})
    result.files_rejected = len(rejected)
    result.files_ingested = len(todo) - len(rejected)
    ledger.record_files(records)
    return result.finish()
