"""Bronze -> silver transforms: typed parse, expectations, normalisation, dedup, row hash.

Pure Arrow in, Arrow out: no Ray, no I/O. The rules (the contract other implementations are
checked against):

* every string is trimmed; ``currency``/``country`` upper-cased; ``channel``/``status``/
  ``merchant_category`` lower-cased;
* ``amount``: a plain decimal number (optional sign, optional exponent), rounded half-up to
  2 places; invalid when unparseable, ≤ 0 or > 1,000,000;
* ``event_time``/``updated_at``: ISO-8601 date or date-time (``T`` or space), optional
  fraction, optional ``Z``/``±HH[:MM]`` offset; naive means UTC; stored as UTC µs;
* ``is_fraud``: true/1 → true, false/0 → false (any case), anything else → null;
* ``country``: present but not two letters → null (warn rule ``invalid_country``).
"""

from __future__ import annotations

import hashlib
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import (
    AMOUNT_TYPE,
    BRONZE_META_FIELDS,
    BUSINESS_FIELDS,
    CONTRACT_COLUMNS,
    DAILY_ACCOUNT_SCHEMA,
    MERCHANT_DAILY_SCHEMA,
    ORDER_FIELDS,
    QUARANTINE_SCHEMA,
    SILVER_SCHEMA,
    STANDARD_SCHEMA,
    UTC_US,
)
from rayapp.quality import DEFAULT_RULES, Expectations
from rayapp.transforms.timestamps import parse_timestamp

CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "CNY", "INR", "BRL", "MXN", "SGD")
CHANNELS = ("online", "pos", "atm", "mobile")
STATUSES = ("pending", "settled", "reversed", "chargeback")
MAX_AMOUNT = Decimal("1000000")
#: Longest value (characters) each contract field may hold; longer ones fail ``field_too_long``.
FIELD_MAX_CHARS: dict[str, int] = {c: 64 for c in CONTRACT_COLUMNS} | {"merchant_name": 256, "description": 1024}
#: How much of an oversized value a quarantined row keeps (the rest is cut and counted).
QUARANTINE_KEEP_CHARS = 1024
_QUARANTINE_META = tuple(f.name for f in BRONZE_META_FIELDS)


# ---- value parsers -------------------------------------------------------------------------------


def trim(arr: pa.Array) -> pa.Array:
    return pc.utf8_trim_whitespace(arr)


def _blank(arr: pa.Array) -> np.ndarray:
    """True where null or empty after trim."""
    return pc.fill_null(pc.equal(pc.utf8_length(trim(arr)), 0), True).to_numpy(zero_copy_only=False)


_SIMPLE_AMOUNT = r"^[+-]?\d{1,15}(\.\d{1,2})?$"
_ANY_AMOUNT = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"


def parse_amount(arr: pa.Array) -> pa.Array:
    """Decimal text -> ``decimal(18,2)`` rounded half-up; null where unparseable, ≤ 0 or > 1,000,000."""
    text = pc.fill_null(trim(arr.cast(pa.string())), "")
    simple = pc.match_substring_regex(text, _SIMPLE_AMOUNT).to_numpy(zero_copy_only=False)
    out = pa.nulls(len(arr), AMOUNT_TYPE)
    if simple.any():
        vals = pc.cast(text.filter(pa.array(simple)), AMOUNT_TYPE)
        out = pc.replace_with_mask(out, pa.array(simple), vals)
    other = pc.match_substring_regex(text, _ANY_AMOUNT).to_numpy(zero_copy_only=False) & ~simple
    if other.any():
        vals = []
        for v in text.filter(pa.array(other)).to_pylist():
            try:
                q = Decimal(v).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
                vals.append(q if q.copy_abs() < Decimal("1e16") else None)
            except (InvalidOperation, ValueError):
                vals.append(None)
        out = pc.replace_with_mask(out, pa.array(other), pa.array(vals, AMOUNT_TYPE))
    in_range = pc.and_(pc.greater(out, pa.scalar(Decimal("0"), AMOUNT_TYPE)), pc.less_equal(out, pa.scalar(MAX_AMOUNT, AMOUNT_TYPE)))
    return pc.if_else(pc.fill_null(in_range, False), out, pa.scalar(None, AMOUNT_TYPE))


def parse_flag(arr: pa.Array) -> pa.Array:
    """true/1 -> True, false/0 -> False (any case, trimmed), else null."""
    t = pc.utf8_lower(trim(arr.cast(pa.string())))
    f = pc.if_else(pc.is_in(t, pa.array(["false", "0"])), False, pa.scalar(None, pa.bool_()))
    return pc.if_else(pc.is_in(t, pa.array(["true", "1"])), True, f)


# ---- standardise + expectations ------------------------------------------------------------------


def standardize(bronze: pa.Table) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Typed, normalised business columns (+ bronze order columns) and a failure mask per rule.

    Values failing a rule are null in the typed table; the masks say which rows failed what.
    """
    col = {c: bronze[c].combine_chunks() if isinstance(bronze[c], pa.ChunkedArray) else bronze[c] for c in CONTRACT_COLUMNS}
    out: dict[str, pa.Array] = {c: trim(col[c]) for c in CONTRACT_COLUMNS if c not in ("amount", "is_fraud", "event_time", "updated_at")}
    out["currency"] = pc.utf8_upper(out["currency"])
    out["channel"] = pc.utf8_lower(out["channel"])
    out["status"] = pc.utf8_lower(out["status"])
    out["merchant_category"] = pc.utf8_lower(out["merchant_category"])
    country = pc.utf8_upper(out["country"])
    present = ~_blank(col["country"])
    two_letters = pc.fill_null(pc.match_substring_regex(country, r"^[A-Z]{2}$"), False).to_numpy(zero_copy_only=False)
    bad_country = present & ~two_letters
    out["country"] = pc.if_else(pa.array(present & two_letters), country, pa.scalar(None, pa.string()))
    out["amount"] = parse_amount(col["amount"])
    out["is_fraud"] = parse_flag(col["is_fraud"])
    out["event_time"] = parse_timestamp(col["event_time"])
    out["updated_at"] = parse_timestamp(col["updated_at"])

    def not_in(a: pa.Array, allowed: tuple[str, ...]) -> np.ndarray:
        return ~pc.fill_null(pc.is_in(a, pa.array(allowed)), False).to_numpy(zero_copy_only=False)

    masks = {
        "missing_transaction_id": _blank(col["transaction_id"]),
        "missing_account_id": _blank(col["account_id"]),
        "missing_merchant_id": _blank(col["merchant_id"]),
        "invalid_amount": pc.is_null(out["amount"]).to_numpy(zero_copy_only=False),
        "invalid_currency": not_in(out["currency"], CURRENCIES),
        "invalid_channel": not_in(out["channel"], CHANNELS),
        "invalid_status": not_in(out["status"], STATUSES),
        "invalid_event_time": pc.is_null(out["event_time"]).to_numpy(zero_copy_only=False),
        "invalid_updated_at": pc.is_null(out["updated_at"]).to_numpy(zero_copy_only=False),
        "field_too_long": _too_long(col),
        "malformed_row": _malformed(bronze["_extra"]),
        "invalid_country": bad_country,
    }
    assert list(masks) == list(DEFAULT_RULES)
    typed = [out[c].cast(f.type) if out[c].type != f.type else out[c] for c, f in zip(CONTRACT_COLUMNS, BUSINESS_FIELDS)]
    typed += [bronze[f.name].cast(f.type) for f in ORDER_FIELDS]
    return pa.Table.from_arrays(typed, schema=STANDARD_SCHEMA), masks


def _too_long(col: dict[str, pa.Array]) -> np.ndarray:
    n = len(col["transaction_id"])
    mask = np.zeros(n, dtype=bool)
    for c, limit in FIELD_MAX_CHARS.items():
        mask |= pc.fill_null(pc.greater(pc.utf8_length(col[c].cast(pa.string())), limit), False).to_numpy(zero_copy_only=False)
    return mask


def _malformed(extra: pa.Array | pa.ChunkedArray) -> np.ndarray:
    from rayapp.transforms.raw import MALFORMED

    hit = pc.match_substring(extra, f'"{MALFORMED}":"')
    return pc.fill_null(hit, False).to_numpy(zero_copy_only=False).astype(bool)


def _bounded(arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A quarantined text column with each oversized value cut to ``QUARANTINE_KEEP_CHARS`` (and marked)."""
    arr = arr.cast(pa.string())
    length = pc.utf8_length(arr)
    if not pc.any(pc.greater(length, QUARANTINE_KEEP_CHARS)).as_py():
        return arr
    cut = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(arr, 0, QUARANTINE_KEEP_CHARS), "…[cut ", pc.cast(pc.subtract(length, QUARANTINE_KEEP_CHARS), pa.string()),
        " chars]", "",
    )  # fmt: skip
    return pc.if_else(pc.greater(length, QUARANTINE_KEEP_CHARS), cut, arr)


def _reasons(masks: dict[str, np.ndarray], rules: list[str], n: int) -> pa.Array:
    """list<string> of the failed rule names per row (rule order)."""
    offsets = [0]
    values: list[str] = []
    stack = np.stack([masks[r] for r in rules], axis=1) if rules else np.zeros((n, 0), bool)
    for row in stack:
        values.extend(r for r, hit in zip(rules, row) if hit)
        offsets.append(len(values))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.string()))


def apply_expectations(
    bronze: pa.Table, expectations: Expectations, run_id: str, quarantined_at: object
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Split a bronze block into valid standardised rows and quarantine rows, with per-rule counts.

    Returns:
        (valid rows in ``STANDARD_SCHEMA``, quarantine rows in ``QUARANTINE_SCHEMA``, counts by rule).
    """
    typed, masks = standardize(bronze)
    counts = {name: int(m.sum()) for name, m in masks.items()}
    blocking = expectations.quarantining()
    drop = np.zeros(typed.num_rows, dtype=bool)
    for name in blocking:
        drop |= masks[name]
    valid = typed.filter(pa.array(~drop))
    if drop.any():
        bad = bronze.filter(pa.array(drop))
        sub = {k: v[drop] for k, v in masks.items()}
        reasons = _reasons(sub, blocking, int(drop.sum()))
        cols = [_bounded(bad[c]) for c in CONTRACT_COLUMNS] + [bad[c].cast(QUARANTINE_SCHEMA.field(c).type) for c in _QUARANTINE_META]
        cols += [reasons, pa.repeat(pa.scalar(run_id), len(reasons)), pa.repeat(pa.scalar(quarantined_at, UTC_US), len(reasons))]
        quarantine = pa.Table.from_arrays([c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols], schema=QUARANTINE_SCHEMA)
    else:
        quarantine = QUARANTINE_SCHEMA.empty_table()
    counts["quarantined"] = int(drop.sum())
    counts["rows_in"] = bronze.num_rows
    return valid, quarantine, counts


# ---- dedup + hash ---------------------------------------------------------------------------------

ORDER_KEYS = ("updated_at", "_ingested_at", "_source_file", "_source_row")


def dedup_latest(table: pa.Table) -> pa.Table:
    """One row per ``transaction_id``: greatest (updated_at, _ingested_at, _source_file, _source_row)."""
    if table.num_rows <= 1:
        return table
    order = [("transaction_id", "ascending")] + [(k, "descending") for k in ORDER_KEYS]
    idx = pc.sort_indices(table, sort_keys=order)
    ids = table["transaction_id"].take(idx)
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    first = np.ones(len(ids), dtype=bool)
    first[1:] = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    return table.take(pc.filter(idx, pa.array(first)))


_SEP = "\x1f"
_NULL = "\x00"


def row_hash(table: pa.Table) -> pa.Array:
    """Stable hex digest (blake2b-128) of the business columns; equal content <=> equal hash."""
    parts = []
    for f in BUSINESS_FIELDS:
        c = table[f.name]
        if f.type == UTC_US:
            c = pc.cast(c, pa.int64())
        parts.append(pc.fill_null(pc.cast(c, pa.string()), _NULL))
    joined = pc.binary_join_element_wise(*parts, _SEP)
    return pa.array([hashlib.blake2b(s.encode(), digest_size=16).hexdigest() for s in joined.to_pylist()], pa.string())


def to_silver_rows(winners: pa.Table, run_id: str, now: object) -> pa.Table:
    """Winning versions as silver rows (``_first_seen_at``/``_updated_at`` = now; MERGE keeps the old ones)."""
    n = winners.num_rows
    ts = pa.repeat(pa.scalar(now, UTC_US), n)
    cols = {f.name: winners[f.name] for f in BUSINESS_FIELDS}
    cols.update(
        _row_hash=row_hash(winners), _first_seen_at=ts, _updated_at=ts, _source_file=winners["_source_file"],
        _source_row=winners["_source_row"], _ingested_at=winners["_ingested_at"], _run_id=pa.repeat(pa.scalar(run_id), n),
    )  # fmt: skip
    return pa.table({f.name: cols[f.name] for f in SILVER_SCHEMA}, schema=SILVER_SCHEMA)


# ---- gold aggregates ------------------------------------------------------------------------------

def activity_date(event_time: pa.Array) -> pa.Array:
    """UTC calendar date of an event time."""
    return pc.cast(pc.cast(event_time, pa.timestamp("us")), pa.date32())


def daily_aggregates(silver: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Gold tables from silver rows: per (account, UTC date) and per (merchant, UTC date)."""
    t = silver.select(["account_id", "merchant_id", "amount", "event_time", "is_fraud"])
    t = t.append_column("activity_date", activity_date(t["event_time"]))
    t = t.append_column("fraud", pc.cast(pc.fill_null(t["is_fraud"], False), pa.int64()))
    t = t.set_column(t.schema.get_field_index("amount"), "amount", pc.cast(t["amount"], pa.decimal128(38, 2)))
    acc = t.group_by(["account_id", "activity_date"]).aggregate(
        [("account_id", "count"), ("amount", "sum"), ("merchant_id", "count_distinct"),
         ("event_time", "min"), ("event_time", "max"), ("fraud", "sum")]
    )  # fmt: skip
    acc = pa.table(
        [acc["account_id"], acc["activity_date"], acc["account_id_count"], pc.cast(acc["amount_sum"], AMOUNT_TYPE),
         acc["merchant_id_count_distinct"], acc["event_time_min"], acc["event_time_max"], acc["fraud_sum"]],
        schema=DAILY_ACCOUNT_SCHEMA,
    )  # fmt: skip
    mer = t.group_by(["merchant_id", "activity_date"]).aggregate(
        [("merchant_id", "count"), ("amount", "sum"), ("account_id", "count_distinct"), ("fraud", "sum")]
    )
    count = mer["merchant_id_count"]
    mer = pa.table(
        [mer["merchant_id"], mer["activity_date"], count, pc.cast(mer["amount_sum"], AMOUNT_TYPE),
         mer["account_id_count_distinct"], mer["fraud_sum"], pc.divide(pc.cast(mer["fraud_sum"], pa.float64()), pc.cast(count, pa.float64()))],
        schema=MERCHANT_DAILY_SCHEMA,
    )  # fmt: skip
    return acc, mer
