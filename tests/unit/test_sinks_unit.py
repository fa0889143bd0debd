"""Pure pieces of the sinks and publish shaping: error classification, retries, Pinecone request
splitting, SQL/Cypher text, serving transforms."""

from __future__ import annotations

import errno
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest

from rayapp.catalog import Dataset, dataset_schema
from rayapp.sinks.base import RetryExhausted, RetryPolicy, SinkError, conform, is_transient
from rayapp.urls import url_path
from rayapp.transforms import serving as sv

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


class Status(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


@pytest.mark.parametrize(
    "exc, transient",
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
        (TimeoutError("read timed out"), True),
        (OSError(errno.ECONNRESET, "reset"), True),
        (Status(429), True),
        (Status(503), True),
        (Status(400), False),
        (Status(401), False),
        (ValueError("bad value"), False),
        (SinkError("schema mismatch"), False),
        (SinkError("try later", transient=True), True),
    ],
)
def test_transient_classification(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_transient_through_exception_chain() -> None:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        except ConnectionRefusedError as inner:
            raise RuntimeError("driver wrapper") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_retry_policy_retries_transient_then_succeeds_and_gives_up_on_permanent() -> None:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        return "ok"

    seen: list[BaseException] = []
    assert RetryPolicy(attempts=5, base_s=0.001).call(flaky, "flaky", on_retry=seen.append) == ("ok", 3)
    assert len(seen) == 2

    def broken() -> None:
        raise ValueError("no such column")

    with pytest.raises(RetryExhausted) as info:
        RetryPolicy(attempts=5, base_s=0.001).call(broken, "broken")
    assert info.value.attempts == 1 and not info.value.transient

    def down() -> None:
        raise TimeoutError("timed out")

    with pytest.raises(RetryExhausted) as info:
        RetryPolicy(attempts=3, base_s=0.001).call(down, "down")
    assert info.value.attempts == 3 and info.value.transient


def test_backoff_is_bounded_and_grows() -> None:
    policy = RetryPolicy(attempts=8, base_s=0.5, cap_s=4.0)
    for _ in range(50):
        delays = policy.delays()
        assert len(delays) == 7
        assert all(0 <= d <= min(4.0, 0.5 * 2**k) for k, d in enumerate(delays))


def test_pinecone_batches_respect_count_and_size_limits() -> None:
    from rayapp.sinks.vectors import PINECONE_MAX_REQUEST_BYTES, pinecone_batches

    small = [{"id": f"v{i}", "values": [0.0] * 4, "metadata": {}} for i in range(2500)]
    assert [len(b) for b in pinecone_batches(small)] == [1000, 1000, 500]
    big = [{"id": f"v{i}", "values": [0.1] * 384, "metadata": {"text": "x" * 30_000}} for i in range(200)]
    batches = list(pinecone_batches(big))
    assert sum(len(b) for b in batches) == 200 and len(batches) > 1
    assert all(len(json.dumps({"vectors": b, "namespace": "transactions"}).encode()) <= PINECONE_MAX_REQUEST_BYTES for b in batches)


def test_pinecone_metadata_drops_nulls_and_fits_40kb() -> None:
    from rayapp.sinks.vectors import PINECONE_MAX_METADATA_BYTES, pinecone_metadata

    meta = pinecone_metadata({"id": "a", "vector": [1.0], "text": "é" * 50_000, "model_version": None, "event_time": T0, "amount": 2.5}, 7)
    assert "model_version" not in meta and meta["event_time"] == T0.isoformat() and meta["_version"] == 7
    assert len(json.dumps(meta).encode()) <= PINECONE_MAX_METADATA_BYTES


def test_postgres_upsert_sql_guards_versions() -> None:
    from rayapp.sinks.pg_sql import upsert_sql

    sql = upsert_sql(Dataset.PREDICTIONS, "_stage")
    assert "ON CONFLICT (transaction_id, model_version) DO UPDATE" in sql
    assert sql.endswith("WHERE t._version < EXCLUDED._version")
    assert "DISTINCT ON (transaction_id, model_version)" in sql


def test_postgres_binary_copy_only_where_every_column_type_fits() -> None:
    from rayapp.sinks.pg_binary import binary_fits

    schema = dataset_schema(Dataset.PREDICTIONS)
    declared = {"transaction_id": "text", "model_version": "text", "fraud_score": "double precision", "is_fraud_pred": "boolean",
                "scored_at": "timestamp with time zone", "_version": "timestamp with time zone", "_deleted": "boolean"}  # fmt: skip
    assert binary_fits(schema, declared)
    assert binary_fits(schema, {**declared, "model_version": "character varying(40)"})  # text's binary input is the same
    assert not binary_fits(schema, {**declared, "fraud_score": "real"})  # float8 bytes are no float4
    assert not binary_fits(schema, {**declared, "scored_at": "timestamp without time zone"})
    assert not binary_fits(schema, {k: v for k, v in declared.items() if k != "scored_at"})  # a column the table lacks
    gold = dataset_schema(Dataset.DAILY_ACCOUNT_ACTIVITY)
    some = pa.schema([gold.field(n) for n in ("total_amount", "activity_date", "txn_count")])
    assert binary_fits(some, {"total_amount": "numeric(18,2)", "activity_date": "date", "txn_count": "bigint"})
    assert not binary_fits(some, {"total_amount": "numeric(18,2)", "activity_date": "date", "txn_count": "integer"})


def test_clickhouse_ddl_uses_replacing_merge_tree_on_the_key() -> None:
    from rayapp.sinks.clickhouse import ddl

    text = ddl(Dataset.DAILY_ACCOUNT_ACTIVITY)
    assert "ENGINE = ReplacingMergeTree(_version, is_deleted) ORDER BY (account_id, activity_date) SETTINGS min_bytes_for_wide_part = " in text
    assert "`account_id` String" in text and "`_version` UInt64" in text and "`is_deleted` UInt8" in text


def test_graph_rows_of_a_block() -> None:
    from rayapp.sinks import graph

    schema = dataset_schema(Dataset.TRANSACTIONS)
    rows = [
        {"transaction_id": "T1", "account_id": "A", "merchant_id": "M", "merchant_name": "old", "merchant_category": "x", "device_id": "D",
         "amount": Decimal("1.00"), "event_time": T0, "_version": T0},
        {"transaction_id": "T2", "account_id": "A", "merchant_id": "M", "merchant_name": "new", "merchant_category": "x", "device_id": "D",
         "amount": Decimal("2.00"), "event_time": T0 + timedelta(hours=1), "_version": T0 + timedelta(hours=2)},
        {"transaction_id": "T3", "account_id": None, "merchant_id": "M", "_version": T0},
    ]  # fmt: skip
    block = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
    g = graph.graph_rows(block)
    assert g.accounts["id"].to_pylist() == ["A"] and g.devices["id"].to_pylist() == ["D"]
    assert g.merchants.to_pylist() == [{"id": "M", "name": "new", "category": "x"}]  # newest version names it
    assert g.paid["transaction_id"].to_pylist() == ["T1", "T2"]  # T3 has no account: no edge
    assert g.paid["amount"].to_pylist() == [1.0, 2.0]  # Cypher has no decimals
    assert g.used.to_pylist() == [{"account_id": "A", "device_id": "D", "first_seen": T0, "last_seen": T0 + timedelta(hours=1)}]


def test_graph_rows_name_each_merchant_by_its_newest_row_first_in_input_order_on_ties() -> None:
    import random

    from rayapp.sinks import graph
    from rayapp.sinks.base import split_deleted

    rng = random.Random(7)
    schema = dataset_schema(Dataset.TRANSACTIONS)
    rows = [{"transaction_id": f"T{i}", "account_id": rng.choice(["A1", "A2", None]), "merchant_id": rng.choice(["M3", "M10", "M2", "M1"]),
             "merchant_name": f"name{i}", "merchant_category": rng.choice(["x", "y"]), "device_id": rng.choice(["D", None]),
             "_version": T0 + timedelta(hours=rng.randrange(4)), "_deleted": i % 7 == 0} for i in range(400)]  # fmt: skip
    block = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
    live, gone = split_deleted(block)
    assert gone["transaction_id"].to_pylist() == [r["transaction_id"] for r in rows if r["_deleted"]]
    kept = [r for r in rows if not r["_deleted"] and r["account_id"] is not None]
    expected = {}
    for r in kept:  # the newest version names the merchant; the first such row in the block wins a tie
        if r["merchant_id"] not in expected or r["_version"] > expected[r["merchant_id"]]["_version"]:
            expected[r["merchant_id"]] = r
    g = graph.graph_rows(live)
    assert g.merchants.to_pylist() == [{"id": m, "name": expected[m]["merchant_name"], "category": expected[m]["merchant_category"]}
                                       for m in sorted(expected)]  # fmt: skip
    assert g.paid["transaction_id"].to_pylist() == [r["transaction_id"] for r in kept]
    assert sorted(g.devices["id"].to_pylist()) == ["D"]
    assert split_deleted(live)[0] is live and split_deleted(live)[1].num_rows == 0  # no tombstones: no filter pass


def _paid(rows: list[tuple[str, str, str, datetime]]) -> pa.Table:
    from rayapp.sinks import graph

    return pa.Table.from_pylist([dict(zip(graph.PAID_HELD.names, r)) for r in rows], schema=graph.PAID_HELD)


def test_plan_paid_creates_new_replaces_older_and_moved_skips_held() -> None:
    from rayapp.sinks import graph

    t1, t2 = T0, T0 + timedelta(hours=1)
    incoming = _paid([("NEW", "A", "M", t1), ("OLDER", "A", "M", t2), ("SAME", "A", "M", t1), ("STALE", "A", "M", t1),
                      ("MOVED", "B", "M", t2), ("DUP", "A", "M", t2)])  # fmt: skip
    held = _paid([("OLDER", "A", "M", t1), ("SAME", "A", "M", t1), ("STALE", "A", "M", t2), ("MOVED", "A", "M", t1),
                  ("DUP", "A", "M", t1), ("DUP", "A", "N", t1), ("ELSE", "Z", "M", t1)])  # fmt: skip
    to_delete, to_create = graph.plan_paid(incoming, held)
    assert sorted(to_create["transaction_id"].to_pylist()) == ["DUP", "MOVED", "NEW", "OLDER"]
    assert sorted(to_delete.to_pylist(), key=lambda r: tuple(r.values())) == [
        {"transaction_id": "DUP", "account_id": "A", "merchant_id": "M"}, {"transaction_id": "DUP", "account_id": "A", "merchant_id": "N"},
        {"transaction_id": "MOVED", "account_id": "A", "merchant_id": "M"}, {"transaction_id": "OLDER", "account_id": "A", "merchant_id": "M"},
    ]  # fmt: skip
    # Nothing held: everything is created, nothing deleted; all held at this version: nothing at all.
    to_delete, to_create = graph.plan_paid(incoming, graph.PAID_HELD.empty_table())
    assert to_delete.num_rows == 0 and to_create.num_rows == incoming.num_rows
    to_delete, to_create = graph.plan_paid(incoming, incoming)
    assert to_delete.num_rows == 0 and to_create.num_rows == 0


def test_plan_used_keeps_new_pairs_and_widened_ranges() -> None:
    from rayapp.sinks import graph

    def used(rows: list[tuple[str, str, datetime, datetime]]) -> pa.Table:
        return pa.Table.from_pylist([dict(zip(graph.USED_HELD.names, r)) for r in rows], schema=graph.USED_HELD)

    h = timedelta(hours=1)
    incoming = used([("A", "D1", T0, T0 + h), ("A", "D2", T0 - h, T0), ("A", "D3", T0, T0 + 3 * h), ("A", "D4", T0, T0), ("B", "D1", T0, T0)])
    held = used([("A", "D2", T0, T0), ("A", "D3", T0, T0 + 2 * h), ("A", "D4", T0 - h, T0 + h), ("Z", "D1", T0, T0)])
    changed = graph.plan_used(incoming, held)
    assert sorted((r["account_id"], r["device_id"]) for r in changed.to_pylist()) == [("A", "D1"), ("A", "D2"), ("A", "D3"), ("B", "D1")]
    assert changed.schema == incoming.schema
    assert graph.plan_used(incoming, incoming).num_rows == 0


def test_with_prediction_version_is_the_later_change() -> None:
    schema = dataset_schema(Dataset.TRANSACTIONS)
    silver = pa.Table.from_pylist(
        [{"transaction_id": "T1", "_updated_at": T0}, {"transaction_id": "T2", "_updated_at": T0}],
        schema=pa.schema([schema.field(c) for c in sv.TRANSACTION_SOURCE_COLUMNS]),
    )
    preds = pa.table({"transaction_id": ["T1", "T1"], "model_version": ["m1", "m2"], "fraud_score": [0.1, 0.7],
                      "is_fraud_pred": [False, True], "scored_at": pa.array([T0 - timedelta(days=1), T0 + timedelta(days=1)], pa.timestamp("us", tz="UTC"))})  # fmt: skip
    out = conform(Dataset.TRANSACTIONS, sv.with_prediction(silver, sv.latest_predictions(preds)))
    rows = {r["transaction_id"]: r for r in out.to_pylist()}
    assert rows["T1"]["model_version"] == "m2" and rows["T1"]["_version"] == T0 + timedelta(days=1)
    assert rows["T2"]["fraud_score"] is None and rows["T2"]["_version"] == T0


def test_transaction_vector_rows_threshold_and_deletes() -> None:
    schema = dataset_schema(Dataset.TRANSACTIONS)
    block = pa.Table.from_pylist(
        [{"transaction_id": "hi", "fraud_score": 0.9, "amount": Decimal("3.50"), "merchant_name": "Shop", "_version": T0},
         {"transaction_id": "lo", "fraud_score": 0.1, "_version": T0}, {"transaction_id": "none", "fraud_score": None, "_version": T0}],
        schema=schema,
    )  # fmt: skip
    only = sv.transaction_vector_rows(block, 0.5, with_deletes=False)
    assert only["id"].to_pylist() == ["hi"] and "Shop" in only["text"][0].as_py()
    both = sv.transaction_vector_rows(block, 0.5, with_deletes=True)
    assert both["id"].to_pylist() == ["hi", "lo", "none"] and both["text"].to_pylist()[1:] == [None, None]


def test_merchant_profiles_from_stats_and_latest_attributes() -> None:
    attrs = sv.merchant_attributes(pa.table({
        "merchant_id": ["M", "M"], "merchant_name": ["Old", "New"], "merchant_category": ["food", "food"], "description": ["a", "b"],
        "country": ["US", "DE"], "updated_at": pa.array([T0, T0 + timedelta(hours=1)], pa.timestamp("us", tz="UTC")), "transaction_id": ["1", "2"],
    }))  # fmt: skip
    stats = sv.merchant_stats(pa.table({"merchant_id": ["M", "M"], "txn_count": [3, 1], "fraud_count": [1, 0]}))
    prof = sv.merchant_profiles(attrs, stats, 9).to_pylist()
    assert prof[0]["name"] == "New" and prof[0]["txn_count"] == 4 and prof[0]["fraud_rate"] == 0.25 and prof[0]["_version"] == 9
    assert "New is a food merchant in DE" in prof[0]["text"] and "25.00% reported as fraud" in prof[0]["text"]


def test_conform_names_missing_columns() -> None:
    with pytest.raises(SinkError, match="lacks columns"):
        conform(Dataset.PREDICTIONS, pa.table({"transaction_id": ["x"]}))


@pytest.mark.parametrize("url, path", [("chdb:///data/ch", "/data/ch"), ("ladybug:///tmp/g.lbug", "/tmp/g.lbug"), ("pgserver://relative/pg", "relative/pg")])
def test_url_path(url: str, path: str) -> None:
    assert url_path(url) == path
