"""What each store must hold, computed from the lake one key range at a time.

A store is compared with the lake *as of the versions its watermark says it received* (the
current versions when it has none), so a change not yet published is not a difference. Every
reader filters on the view's first key column, which Delta's file statistics and Arrow's scan
push down; memory holds one key range of one table at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import GOLD_ACCOUNT, GOLD_DATASETS, GOLD_MERCHANT, PREDICTION_COLUMNS, PREDICTIONS, SILVER, Dataset, dataset_schema
from rayapp.lake import Lake
from rayapp.sinks.views import VIEWS, View
from rayapp.transforms import serving as sv

#: The lake table each view's keys come from, and the column its ranges split.
RANGE_SOURCE = {
    "transactions": (SILVER.name, "transaction_id"), "paid": (SILVER.name, "transaction_id"),
    "transaction_vectors": (SILVER.name, "transaction_id"), "predictions": (PREDICTIONS.name, "transaction_id"),
    "daily_account_activity": (GOLD_ACCOUNT.name, "account_id"), "merchant_daily_stats": (GOLD_MERCHANT.name, "merchant_id"),
    "used": (SILVER.name, "account_id"), "merchant_vectors": (GOLD_MERCHANT.name, "merchant_id"),
}  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    """The lake versions a store is compared with, and the vector score threshold."""

    versions: dict[str, int]
    min_score: float


def _scan(lake: Lake, table: str, snap: Snapshot, column: str, lo: str, hi: str, columns: list[str]) -> pa.Table:
    """Rows of ``table`` (at the snapshot's version) with ``lo <= column < hi``, file by file: files
    whose Delta statistics put the column outside the range are skipped, and each file read is
    filtered before the next, so memory holds one range. (Arrow's own predicate pushdown cannot
    be used: files delta-rs MERGE wrote hold string_view statistics it cannot compare.)"""
    version = snap.versions.get(table)
    if version is None:
        return pa.table({c: pa.array([], pa.null()) for c in columns})  # the table did not exist then
    actions = pa.table(lake.open(table, version).get_add_actions(flatten=True))
    skip: set[str] = set()
    if f"min.{column}" in actions.column_names:
        for path, low, high in zip(actions["path"].to_pylist(), actions[f"min.{column}"].to_pylist(), actions[f"max.{column}"].to_pylist()):
            if low is not None and high is not None and (high < lo or low >= hi):
                skip.add(path.rsplit("/", 1)[-1])
    ds = lake.dataset(table, version)
    wanted = list(dict.fromkeys([*columns, column]))
    parts = []
    for frag in ds.get_fragments():
        if frag.path.rsplit("/", 1)[-1] in skip:
            continue
        t = sv.plain_strings(frag.to_table(schema=ds.schema, columns=wanted))
        keep = pc.and_(pc.greater_equal(t[column], lo), pc.less(t[column], hi))
        parts.append(t.filter(keep).select(columns))
    if not parts:
        return sv.plain_strings(ds.schema.empty_table()).select(columns)
    return pa.concat_tables(parts)


def key_bounds(lake: Lake, view: str, snap: Snapshot, range_rows: int) -> list[tuple[str, str]]:
    """Key ranges of about ``range_rows`` lake rows each, covering every possible key."""
    from rayapp.sinks.views import HIGHEST, LOWEST

    table, column = RANGE_SOURCE[view]
    version = snap.versions.get(table)
    keys = pa.array([], pa.string()) if version is None else pc.unique(
        sv.plain_strings(lake.dataset(table, version).to_table(columns=[column]))[column].combine_chunks())
    keys = pc.drop_null(keys).sort()  # type: ignore[attr-defined]
    cuts = [keys[i].as_py() for i in range(range_rows, len(keys), range_rows)]
    edges = [LOWEST, *cuts, HIGHEST]
    return list(zip(edges[:-1], edges[1:]))


def _transactions(lake: Lake, snap: Snapshot, column: str, lo: str, hi: str, predictions: bool = True) -> pa.Table:
    """Silver rows with ``column`` in range joined with their latest prediction (the transactions dataset)."""
    silver = _scan(lake, SILVER.name, snap, column, lo, hi, list(sv.TRANSACTION_SOURCE_COLUMNS))
    schema = dataset_schema(Dataset.TRANSACTIONS)
    if silver.num_rows == 0:
        return schema.empty_table()
    latest = None
    if predictions and PREDICTIONS.name in snap.versions:
        preds = _scan(lake, PREDICTIONS.name, snap, "transaction_id", lo, hi, ["transaction_id", *PREDICTION_COLUMNS]) \
            if column == "transaction_id" else _predictions_of(lake, snap, silver["transaction_id"])
        latest = sv.latest_predictions(sv.plain_strings(preds))
    rows = sv.with_prediction(silver, latest)
    return rows.select(schema.names).cast(schema)


def _predictions_of(lake: Lake, snap: Snapshot, ids: pa.ChunkedArray) -> pa.Table:
    """Predictions of some transactions (an account range's), file by file."""
    wanted = pc.unique(ids.combine_chunks())
    ds = lake.dataset(PREDICTIONS, snap.versions[PREDICTIONS.name])
    parts = []
    for frag in ds.get_fragments():
        t = sv.plain_strings(frag.to_table(schema=ds.schema, columns=["transaction_id", *PREDICTION_COLUMNS]))
        parts.append(t.filter(pc.is_in(t["transaction_id"], wanted)))
    return pa.concat_tables(parts) if parts else sv.plain_strings(ds.schema.empty_table()).select(["transaction_id", *PREDICTION_COLUMNS])


def dataset_rows(lake: Lake, view: View, snap: Snapshot, lo: str, hi: str, compare_only: bool = False) -> pa.Table:
    """The rows of ``view.dataset`` behind the view's keys in ``[lo, hi)``, as publish would send them
    (``compare_only``: what the comparison needs, which for USED leaves out the predictions)."""
    name = view.name
    if name in ("transactions", "paid"):
        rows = _transactions(lake, snap, "transaction_id", lo, hi)
        if name == "paid":
            rows = rows.filter(pc.and_(pc.is_valid(rows["account_id"]), pc.is_valid(rows["merchant_id"])))
        return rows
    if name == "used":  # every transaction of the accounts in range: what the graph's USED ranges derive from
        rows = _transactions(lake, snap, "account_id", lo, hi, predictions=not compare_only)
        return rows.filter(pc.and_(pc.is_valid(rows["account_id"]), pc.is_valid(rows["merchant_id"])))
    if name == "predictions":
        schema = dataset_schema(Dataset.PREDICTIONS)
        preds = _scan(lake, PREDICTIONS.name, snap, "transaction_id", lo, hi, ["transaction_id", *PREDICTION_COLUMNS])
        if preds.num_rows == 0:
            return schema.empty_table()
        return sv.live(preds.append_column("_version", preds["scored_at"])).select(schema.names).cast(schema)
    if name in ("daily_account_activity", "merchant_daily_stats"):
        table = GOLD_ACCOUNT.name if name == "daily_account_activity" else GOLD_MERCHANT.name
        dataset = GOLD_DATASETS[table]
        schema = dataset_schema(dataset)
        rows = _scan(lake, table, snap, RANGE_SOURCE[name][1], lo, hi, [n for n in schema.names if n not in ("_version", "_deleted")])
        if rows.num_rows == 0:
            return schema.empty_table()
        stamp = pa.repeat(pa.scalar(snap.versions[table], pa.int64()), rows.num_rows)
        return sv.live(rows.append_column("_version", stamp)).select(schema.names).cast(schema)
    if name == "transaction_vectors":
        rows = _transactions(lake, snap, "transaction_id", lo, hi)
        return sv.transaction_vector_rows(rows, snap.min_score, with_deletes=False)
    if name == "merchant_vectors":
        gold = _scan(lake, GOLD_MERCHANT.name, snap, "merchant_id", lo, hi, ["merchant_id", "txn_count", "fraud_count"])
        if gold.num_rows == 0:
            return _no_profiles()
        stats = sv.merchant_stats(gold)
        attrs = sv.merchant_attributes(_scan(lake, SILVER.name, snap, "merchant_id", lo, hi, list(sv.MERCHANT_ATTRIBUTE_COLUMNS)))
        return sv.merchant_profiles(attrs, stats, snap.versions[GOLD_MERCHANT.name])
    raise KeyError(name)


def _no_profiles() -> pa.Table:
    schema = dataset_schema(Dataset.MERCHANT_VECTORS)
    return pa.schema([f for f in schema if f.name != "vector"]).empty_table()


def view_rows(view: View, rows: pa.Table) -> pa.Table:
    """The view's columns of dataset rows (USED: the first and last payment per account and device)."""
    if view.name == "used":
        t = rows.filter(pc.is_valid(rows["device_id"]))
        used = t.group_by(["account_id", "device_id"]).aggregate([("event_time", "min"), ("event_time", "max")])
        return used.rename_columns(["account_id", "device_id", "first_seen", "last_seen"]).cast(view.schema)
    if view.name == "paid":
        rows = rows.set_column(rows.schema.get_field_index("amount"), "amount", rows["amount"].cast(pa.float64()))
    return rows.select(view.schema.names).cast(view.schema)


__all__ = ["VIEWS", "RANGE_SOURCE", "Snapshot", "dataset_rows", "key_bounds", "view_rows"]
