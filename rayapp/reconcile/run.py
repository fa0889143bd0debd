"""The ``reconcile`` run: prove each store equals the lake, and with ``repair`` make it so.

For each chosen store and each of its views (:mod:`rayapp.sinks.views`): split the keys into
ranges of about ``reconcile_range_rows`` lake rows, read the lake's rows (as of the versions the
store's watermark says it received) and the store's rows of one range, and compare them by key
and content, column by column (:mod:`rayapp.reconcile.compare`). ``repair`` re-sends the missing and different
rows and deletes the extra ones through the normal writer actors — as *repair* blocks, which
replace what the store holds for their keys whatever its version — then compares again: the
verdict counts what was found, what was repaired and what remains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import Dataset
from rayapp.lake import Lake
from rayapp.ledger import Ledger, StageResult
from rayapp.publish.changes import SOURCES, store_watermark
from rayapp.reconcile.compare import Diff, compare
from rayapp.reconcile.expected import RANGE_SOURCE, Snapshot, dataset_rows, key_bounds, view_rows
from rayapp.sinks import select
from rayapp.sinks.base import REPAIR, StoreSpec
from rayapp.sinks.views import VIEWS, View
from rayapp.transforms import serving as sv
from rayapp.urls import redact_url

logger = logging.getLogger(__name__)


@dataclass
class Fix:
    """What one key range of a view needs: keys to re-send, and the store's rows to delete."""

    lo: str
    hi: str
    resend: list[tuple[Any, ...]]
    delete: pa.Table


@dataclass(kw_only=True)
class ReconcileResult(StageResult):
    found: dict[str, dict[str, Diff]] = field(default_factory=dict)
    remaining: dict[str, dict[str, Diff]] = field(default_factory=dict)


def snapshot(lake: Lake, ledger: Ledger, spec: StoreSpec[Any]) -> Snapshot:
    mark = store_watermark(lake, ledger, spec)
    versions = dict(mark) if mark else {t: v for t in SOURCES if (v := lake.version(t)) is not None}
    return Snapshot(versions, lake.settings.vector_min_score)


def check_store(lake: Lake, spec: StoreSpec[Any], snap: Snapshot, bounds: dict[tuple[Any, ...], list[tuple[str, str]]] | None = None,
                ) -> tuple[dict[str, Diff], dict[str, list[Fix]]]:
    """Compare every view of one store with the lake, range by range (``bounds``: key ranges
    already computed in this run, by lake table, column and version, filled as it goes)."""
    bounds = {} if bounds is None else bounds
    diffs: dict[str, Diff] = {}
    fixes: dict[str, list[Fix]] = {}
    sink = spec.make(lake.settings)
    try:
        sink.on_write_start()
        for name in spec.view_names():
            view = VIEWS[name]
            diff = diffs[name] = Diff()
            table, column = RANGE_SOURCE[name]
            at = (table, column, snap.versions.get(table))
            if at not in bounds:
                bounds[at] = key_bounds(lake, name, snap, lake.settings.reconcile_range_rows)
            for lo, hi in bounds[at]:
                want = view_rows(view, dataset_rows(lake, view, snap, lo, hi, compare_only=True))
                have = sink.scan(name, lo, hi)
                resend, delete = compare(view, want, have, diff)
                if resend or delete:
                    fixes.setdefault(name, []).append(Fix(lo, hi, resend, _rows_of(view, have, delete)))
            logger.info("reconcile %s %s: %s", spec.name, name, diff.as_dict())
    finally:
        sink.close()
    return diffs, fixes


def _key_mask(view: View, rows: pa.Table, keys: list[tuple[Any, ...]]) -> pa.Array:
    wanted = set(keys)
    cols = [rows[k].to_pylist() for k in view.key]
    return pa.array([k in wanted for k in zip(*cols)], pa.bool_())


def _rows_of(view: View, rows: pa.Table, keys: list[tuple[Any, ...]]) -> pa.Table:
    return rows.filter(_key_mask(view, rows.select(view.schema.names).cast(view.schema), keys)) if keys else rows.slice(0, 0)


def repair_blocks(lake: Lake, view: View, snap: Snapshot, fix: Fix) -> list[tuple[Dataset, pa.Table]]:
    """The repair blocks of one range: lake rows for the keys to re-send, deletes for the extra ones."""
    rows = dataset_rows(lake, view, snap, fix.lo, fix.hi)
    if view.name == "used":  # every transaction of the accounts whose device use differs: the graph redoes them
        accounts = {k[0] for k in fix.resend} | set(fix.delete["account_id"].to_pylist())
        resend = rows.filter(pc.is_in(rows["account_id"], pa.array(sorted(accounts), pa.string())))
        lost = accounts - set(resend["account_id"].to_pylist())  # stray accounts: their pairs only
        pairs = fix.delete.filter(pc.is_in(fix.delete["account_id"], pa.array(sorted(lost), pa.string())))
        gone = pa.table({"transaction_id": [f"reconcile:{a}/{d}" for a, d in zip(pairs["account_id"].to_pylist(), pairs["device_id"].to_pylist())],
                         "account_id": pairs["account_id"], "device_id": pairs["device_id"]})  # fmt: skip
    else:
        resend = rows.filter(_key_mask(view, rows, fix.resend))
        gone = fix.delete.select([c for c in fix.delete.column_names if c in (*view.key, "account_id", "merchant_id")])
    out: list[tuple[Dataset, pa.Table]] = []
    if resend.num_rows:
        out.append((view.dataset, resend))
    if gone.num_rows:
        if view.dataset in (Dataset.MERCHANT_VECTORS, Dataset.TRANSACTION_VECTORS):
            stamp = pa.repeat(pa.scalar(0 if view.dataset == Dataset.MERCHANT_VECTORS else datetime.now(timezone.utc)), gone.num_rows)
            out.append((view.dataset, pa.table({"id": gone["id"], "vector": pa.nulls(gone.num_rows, pa.list_(pa.float32())),
                                                "_version": stamp})))  # fmt: skip
        else:
            version = pa.scalar(datetime.now(timezone.utc)) if view.dataset in (Dataset.TRANSACTIONS, Dataset.PREDICTIONS) else pa.scalar(0)
            out.append((view.dataset, sv.tombstones(view.dataset, gone.append_column("_version", pa.repeat(version, gone.num_rows)))))
    return out


def send_repairs(lake: Lake, spec: StoreSpec[Any], snap: Snapshot, fixes: dict[str, list[Fix]], run_id: str) -> dict[str, int]:
    """Send every repair block through the store's writer actors; returns rows written and failed."""
    import ray

    from rayapp.publish.embedding import embed
    from rayapp.publish.writers import Fanout, start_writers, stop_writers
    from rayapp.serving import serve_app_running
    from rayapp.sinks.base import conform

    pools = start_writers(lake, [spec.name], run_id)
    fan = Fanout(lake, run_id, pools, dead_letter=False)
    size = spec.batch_rows(lake.settings)
    try:
        for name, ranges in fixes.items():
            for fix in ranges:
                for dataset, block in repair_blocks(lake, VIEWS[name], snap, fix):
                    if dataset in (Dataset.MERCHANT_VECTORS, Dataset.TRANSACTION_VECTORS) and "vector" not in block.column_names:
                        block = embed(block, serve_app_running(), lake, run_id)
                    for start in range(0, block.num_rows, size):
                        part = conform(dataset, block.slice(start, size)).replace_schema_metadata(REPAIR)
                        fan.submit(spec.name, dataset, ray.put(part))
        tally = fan.drain()[spec.name]
    finally:
        stop_writers(pools)
    return {"written": sum(tally.written.values()), "failed": sum(tally.failed.values())}


def reconcile(lake: Lake, ledger: Ledger, run_id: str, *, stores: list[str] | None = None, repair: bool = False) -> ReconcileResult:
    """Compare (and with ``repair`` fix) each chosen store; see the module docstring."""
    from rayapp.metrics import set_reconcile_mismatches

    result = ReconcileResult(details={"stores": {}})
    counts: dict[str, int] = {"mismatches": 0, "repaired": 0, "remaining": 0}
    bounds: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
    for spec in select(stores):
        snap = snapshot(lake, ledger, spec)
        found, fixes = check_store(lake, spec, snap, bounds)
        total = sum(d.total for d in found.values())
        remaining, sent = found, {"written": 0, "failed": 0}
        if repair and total:
            sent = send_repairs(lake, spec, snap, fixes, run_id)
            remaining, _ = check_store(lake, spec, snap, bounds)
        left = sum(d.total for d in remaining.values())
        result.found[spec.name], result.remaining[spec.name] = found, remaining
        counts |= {f"{spec.name}.checked": sum(d.checked for d in found.values()), f"{spec.name}.mismatches": total,
                   f"{spec.name}.repaired": total - left if repair else 0, f"{spec.name}.remaining": left}  # fmt: skip
        counts["mismatches"] += total
        counts["repaired"] += counts[f"{spec.name}.repaired"]
        counts["remaining"] += left
        result.details["stores"][spec.name] = {
            "url": redact_url(spec.url(lake.settings)), "versions": snap.versions, "views": {n: d.as_dict() for n, d in found.items()},
            "after_repair": {n: d.as_dict() for n, d in remaining.items()} if repair and total else None, "repair_rows": sent,
        }  # fmt: skip
        set_reconcile_mismatches(spec.name, left)
    result.counts = counts
    result.versions_read = {t: v for s in result.details["stores"].values() for t, v in s["versions"].items()}
    result.status = "mismatch" if counts["remaining"] else "succeeded"
    return result
