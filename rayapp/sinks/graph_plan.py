"""Pure Arrow planning for the graph sink (no engine, no I/O): what a block of transactions puts in
the graph, which held PAID relationships newer rows replace, which USED ranges change, and the
exact USED ranges of account/device pairs recomputed after deletes."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import UTC_US
from rayapp.transforms.serving import first_of_runs


@dataclass(frozen=True)
class GraphRows:
    """What one block of transactions puts in the graph."""

    accounts: pa.Table  # id
    merchants: pa.Table  # id, name, category (newest version's)
    devices: pa.Table  # id
    paid: pa.Table  # transaction_id, account_id, merchant_id, device_id, amount, event_time, status, fraud_score, version
    used: pa.Table  # account_id, device_id, first_seen, last_seen


_GRAPH_COLUMNS = ["transaction_id", "account_id", "merchant_id", "merchant_name", "merchant_category", "device_id", "amount",
                  "event_time", "status", "fraud_score", "_version"]  # fmt: skip


def _set(t: pa.Table, *columns: str) -> pa.Table:
    """Rows of ``t`` where every one of ``columns`` is set (no filter pass when none is null)."""
    masks = [pc.is_valid(t[c]) for c in columns if t[c].null_count]
    if not masks:
        return t
    mask = masks[0]
    for m in masks[1:]:
        mask = pc.and_(mask, m)
    return t.filter(mask)


def _by_key_then_newest(keys: pa.ChunkedArray | pa.Array, version: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``sort_indices`` by (key ascending, version descending), ties in input order; the strings are
    ranked once through a dictionary, so the sort compares integers (~4x faster on a 1M-row block)."""
    encoded = pc.dictionary_encode(keys)
    encoded = encoded.combine_chunks() if isinstance(encoded, pa.ChunkedArray) else encoded
    rank = pc.take(pc.rank(encoded.dictionary, sort_keys="ascending"), encoded.indices)
    return pc.sort_indices(pa.table({"k": rank, "v": version}), sort_keys=[("k", "ascending"), ("v", "descending")])


def graph_rows(block: pa.Table) -> GraphRows:
    t = _set(block.select(_GRAPH_COLUMNS), "account_id", "merchant_id")
    merchants = t.select(["merchant_id", "merchant_name", "merchant_category"])
    latest = merchants.take(_by_key_then_newest(t["merchant_id"], t["_version"])) if t.num_rows else merchants
    first = first_of_runs(latest["merchant_id"])
    with_device = _set(t.select(["account_id", "device_id", "event_time"]), "device_id")
    used = with_device.group_by(["account_id", "device_id"]).aggregate([("event_time", "min"), ("event_time", "max")])
    used = used.rename_columns(["account_id", "device_id", "first_seen", "last_seen"])
    return GraphRows(
        accounts=pa.table({"id": pc.unique(t["account_id"])}),
        merchants=pa.table({"id": latest["merchant_id"].filter(first), "name": latest["merchant_name"].filter(first),
                            "category": latest["merchant_category"].filter(first)}),
        devices=pa.table({"id": pc.unique(with_device["device_id"])}),
        paid=pa.table({"transaction_id": t["transaction_id"], "account_id": t["account_id"], "merchant_id": t["merchant_id"],
                       "device_id": t["device_id"], "amount": t["amount"].cast(pa.float64()), "event_time": t["event_time"], "status": t["status"],
                       "fraud_score": t["fraud_score"], "version": t["_version"]}),
        used=used.filter(pc.is_valid(used["first_seen"])),
    )  # fmt: skip


PAID_HELD = pa.schema([("transaction_id", pa.string()), ("account_id", pa.string()), ("merchant_id", pa.string()), ("version", UTC_US),
                       ("device_id", pa.string())])  # fmt: skip
TOMBSTONES_HELD = pa.schema([("transaction_id", pa.string()), ("version", UTC_US)])
ACCOUNT_PAID = pa.schema([("account_id", pa.string()), ("device_id", pa.string()), ("event_time", UTC_US)])
USED_HELD = pa.schema([("account_id", pa.string()), ("device_id", pa.string()), ("first_seen", UTC_US), ("last_seen", UTC_US)])
ENDPOINTS = ["transaction_id", "account_id", "merchant_id"]


def plan_paid(paid: pa.Table, held: pa.Table) -> tuple[pa.Table, pa.Table]:
    """``(to_delete, to_create)``: the PAID relationships (``ENDPOINTS``) the graph holds that newer
    rows replace, and the rows to create. A row is skipped when the graph already holds a newer
    version of its transaction, or exactly this version on the same endpoints. Held duplicates
    (possible only from an older writer) are all replaced."""
    if held.num_rows == 0:
        return held.select(ENDPOINTS), paid
    incoming = paid.select(ENDPOINTS + ["version"]).rename_columns(["transaction_id", "new_account", "new_merchant", "new_version"])
    j = held.join(incoming, "transaction_id", join_type="inner")
    same_place = pc.and_(pc.equal(j["account_id"], j["new_account"]), pc.equal(j["merchant_id"], j["new_merchant"]))
    newer_held = pc.fill_null(pc.greater(j["version"], j["new_version"]), False)
    this_version = pc.fill_null(pc.and_(same_place, pc.equal(j["version"], j["new_version"])), False)
    per_id = pa.table({"transaction_id": j["transaction_id"], "newer": newer_held, "same": this_version}).group_by("transaction_id").aggregate(
        [("newer", "any"), ("same", "any"), ("transaction_id", "count")]
    )  # fmt: skip
    keep = pc.or_(per_id["newer_any"], pc.and_(per_id["same_any"], pc.equal(per_id["transaction_id_count"], 1)))
    skip = per_id["transaction_id"].filter(keep)
    to_create = paid.filter(pc.invert(pc.is_in(paid["transaction_id"], skip)))
    replaced = held.filter(pc.is_in(held["transaction_id"], to_create["transaction_id"])).select(ENDPOINTS)
    return replaced.group_by(ENDPOINTS).aggregate([]), to_create


def plan_used(used: pa.Table, held: pa.Table) -> pa.Table:
    """The USED rows that change the graph: pairs it does not hold, and pairs whose held
    ``first_seen``–``last_seen`` range they widen."""
    if held.num_rows == 0:
        return used
    pairs = ["account_id", "device_id"]
    held = held.group_by(pairs).aggregate([("first_seen", "min"), ("last_seen", "max")])
    j = used.join(held, pairs, join_type="left outer")
    widens = pc.or_kleene(pc.is_null(j["first_seen_min"]), pc.or_kleene(pc.less(j["first_seen"], j["first_seen_min"]), pc.greater(j["last_seen"], j["last_seen_max"])))
    return j.filter(pc.fill_null(widens, False)).select(used.column_names)


def newest(table: pa.Table, key: str = "transaction_id") -> pa.Table:
    """One row per ``key``: the one with the greatest ``version``."""
    ranked = table.sort_by([(key, "ascending"), ("version", "descending")])
    return ranked.filter(first_of_runs(ranked[key]))


def not_older_than(rows: pa.Table, marks: pa.Table, strictly: bool) -> pa.Array:
    """Per row of ``rows``: whether ``marks`` (transaction_id, version) holds a version newer than
    (``strictly``) or at least as new as the row's."""
    if marks.num_rows == 0:
        return pa.repeat(pa.scalar(False), rows.num_rows)
    m = newest(marks).rename_columns(["transaction_id", "_mark"])
    j = rows.select(["transaction_id", "version"]).append_column("_i", pa.array(range(rows.num_rows), pa.int64()))
    j = j.join(m, "transaction_id", join_type="left outer").sort_by("_i")
    cmp = pc.greater(j["_mark"], j["version"]) if strictly else pc.greater_equal(j["_mark"], j["version"])
    return pc.fill_null(cmp, False).combine_chunks() if isinstance(cmp, pa.ChunkedArray) else pc.fill_null(cmp, False)


def exact_used(pairs: pa.Table, paid: pa.Table) -> tuple[pa.Table, pa.Table]:
    """``(to_set, to_delete)`` for the (account_id, device_id) ``pairs`` whose USED range is
    recomputed from the PAID relationships their accounts hold now (``ACCOUNT_PAID`` rows): pairs
    with payments get exactly their first/last event time, the others lose the relationship."""
    keys = ["account_id", "device_id"]
    pairs = pairs.select(keys).group_by(keys).aggregate([])
    with_device = paid.filter(pc.is_valid(paid["device_id"]))
    ranges = with_device.group_by(keys).aggregate([("event_time", "min"), ("event_time", "max")])
    ranges = ranges.rename_columns(["account_id", "device_id", "first_seen", "last_seen"])
    j = pairs.join(ranges, keys, join_type="left outer")
    held = pc.is_valid(j["first_seen"])
    return j.filter(held).select(["account_id", "device_id", "first_seen", "last_seen"]), j.filter(pc.invert(held)).select(keys)
