"""Reconcile's comparison of one key range, and the graph's delete planning: pure Arrow."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa

from rayapp.reconcile.compare import EXAMPLES, Diff, compare, normalised
from rayapp.sinks.views import VIEWS

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


def _gold(rows: list[tuple[str, date, int, str]]) -> pa.Table:
    view = VIEWS["daily_account_activity"]
    return pa.Table.from_pylist([{"account_id": a, "activity_date": d, "txn_count": n, "total_amount": Decimal(t)} for a, d, n, t in rows],
                                schema=view.schema)  # fmt: skip


def test_compare_finds_missing_extra_and_different_by_key_and_content() -> None:
    view = VIEWS["daily_account_activity"]
    d = date(2025, 3, 1)
    lake = _gold([("A", d, 1, "1.00"), ("B", d, 2, "2.00"), ("C", d, 3, "3.00")])
    store = _gold([("A", d, 1, "1.0"), ("B", d, 5, "2.00"), ("Z", d, 9, "9.00")])  # A equal (1.00 == 1.0), B changed, C gone, Z stray
    diff = Diff()
    resend, delete = compare(view, lake, store, diff)
    assert (diff.checked, diff.missing, diff.extra, diff.different, diff.total) == (4, 1, 1, 1, 3)
    assert sorted(resend) == [("B", d), ("C", d)] and delete == [("Z", d)]
    assert diff.as_dict()["examples"] == {"missing": ["C/2025-03-01"], "extra": ["Z/2025-03-01"], "different": ["B/2025-03-01"]}


def test_equal_contents_compare_equal_across_representations() -> None:
    view = VIEWS["paid"]
    a = pa.Table.from_pylist([{"transaction_id": "T", "account_id": "A", "merchant_id": "M", "amount": 1.1, "status": "s",
                               "fraud_score": 0.123456789012, "event_time": T0}], schema=view.schema)  # fmt: skip
    naive = a.set_column(a.schema.get_field_index("event_time"), "event_time", pa.array([T0.replace(tzinfo=None)], pa.timestamp("us")))
    assert normalised(view, a).equals(normalised(view, naive.cast(view.schema)))  # a UTC instant is one instant
    later = a.set_column(a.schema.get_field_index("event_time"), "event_time", pa.array([T0 + timedelta(microseconds=1)], view.schema.field("event_time").type))
    assert not normalised(view, a).equals(normalised(view, later))
    diff = Diff()
    assert compare(view, a, naive, diff) == ([], []) and diff.total == 0
    assert compare(view, a, later, diff) == ([("T",)], []) and diff.different == 1


def test_floats_nulls_nans_and_repeated_keys() -> None:
    view = VIEWS["transaction_vectors"]

    def rows(*values: tuple[str, str | None, float | None]) -> pa.Table:
        return pa.Table.from_pylist([{"id": i, "account_id": a, "merchant_id": "M", "fraud_score": s, "model_version": "v1"} for i, a, s in values],
                                    schema=view.schema)  # fmt: skip

    nan, inf = float("nan"), float("inf")
    lake = rows(("A", "a", 0.1234567891), ("B", None, nan), ("C", "c", None), ("D", "d", 0.5), ("E", None, 0.5), ("F", "f", 0.5),
                ("G", "g", 24.83), ("H", "h", inf), ("I", "i", 1e6), ("J", "j", 0.5))  # fmt: skip
    store = rows(("A", "a", 0.12345678912), ("B", None, nan), ("C", "c", None), ("D", "d", 0.6), ("D", "d", 0.5), ("E", "e", 0.5), ("F", "f", None),
                 ("G", "g", 24.829999999999998), ("H", "h", inf), ("I", "i", 1e6 + 1e-4), ("J", "j", 0.500001))  # fmt: skip
    diff = Diff()
    # A, G: equal within 1e-9; B: null and NaN both sides; H: infinities; D: its last row counts; I: 1e-10 apart relatively
    resend, delete = compare(view, lake, store, diff)
    assert (diff.checked, diff.missing, diff.extra, diff.different) == (10, 0, 0, 3)
    assert sorted(resend) == [("E",), ("F",), ("J",)] and delete == []


def test_examples_are_bounded() -> None:
    view = VIEWS["transaction_vectors"]
    store = pa.Table.from_pylist([{"id": f"X{i:03d}"} for i in range(50)], schema=view.schema)
    diff = Diff()
    compare(view, view.schema.empty_table(), store, diff)
    assert diff.extra == 50 and diff.examples["extra"] == [f"X{i:03d}" for i in range(EXAMPLES)]


def test_exact_used_sets_ranges_from_payments_left_and_drops_empty_pairs() -> None:
    from rayapp.sinks.graph_plan import ACCOUNT_PAID, exact_used, not_older_than

    pairs = pa.table({"account_id": ["A", "A", "B"], "device_id": ["D1", "D2", "D1"]})
    paid = pa.Table.from_pylist([{"account_id": "A", "device_id": "D1", "event_time": T0}, {"account_id": "A", "device_id": "D1", "event_time": T0 + timedelta(hours=2)},
                                 {"account_id": "A", "device_id": None, "event_time": T0}], schema=ACCOUNT_PAID)  # fmt: skip
    to_set, to_delete = exact_used(pairs, paid)
    assert to_set.to_pylist() == [{"account_id": "A", "device_id": "D1", "first_seen": T0, "last_seen": T0 + timedelta(hours=2)}]
    assert sorted(tuple(r.values()) for r in to_delete.to_pylist()) == [("A", "D2"), ("B", "D1")]
    rows = pa.table({"transaction_id": ["T1", "T2", "T3"], "version": pa.array([T0, T0, T0], pa.timestamp("us", tz="UTC"))})
    marks = pa.table({"transaction_id": ["T1", "T2"], "version": pa.array([T0, T0 + timedelta(seconds=1)], pa.timestamp("us", tz="UTC"))})
    assert not_older_than(rows, marks, strictly=False).to_pylist() == [True, True, False]
    assert not_older_than(rows, marks, strictly=True).to_pylist() == [False, True, False]
