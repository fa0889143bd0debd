"""``maintain``: lake housekeeping — compact small files, Z-order silver, checkpoint the logs, vacuum.

Every run adds files and commits (the ledger one commit per record); nothing else ever removes
them. Per table: ``optimize.compact`` (silver: ``z_order(["account_id"])``, the key the feature and
graph passes group by), a checkpoint and log cleanup (``delta.logRetentionDuration``), then
``vacuum`` of files removed longer ago than ``RAYAPP_LAKE_RETENTION_HOURS`` (the time-travel
window: ``--as-of-version`` reaches that far back) — never a file a kept version needs: every
version from the oldest one a stage's watermark points at to the current one (incremental stages
read the change feed from there), and every version committed within ``RAYAPP_API_URL_TTL_S`` (a
presigned file URL may name it). A table a concurrent writer commits to first is left as it is
for the next run (reported, not an error: nothing was lost).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow.compute as pc

from rayapp.catalog import SILVER, TABLES, TableDef
from rayapp.lake import Lake
from rayapp.ledger import Ledger, StageResult

logger = logging.getLogger(__name__)

ZORDER: dict[str, list[str]] = {SILVER.name: ["account_id"]}


@dataclass(kw_only=True)
class MaintainResult(StageResult):
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)


def _footprint(lake: Lake, table: TableDef) -> dict[str, int]:
    """Files and bytes the current snapshot reads (``files``, ``bytes``), and all data files on
    storage, referenced or not (``disk_files``, ``disk_bytes``; the log aside)."""
    import pyarrow as pa

    fs, path = lake.fsspec(lake.uri(table))
    disk = [f for f in fs.find(path, detail=True).values() if "/_delta_log/" not in f["name"] and f["type"] == "file"]
    live = pa.table(lake.open(table).get_add_actions(flatten=True))
    return {"files": live.num_rows, "bytes": int(pc.sum(live["size_bytes"]).as_py() or 0) if live.num_rows else 0,
            "disk_files": len(disk), "disk_bytes": sum(int(f.get("size") or 0) for f in disk)}  # fmt: skip


def watermark_floor(lake: Lake, table: TableDef) -> int | None:
    """The oldest version of ``table`` any stage's watermark still points at (None: no stage reads it incrementally)."""
    return Ledger(lake).oldest_watermarks().get(table.name)


def maintain(lake: Lake, ledger: Ledger, run_id: str, *, retention_hours: float, tables: list[str] | None = None,
             dry_run: bool = False) -> MaintainResult:  # fmt: skip
    """Compact, checkpoint and vacuum the lake's tables (default: every catalog table that exists).

    Args:
        retention_hours: files removed longer ago than this may be deleted (whole hours, rounded up), unless a
            kept version needs them: watermarked ones, and those committed within ``RAYAPP_API_URL_TTL_S``.
        dry_run: report what vacuum would delete; change nothing.
    """
    from deltalake import CommitProperties

    result = MaintainResult()
    pinned_since = datetime.now(timezone.utc).timestamp() * 1000 - lake.settings.api_url_ttl_s * 1000  # ms, as the log
    chosen = [TABLES[t] for t in tables] if tables else list(TABLES.values())
    floors = ledger.oldest_watermarks()  # read once: compaction and vacuum do not move watermarks
    for table in chosen:
        if not lake.exists(table):
            continue
        before = _footprint(lake, table)
        dt = lake.open(table)
        info: dict[str, Any] = {f"{k}_before": v for k, v in before.items()}
        if not dry_run:
            props = CommitProperties(custom_metadata={"rayapp.run_id": run_id, "rayapp.operation": "maintain"})
            try:
                metrics = (dt.optimize.z_order(ZORDER[table.name], commit_properties=props) if table.name in ZORDER
                           else dt.optimize.compact(commit_properties=props))  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - a concurrent writer won the commit: this table waits for the next run
                info["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                result.tables[table.name] = {**info, **{f"{k}_after": v for k, v in before.items()}, "vacuumed": 0}
                logger.warning("%s: not compacted (%s); the next maintain run tries again", table.name, info["error"])
                continue
            info["compacted"] = {"files_removed": metrics.get("numFilesRemoved", 0), "files_added": metrics.get("numFilesAdded", 0)}
            dt = lake.open(table)
            dt.create_checkpoint()
            dt.cleanup_metadata()
        floor = floors.get(table.name)
        current = dt.version()
        keep = set(range(floor, current + 1)) if floor is not None else {current}
        # Versions a presigned file URL may still name (committed within the URLs' lifetime).
        keep |= {int(h["version"]) for h in dt.history() if h.get("timestamp", 0) >= pinned_since and "version" in h}
        removed = dt.vacuum(retention_hours=math.ceil(retention_hours), dry_run=dry_run, enforce_retention_duration=False,
                            keep_versions=sorted(keep))  # fmt: skip
        after = before if dry_run else _footprint(lake, table)
        info.update({f"{k}_after": v for k, v in after.items()}, vacuumed=len(removed), kept_from_version=floor, version=lake.version(table))
        result.tables[table.name] = info
        logger.info("%s: read %d -> %d files, %d -> %d bytes; on storage %d -> %d files (vacuum %s %d; versions from %s kept)", table.name,
                    before["files"], after["files"], before["bytes"], after["bytes"], before["disk_files"], after["disk_files"],
                    "would remove" if dry_run else "removed", len(removed), floor if floor is not None else current)  # fmt: skip
    result.counts = {f"{k}_{when}": sum(t[f"{k}_{when}"] for t in result.tables.values())
                     for k in ("files", "bytes", "disk_files", "disk_bytes") for when in ("before", "after")}  # fmt: skip
    result.counts["files_vacuumed"] = sum(t["vacuumed"] for t in result.tables.values())
    result.details = {"tables": result.tables, "retention_hours": retention_hours, "dry_run": dry_run,
                      "at": datetime.now(timezone.utc).isoformat()}  # fmt: skip
    return result
