"""Bronze -> silver rules on tiny Arrow tables, plus hypothesis properties of the dedup."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayapp.errors import RayappError
from rayapp.quality import Action, ExpectationFailed, Expectations
from rayapp.catalog import BRONZE_SCHEMA, CONTRACT_COLUMNS
from rayapp.transforms import silver as tx

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
GOOD = {
    "transaction_id": "T1", "account_id": "A1", "merchant_id": "M1", "merchant_name": " Shop ", "merchant_category": "Grocery",
    "amount": "10.00", "currency": "usd", "country": "us", "channel": "POS", "device_id": "D1", "ip_address": "1.2.3.4",
    "status": " Settled ", "description": "x", "is_fraud": "0", "event_time": "2025-01-01T00:00:00Z",
    "updated_at": "2025-01-01T01:00:00Z",
}  # fmt: skip


def bronze(*rows: dict[str, object]) -> pa.Table:
    full = []
    for i, r in enumerate(rows):
        row = {c: GOOD[c] for c in CONTRACT_COLUMNS} | {"_extra": None, "_batch_id": "b", "_ingested_at": T0,
               "_source_file": "f", "_source_row": i + 1, "_source_system": "s"}  # fmt: skip
        row.update(r)
        full.append(row)
    return pa.Table.from_pylist(full, schema=BRONZE_SCHEMA)


def run(*rows: dict[str, object], exp: Expectations | None = None) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    return tx.apply_expectations(bronze(*rows), exp or Expectations(), "run-1", T0)


def test_good_row_is_normalised() -> None:
    valid, quarantine, counts = run({})
    assert quarantine.num_rows == 0 and counts["quarantined"] == 0
    row = valid.to_pylist()[0]
    assert row["merchant_name"] == "Shop" and row["merchant_category"] == "grocery"
    assert (row["currency"], row["country"], row["channel"], row["status"]) == ("USD", "US", "pos", "settled")
    assert row["amount"] == Decimal("10.00") and row["is_fraud"] is False
    assert row["event_time"] == T0 and row["updated_at"] == T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"transaction_id": "  "}, "missing_transaction_id"),
        ({"transaction_id": None}, "missing_transaction_id"),
        ({"account_id": ""}, "missing_account_id"),
        ({"merchant_id": None}, "missing_merchant_id"),
        ({"amount": "abc"}, "invalid_amount"),
        ({"amount": "-5"}, "invalid_amount"),
        ({"amount": "0.00"}, "invalid_amount"),
        ({"amount": "1000000.01"}, "invalid_amount"),
        ({"amount": "1,000"}, "invalid_amount"),
        ({"amount": None}, "invalid_amount"),
        ({"currency": "XYZ"}, "invalid_currency"),
        ({"currency": ""}, "invalid_currency"),
        ({"channel": "fax"}, "invalid_channel"),
        ({"status": "unknown"}, "invalid_status"),
        ({"event_time": "2025-13-01T00:00:00"}, "invalid_event_time"),
        ({"event_time": "2025-02-29T00:00:00"}, "invalid_event_time"),
        ({"event_time": ""}, "invalid_event_time"),
        ({"updated_at": "not-a-date"}, "invalid_updated_at"),
    ],
)
def test_drop_rules_quarantine_with_reason(change: dict[str, object], rule: str) -> None:
    valid, quarantine, counts = run(change)
    assert valid.num_rows == 0
    q = quarantine.to_pylist()[0]
    assert q["_reasons"] == [rule] and q["_run_id"] == "run-1" and q["_quarantined_at"] == T0
    assert {k: q[k] for k in change} == change  # raw values are kept as they arrived
    assert counts[rule] == 1 and counts["quarantined"] == 1


@pytest.mark.parametrize(
    ("change", "limit"),
    [({"description": "d" * 1025}, 1024), ({"merchant_name": "n" * 257}, 256), ({"device_id": "D" * 65}, 64), ({"ip_address": "9" * 5_000_000}, 64)],
)
def test_oversized_values_are_quarantined_and_kept_bounded(change: dict[str, str], limit: int) -> None:
    (column, value), = change.items()
    ok, _, _ = run({column: value[:limit]})
    assert ok.num_rows == 1  # at the limit: fine
    valid, quarantine, counts = run(change)
    assert valid.num_rows == 0 and counts["field_too_long"] == 1
    q = quarantine.to_pylist()[0]
    assert q["_reasons"] == ["field_too_long"]
    kept = q[column]
    if len(value) <= tx.QUARANTINE_KEEP_CHARS:
        assert kept == value  # raw values are kept as they arrived…
    else:  # …but a 5 MB value is not copied into quarantine whole
        assert kept == value[: tx.QUARANTINE_KEEP_CHARS] + f"…[cut {len(value) - tx.QUARANTINE_KEEP_CHARS} chars]"


def test_malformed_rows_from_the_landing_parser_are_quarantined() -> None:
    valid, quarantine, counts = run({}, {"_extra": '{"_malformed":"truncated last row (a row: 5 of 16 columns)"}', "transaction_id": "T2"},
                                    {"_extra": '{"_malformed":null}', "transaction_id": "T3"})  # fmt: skip
    assert [r["transaction_id"] for r in valid.to_pylist()] == ["T1", "T3"]
    assert [(q["transaction_id"], q["_reasons"]) for q in quarantine.to_pylist()] == [("T2", ["malformed_row"])]
    assert counts["malformed_row"] == 1


def test_every_failed_rule_is_listed_in_order() -> None:
    _, quarantine, counts = run({"transaction_id": "", "amount": "x", "status": "?", "country": "USA"})
    assert quarantine.to_pylist()[0]["_reasons"] == ["missing_transaction_id", "invalid_amount", "invalid_status"]
    assert counts["invalid_country"] == 1


@pytest.mark.parametrize(("country", "expected", "warned"), [("usa", None, 1), ("u1", None, 1), ("", None, 0), (None, None, 0), (" gb ", "GB", 0)])
def test_invalid_country_warns_and_nulls(country: str | None, expected: str | None, warned: int) -> None:
    valid, quarantine, counts = run({"country": country})
    assert quarantine.num_rows == 0
    assert valid["country"].to_pylist() == [expected]
    assert counts["invalid_country"] == warned


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-01T00:00:00Z", T0), ("2025-01-01 02:00:00+02:00", T0), ("2024-12-31T19:00:00-05:00", T0),
        ("2025-01-01T05:30:00+0530", T0), ("2025-01-01", T0), ("2025-01-01T00:00", T0), (" 2025-01-01T00:00:00 ", T0),
        ("2025-01-01T00:00:00.5Z", T0 + timedelta(microseconds=500000)), ("2024-02-29T00:00:00", datetime(2024, 2, 29, tzinfo=timezone.utc)),
        ("2025-01-01T24:00:00", None), ("01/02/2025", None), ("2025-1-1", None), (None, None),
    ],
)  # fmt: skip
def test_timestamps(text: str | None, expected: datetime | None) -> None:
    assert tx.parse_timestamp(pa.array([text], pa.string())).to_pylist() == [expected]


def _timestamp_texts(rng: random.Random, n: int) -> list[str | None]:
    """Texts of every shape the parser meets: the four common ones, and fractions, ``+hhmm``/``+hh``
    offsets, lower-case ``t``/``z``, dates alone, out-of-range fields, padding, garbage, nulls."""
    out: list[str | None] = []
    for _ in range(n):
        def field(lo: int, hi: int, bad: int) -> int:  # mostly in range, sometimes just past it
            return rng.randint(lo, hi) if rng.random() < 0.95 else bad

        y, mo, d = rng.randint(1969, 2100), field(1, 12, rng.choice([0, 13])), field(1, 31, rng.choice([0, 32]))
        h, mi, sec = field(0, 23, 24), field(0, 59, 60), field(0, 59, 60)
        text = f"{y:04d}-{mo:02d}-{d:02d}" + rng.choice("TT T t") + f"{h:02d}:{mi:02d}:{sec:02d}"
        text += rng.choice(["", "", "", "", ".5", ".123456789", ",25"])
        oh, om = field(0, 14, 15), rng.choice([0, 30, 45, 45, 60])
        text += rng.choice(["", "Z", "Z", "z", f"+{oh:02d}:{om:02d}", f"-{oh:02d}:{om:02d}", f"+{oh:02d}{om:02d}", f"-{oh:02d}"])
        out.append(rng.choice([text] * 12 + [f" {text} ", text[:10], text[:16], "not-a-date", "", None]))
    return out


def _impossible(text: str | None) -> bool:
    """A text of a common shape that names no real date (30 February): Arrow refuses it outright."""
    import re

    from rayapp.transforms.timestamps import _NAIVE, _ZONED

    t = (text or "").strip()
    if not (re.match(_ZONED, t) or re.match(_NAIVE, t)):
        return False
    try:
        datetime.strptime(t[:10], "%Y-%m-%d")
    except ValueError:
        return True
    return False


def test_timestamp_fast_path_equals_the_general_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    import pyarrow.compute as pc

    from rayapp.transforms import timestamps

    texts = [t for t in _timestamp_texts(random.Random(11), 20_000) if not _impossible(t)]
    general = timestamps._parse_iso
    seen: list[int] = []
    monkeypatch.setattr(timestamps, "_parse_iso", lambda text: seen.append(len(text)) or general(text))
    arr = pa.array(texts, pa.string())
    want = general(pc.utf8_trim_whitespace(arr))
    assert timestamps.parse_timestamp(arr).equals(want)
    common = sum(1 for t in texts if t is not None and (re.match(timestamps._ZONED, t.strip()) or re.match(timestamps._NAIVE, t.strip())))
    assert common > 2000 and seen == [len(texts) - common]  # the common shapes went through Arrow's parser, only the rest the regex path
    assert 0 < want.null_count < len(texts) / 2
    # A common shape that is no real date: the whole array takes the general path, and that row is null.
    impossible = pa.array(["2025-02-30T00:00:00Z", *texts[:1000]], pa.string())
    got = timestamps.parse_timestamp(impossible)
    assert got.equals(general(pc.utf8_trim_whitespace(impossible))) and got[0].as_py() is None and seen[-1] == 1001


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12.5", "12.50"), (" 7 ", "7.00"), ("+3", "3.00"), ("0.005", "0.01"), ("12.345", "12.35"), ("1e2", "100.00"),
     ("1000000", "1000000.00"), ("0.004", None), ("1e7", None), ("--1", None)],
)  # fmt: skip
def test_amounts(text: str, expected: str | None) -> None:
    got = tx.parse_amount(pa.array([text])).to_pylist()[0]
    assert got == (Decimal(expected) if expected else None)


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("TRUE", True), ("1", True), ("False", False), ("0", False), ("", None), ("yes", None)])
def test_flags(text: str, expected: bool | None) -> None:
    assert tx.parse_flag(pa.array([text])).to_pylist() == [expected]


def test_warn_action_keeps_row_with_null_value() -> None:
    exp = Expectations.from_specs(["invalid_amount=warn"])
    valid, quarantine, _ = run({"amount": "abc"}, exp=exp)
    assert quarantine.num_rows == 0 and valid["amount"].to_pylist() == [None]


def test_fail_action_thresholds() -> None:
    exp = Expectations.from_specs(["invalid_amount=fail:10"], max_quarantine_pct=50)
    assert exp.rules["invalid_amount"].action is Action.FAIL
    exp.check(100, {"invalid_amount": 10}, 10)  # 10% is not more than 10%
    with pytest.raises(ExpectationFailed, match="invalid_amount"):
        exp.check(100, {"invalid_amount": 11}, 11)
    with pytest.raises(ExpectationFailed, match="quarantined"):
        exp.check(100, {}, 51)
    with pytest.raises(RayappError):
        Expectations.from_specs(["no_such_rule=drop"])
    with pytest.raises(RayappError):
        Expectations.from_specs(["invalid_amount=explode"])


def test_row_hash_tracks_business_columns_only() -> None:
    a, _, _ = run({})
    b, _, _ = run({"_source_row": 99, "_source_file": "other"})
    c, _, _ = run({"status": "chargeback"})
    h = lambda t: tx.row_hash(t).to_pylist()[0]  # noqa: E731
    assert h(a) == h(b) and h(a) != h(c)


# ---- dedup properties -------------------------------------------------------------------------------

_versions = st.lists(
    st.tuples(st.sampled_from(["T1", "T2", "T3", "T4"]), st.integers(0, 5), st.integers(0, 2), st.sampled_from(["f1", "f2"]),
              st.integers(1, 50), st.sampled_from(["pending", "settled", "chargeback"])),
    min_size=1, max_size=40, unique_by=lambda v: (v[3], v[4]),  # a file's line is one row: (file, line) is unique
)  # fmt: skip


def _table(versions: list[tuple[str, int, int, str, int, str]]) -> pa.Table:
    rows = [
        {"transaction_id": t, "updated_at": f"2025-01-01T00:00:0{u}Z", "_ingested_at": T0 + timedelta(hours=i),
         "_source_file": f, "_source_row": r, "status": s}
        for t, u, i, f, r, s in versions
    ]  # fmt: skip
    return tx.standardize(bronze(*rows))[0]


def _key(row: dict[str, object]) -> tuple[object, ...]:
    return tuple(row[k] for k in tx.ORDER_KEYS)


@settings(max_examples=60, deadline=None)
@given(_versions)
def test_dedup_keeps_exactly_the_latest_version_per_key(versions: list[tuple[str, int, int, str, int, str]]) -> None:
    table = _table(versions)
    got = {r["transaction_id"]: r for r in tx.dedup_latest(table).to_pylist()}
    expected: dict[str, dict[str, object]] = {}
    for r in table.to_pylist():
        cur = expected.get(r["transaction_id"])
        if cur is None or _key(r) > _key(cur):
            expected[r["transaction_id"]] = r
    assert set(got) == set(expected)
    for k in got:
        assert _key(got[k]) == _key(expected[k])


@settings(max_examples=40, deadline=None)
@given(_versions, st.randoms(use_true_random=False))
def test_dedup_ignores_input_order_and_repetition(versions: list[tuple[str, int, int, str, int, str]], rnd: random.Random) -> None:
    table = _table(versions)
    shuffled = versions[:]
    rnd.shuffle(shuffled)
    once = tx.dedup_latest(table).sort_by("transaction_id")
    assert tx.dedup_latest(_table(shuffled)).sort_by("transaction_id").equals(once)
    assert tx.dedup_latest(pa.concat_tables([table, table])).sort_by("transaction_id").select(["transaction_id"]).equals(once.select(["transaction_id"]))
    assert tx.dedup_latest(once).equals(once)


def test_gold_aggregates() -> None:
    rows = [
        {"transaction_id": "1", "account_id": "A", "merchant_id": "M1", "amount": "10.00", "is_fraud": "1", "event_time": "2025-01-01T23:00:00-02:00"},
        {"transaction_id": "2", "account_id": "A", "merchant_id": "M2", "amount": "5.50", "is_fraud": "", "event_time": "2025-01-02T03:00:00Z"},
        {"transaction_id": "3", "account_id": "B", "merchant_id": "M1", "amount": "1.25", "is_fraud": "0", "event_time": "2025-01-02T04:00:00Z"},
    ]  # fmt: skip
    typed = tx.standardize(bronze(*rows))[0]
    acc, mer = tx.daily_aggregates(typed)
    a = {(r["account_id"], str(r["activity_date"])): r for r in acc.to_pylist()}
    assert set(a) == {("A", "2025-01-02"), ("B", "2025-01-02")}  # 23:00-02:00 is 01:00 UTC on the 2nd
    assert a[("A", "2025-01-02")]["txn_count"] == 2 and a[("A", "2025-01-02")]["total_amount"] == Decimal("15.50")
    assert a[("A", "2025-01-02")]["distinct_merchants"] == 2 and a[("A", "2025-01-02")]["fraud_count"] == 1
    m = {r["merchant_id"]: r for r in mer.to_pylist()}
    assert m["M1"]["txn_count"] == 2 and m["M1"]["distinct_accounts"] == 2 and m["M1"]["fraud_rate"] == 0.5
