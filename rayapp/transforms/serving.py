"""Pure Arrow shaping of lake rows for the serving stores (no Ray, no I/O)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import BUSINESS_COLUMNS, PREDICTION_COLUMNS, UTC_US, Dataset, dataset_schema

#: Silver columns a transaction row carries to the stores.
TRANSACTION_SOURCE_COLUMNS = (*BUSINESS_COLUMNS, "_updated_at")
#: What the merchant profile needs from each transaction.
MERCHANT_ATTRIBUTE_COLUMNS = ("merchant_id", "merchant_name", "merchant_category", "description", "country", "updated_at", "transaction_id")


def plain_strings(table: pa.Table) -> pa.Table:
    """``string_view`` / ``large_string`` columns as ``string`` (delta-rs MERGE output and polars
    use views, which many Arrow kernels and joins do not take)."""
    fields = [pa.field(f.name, pa.string(), f.nullable) if pa.types.is_string_view(f.type) or pa.types.is_large_string(f.type) else f for f in table.schema]
    return table if all(f.type == g.type for f, g in zip(fields, table.schema)) else table.cast(pa.schema(fields))


def live(rows: pa.Table) -> pa.Table:
    """Rows the lake holds, marked as such (``_deleted`` false)."""
    return rows.append_column("_deleted", pa.repeat(pa.scalar(False), rows.num_rows))


def tombstones(dataset: Dataset, known: pa.Table) -> pa.Table:
    """Tombstone rows of ``dataset``: the columns ``known`` carries (keys, ``_version``, for
    transactions their account, merchant and device), nulls elsewhere, ``_deleted`` true."""
    n = known.num_rows
    cols = {}
    for f in dataset_schema(dataset):
        if f.name == "_deleted":
            cols[f.name] = pa.repeat(pa.scalar(True), n)
        elif f.name in known.column_names:
            cols[f.name] = known[f.name].cast(f.type)
        else:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols, schema=dataset_schema(dataset))


def first_of_runs(sorted_keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """True where a sorted key column starts a new run of equal values."""
    keys = sorted_keys.combine_chunks() if isinstance(sorted_keys, pa.ChunkedArray) else sorted_keys
    if len(keys) == 0:
        return pa.array([], pa.bool_())
    prev = pa.concat_arrays([pa.array([None], keys.type), keys.slice(0, len(keys) - 1)])
    return pc.fill_null(pc.not_equal(keys, prev), True)


def latest_by(table: pa.Table, key: str, order: list[str]) -> pa.Table:
    """One row per ``key`` (nulls dropped): the one greatest by ``order`` (ties: later columns)."""
    table = table.filter(pc.is_valid(table[key]))
    ranked = table.sort_by([(key, "ascending"), *((c, "descending") for c in order)])
    return ranked.filter(first_of_runs(ranked[key]))


def latest_predictions(predictions: pa.Table) -> pa.Table:
    """Newest prediction per transaction (by ``scored_at``, then ``model_version``)."""
    cols = predictions.select(["transaction_id", *PREDICTION_COLUMNS])
    return latest_by(cols, "transaction_id", ["scored_at", "model_version"])


def with_prediction(silver: pa.Table, latest: pa.Table | None) -> pa.Table:
    """Silver rows joined with their latest prediction; ``_version`` = the later of the row's and
    the prediction's change time, so either changing makes a newer version."""
    silver = silver.select(list(TRANSACTION_SOURCE_COLUMNS))
    if latest is None or latest.num_rows == 0:
        n = silver.num_rows
        joined = silver
        for name, typ in (("model_version", pa.string()), ("fraud_score", pa.float64()), ("is_fraud_pred", pa.bool_()), ("scored_at", UTC_US)):
            joined = joined.append_column(name, pa.nulls(n, typ))
    else:
        joined = silver.join(latest, "transaction_id", join_type="left outer")
    as_int = [pc.cast(joined[c], pa.int64()) for c in ("_updated_at", "scored_at")]  # no tz-aware max kernel
    version = pc.cast(pc.max_element_wise(*as_int, skip_nulls=True), UTC_US)
    return live(joined.append_column("_version", version)).sort_by("transaction_id")


def merchant_attributes(rows: pa.Table) -> pa.Table:
    """Latest descriptive attributes per merchant (from its most recently updated transaction).
    Partial results of several blocks combine by applying this again to their concatenation."""
    return latest_by(rows.select(list(MERCHANT_ATTRIBUTE_COLUMNS)), "merchant_id", ["updated_at", "transaction_id"])


def merchant_attributes_of(parts: list[pa.Table]) -> pa.Table:
    """Combine per-block partial attributes (an empty, typed table when there are none)."""
    if parts:
        return merchant_attributes(pa.concat_tables(parts))
    return pa.table({c: pa.array([], UTC_US if c == "updated_at" else pa.string()) for c in MERCHANT_ATTRIBUTE_COLUMNS})


def merchant_stats(gold_merchant: pa.Table) -> pa.Table:
    """Lifetime totals per merchant from ``merchant_daily_stats`` rows."""
    t = gold_merchant.select(["merchant_id", "txn_count", "fraud_count"])
    agg = t.group_by("merchant_id").aggregate([("txn_count", "sum"), ("fraud_count", "sum")])
    txns = agg["txn_count_sum"]
    rate = pc.divide(pc.cast(agg["fraud_count_sum"], pa.float64()), pc.cast(txns, pa.float64()))
    return pa.table({"merchant_id": agg["merchant_id"], "txn_count": txns, "fraud_count": agg["fraud_count_sum"], "fraud_rate": rate})


def _s(v: object) -> str:
    return "" if v is None else str(v)


def merchant_profiles(attributes: pa.Table, stats: pa.Table, version: int) -> pa.Table:
    """Merchant profile rows (text to embed + metadata) for merchants present in ``stats``."""
    joined = stats.join(attributes, "merchant_id", join_type="left outer").sort_by("merchant_id")
    texts = []
    for r in joined.to_pylist():
        texts.append(
            f"{_s(r['merchant_name'])} is a {_s(r['merchant_category'])} merchant in {_s(r['country'])}. "
            f"Example: {_s(r['description'])}. {r['txn_count']} transactions, {100 * (r['fraud_rate'] or 0):.2f}% reported as fraud."
        )
    n = joined.num_rows
    return pa.table(
        {
            "id": joined["merchant_id"],
            "text": pa.array(texts, pa.string()),
            "name": joined["merchant_name"],
            "category": joined["merchant_category"],
            "country": joined["country"],
            "txn_count": joined["txn_count"],
            "fraud_count": joined["fraud_count"],
            "fraud_rate": joined["fraud_rate"],
            "_version": pa.repeat(pa.scalar(version, pa.int64()), n),
        }
    )


def transaction_vector_rows(transactions: pa.Table, min_score: float, with_deletes: bool) -> pa.Table:
    """Rows for the ``transactions`` vector collection: text to embed for ``fraud_score >= min_score``;
    with ``with_deletes``, the other rows (and tombstones) too, without text: the store removes them."""
    high = pc.fill_null(pc.greater_equal(transactions["fraud_score"], min_score), False)
    if "_deleted" in transactions.column_names:  # a tombstone removes the vector too
        high = pc.and_(high, pc.invert(pc.fill_null(transactions["_deleted"], False)))
    t = transactions if with_deletes else transactions.filter(high)
    if not with_deletes:
        high = pa.repeat(pa.scalar(True), t.num_rows)
    texts = []
    for keep, r in zip(high.to_pylist(), t.select(["merchant_name", "merchant_category", "amount", "currency", "channel", "country", "description"]).to_pylist()):
        texts.append(
            f"{_s(r['merchant_name'])} ({_s(r['merchant_category'])}): {_s(r['amount'])} {_s(r['currency'])} "
            f"by {_s(r['channel'])} in {_s(r['country'])}. {_s(r['description'])}"
            if keep
            else None
        )
    return pa.table(
        {
            "id": t["transaction_id"],
            "text": pa.array(texts, pa.string()),
            "account_id": t["account_id"],
            "merchant_id": t["merchant_id"],
            "amount": pc.cast(t["amount"], pa.float64()),
            "fraud_score": t["fraud_score"],
            "model_version": t["model_version"],
            "event_time": t["event_time"],
            "_version": t["_version"],
        }
    )
