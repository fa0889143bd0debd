"""Each sink against its real engine (no Ray): setup is idempotent, upserts never go backwards,
deletes and limits behave, and the Neo4j backend's Cypher runs on Ladybug through a recording driver."""

from __future__ import annotations

import urllib.request
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pytest

from rayapp.settings import load_settings
from rayapp.catalog import Dataset, dataset_schema
from rayapp.sinks import store

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def make_sink(name: str, url: str, **options: Any) -> Any:
    """A store's sink at ``url`` with its default options, ``options`` replaced."""
    import dataclasses

    spec = store(name)
    defaults = spec.options(load_settings(overrides={"data_dir": "/nonexistent/unused"}))
    return spec.sink(url, dataclasses.replace(defaults, **options))


def txn_block(ids: list[str], *, amount: str = "10.50", status: str = "settled", version: datetime = T0, score: float | None = 0.25) -> pa.Table:
    rows = []
    for tid in ids:
        i = int(tid[2:])  # attributes follow the id, whatever block carries it
        rows.append(
            {"transaction_id": tid, "account_id": f"ACC{i % 2}", "merchant_id": f"M{i % 3}", "merchant_name": f"Shop {i % 3}",
             "merchant_category": "grocery", "amount": Decimal(amount), "currency": "USD", "country": "US", "channel": "pos",
             "device_id": f"DEV{i % 2}" if i != 4 else None, "ip_address": "10.0.0.1", "status": status, "description": f"Card purchase {tid}",
             "is_fraud": False, "event_time": T0 + timedelta(minutes=i), "updated_at": version, "_updated_at": version,
             "model_version": "m1" if score is not None else None, "fraud_score": score, "is_fraud_pred": False if score is not None else None,
             "scored_at": version if score is not None else None, "_version": version}  # fmt: skip
        )
    return pa.Table.from_pylist(rows, schema=dataset_schema(Dataset.TRANSACTIONS))


IDS = [f"TX{i:03d}" for i in range(6)]


# ---- PostgreSQL ----------------------------------------------------------------------------------


def test_postgres_migrations_idempotent_and_upserts_only_newer(tmp_path: Path) -> None:
    import psycopg

    from rayapp.sinks.postgres import MIGRATIONS_TABLE, migrations, sqlalchemy_url

    sink = make_sink("postgres", f"pgserver://{tmp_path / 'pg'}")
    try:
        sink.on_write_start()
        sink.on_write_start()  # a second start applies nothing twice
        assert sink.write(Dataset.TRANSACTIONS, txn_block(IDS)) == 6
        sink.finish()  # the first load's indexes are back: what follows takes the upsert
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS[:3], amount="99.00", status="reversed", version=T0 - timedelta(hours=1)))  # older
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS[3:], amount="77.25", status="chargeback", version=T0 + timedelta(hours=1)))  # newer
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS[3:], amount="77.25", status="chargeback", version=T0 + timedelta(hours=1)))  # replay
        assert sink.counts()["transactions"] == 6
        dsn = sqlalchemy_url(sink.url).replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT transaction_id, amount, status, device_id, description FROM transactions ORDER BY 1").fetchall()
            applied = conn.execute(f"SELECT version FROM {MIGRATIONS_TABLE}").fetchall()
        assert [(r[1], r[2]) for r in rows] == [(Decimal("10.50"), "settled")] * 3 + [(Decimal("77.25"), "chargeback")] * 3
        assert rows[4][3] is None and rows[0][4] == "Card purchase TX000"  # NULL stays NULL, text stays text
        assert [a[0] for a in applied] == [m[0] for m in migrations()]
    finally:
        sink.close()


def test_postgres_keeps_empty_strings_and_quotes_and_scans_them_back(tmp_path: Path) -> None:
    import psycopg

    from rayapp.sinks.postgres import sqlalchemy_url
    from rayapp.sinks.views import HIGHEST, LOWEST, VIEWS

    sink = make_sink("postgres", f"pgserver://{tmp_path / 'pg'}")
    try:
        block = pa.concat_tables([txn_block(IDS[:3]), txn_block(IDS[3:], score=None)])  # TX003.. unscored, TX004 without a device
        block = block.set_column(block.schema.get_field_index("description"), "description",
                                 pa.array(['', 'say "hi", ok\nnext line', None, "x", "y", "ünï"]))  # fmt: skip
        sink.write(Dataset.TRANSACTIONS, block)
        with psycopg.connect(sqlalchemy_url(sink.url).replace("postgresql+psycopg", "postgresql")) as conn:
            got = [r[0] for r in conn.execute("SELECT description FROM transactions ORDER BY transaction_id")]
        assert got == ["", 'say "hi", ok\nnext line', None, "x", "y", "ünï"]
        view = VIEWS["transactions"]  # reconcile's read: one COPY out, parsed by Arrow, equal to what was written
        assert sink.scan("transactions", LOWEST, HIGHEST).sort_by("transaction_id").equals(block.select(view.schema.names).cast(view.schema))
        assert sink.scan("transactions", "TX001", "TX003")["transaction_id"].to_pylist() == ["TX001", "TX002"]
    finally:
        sink.close()


def test_postgres_binary_copy_equals_csv_and_a_changed_column_type_takes_csv(tmp_path: Path) -> None:
    import psycopg

    from rayapp.sinks.postgres import sqlalchemy_url

    binary, text = make_sink("postgres", f"pgserver://{tmp_path / 'binary'}"), make_sink("postgres", f"pgserver://{tmp_path / 'text'}")
    first = txn_block(IDS)
    first = first.set_column(first.schema.get_field_index("description"), "description", pa.array(["", 'a "b", c\nd', None, "ünï", "\\N", "x"]))
    newer = txn_block(IDS[2:], amount="12345678.99", status="reversed", version=T0 + timedelta(hours=1), score=None)
    try:
        text.on_write_start()
        text._binary_tables = {"transactions": False, "_stage_transactions": False}  # this writer sends CSV
        for sink in (binary, text):
            sink.write(Dataset.TRANSACTIONS, first)  # first load: straight into the table
            sink.finish()
            sink.write(Dataset.TRANSACTIONS, newer)  # through the staging table
        assert binary._binary_tables == {"transactions": True, "_stage_transactions": True}

        def everything(sink: Any) -> list[tuple[Any, ...]]:
            with psycopg.connect(sqlalchemy_url(sink.url).replace("postgresql+psycopg", "postgresql")) as conn:
                return conn.execute("SELECT * FROM transactions ORDER BY transaction_id").fetchall()

        got = everything(binary)
        assert got == everything(text) and len(got) == 6
        assert [r[12] for r in got[:2]] == ["", 'a "b", c\nd'] and got[2][5] == Decimal("12345678.99") and got[2][18] is None

        # A user's migration made predictions.fraud_score a real: binary float8 would not fit, CSV does.
        with psycopg.connect(sqlalchemy_url(binary.url).replace("postgresql+psycopg", "postgresql")) as conn:
            conn.execute("ALTER TABLE predictions ALTER COLUMN fraud_score TYPE real")
        binary.write(Dataset.PREDICTIONS, txn_block(IDS[:2], score=0.75).select(dataset_schema(Dataset.PREDICTIONS).names))
        assert binary._binary_tables["predictions"] is False
        with psycopg.connect(sqlalchemy_url(binary.url).replace("postgresql+psycopg", "postgresql")) as conn:
            assert conn.execute("SELECT transaction_id, fraud_score FROM predictions ORDER BY 1").fetchall() == [("TX000", 0.75), ("TX001", 0.75)]
    finally:
        binary.close()
        text.close()


def _pg_rows(sink: Any) -> list[tuple[Any, ...]]:
    import psycopg

    from rayapp.sinks.postgres import sqlalchemy_url

    with psycopg.connect(sqlalchemy_url(sink.url).replace("postgresql+psycopg", "postgresql")) as conn:
        return conn.execute("SELECT transaction_id, amount, status, _version FROM transactions ORDER BY 1").fetchall()


def test_postgres_copies_straight_in_without_tombstones_and_falls_back_on_a_held_key(tmp_path: Path) -> None:
    later = T0 + timedelta(hours=1)
    twice = pa.concat_tables([txn_block(IDS[:2], amount="1.00", version=later), txn_block(IDS[:2], amount="2.00")])  # two versions of a key
    blocks = [twice, txn_block(IDS[2:4]), txn_block(IDS[4:], amount="5.00", version=later)]
    # First loads keep their indexes here (bulk_first_load: see the test after this one).
    direct, upsert = (make_sink("postgres", f"pgserver://{tmp_path / d}", bulk_first_load=False) for d in ("direct", "upsert"))
    # more writer actors on the same server
    other, late, after = (make_sink("postgres", f"pgserver://{tmp_path / 'direct'}", bulk_first_load=False) for _ in range(3))
    try:
        upsert.on_write_start()
        for ds in Dataset:
            upsert._freshness()[ds] = False  # the version-guarded upsert only
        for block in blocks:
            upsert.write(Dataset.TRANSACTIONS, block)
        expected = _pg_rows(upsert)
        assert [(r[0], str(r[1])) for r in expected] == [("TX000", "1.00"), ("TX001", "1.00"), ("TX002", "10.50"), ("TX003", "10.50"),
                                                        ("TX004", "5.00"), ("TX005", "5.00")]  # fmt: skip
        # The first block holds a key twice: its COPY fails, the upsert keeps the newest.
        assert direct.write(Dataset.TRANSACTIONS, twice) == 4 and direct._freshness()[Dataset.TRANSACTIONS] is False
        direct._freshness()[Dataset.TRANSACTIONS] = True  # as if no conflict had happened: the next block goes in by COPY
        direct.write(Dataset.TRANSACTIONS, blocks[1])
        # Another writer finds rows but no tombstones: it COPYs too, meets a held key and falls back,
        # so an older version never replaces a newer one and a newer one does.
        other.write(Dataset.TRANSACTIONS, pa.concat_tables([txn_block(IDS[:1], amount="0.10", version=T0 - timedelta(hours=1)), blocks[2]]))
        assert other._freshness()[Dataset.TRANSACTIONS] is False
        assert _pg_rows(direct) == expected
        # New keys go straight in beside an earlier run's rows; once tombstones exist, a writer upserts.
        late.write(Dataset.TRANSACTIONS, txn_block(["TX006", "TX007"], amount="6.00"))
        assert late._freshness()[Dataset.TRANSACTIONS] is True
        gone = txn_block(["TX007"], version=later)
        late.write(Dataset.TRANSACTIONS, gone.set_column(gone.schema.get_field_index("_deleted"), "_deleted", pa.array([True])))
        after.write(Dataset.TRANSACTIONS, txn_block(["TX007", "TX008"], amount="8.00"))  # TX007 older than its tombstone
        assert after._freshness()[Dataset.TRANSACTIONS] is False
        assert [(r[0], str(r[1])) for r in _pg_rows(direct)[6:]] == [("TX006", "6.00"), ("TX008", "8.00")]
    finally:
        for sink in (direct, upsert, other, late, after):
            sink.close()


# ---- ClickHouse (chDB) ----------------------------------------------------------------------------


def test_clickhouse_replacing_merge_tree_keeps_newest(tmp_path: Path) -> None:
    from rayapp.sinks.clickhouse import ClickHouseSink

    sink = make_sink("clickhouse", f"chdb://{tmp_path / 'ch'}")
    assert isinstance(sink, ClickHouseSink) and store("clickhouse").single_writer(sink.url)
    assert not store("clickhouse").single_writer("http://default@127.0.0.1:8123")
    try:
        sink.on_write_start()
        sink.on_write_start()
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS))
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS[:3], amount="99.00", version=T0 - timedelta(hours=1)))
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS[3:], amount="77.25", version=T0 + timedelta(hours=1)))
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS[3:], amount="77.25", version=T0 + timedelta(hours=1)))
        got = pa.concat_tables(list(sink.read(Dataset.TRANSACTIONS, ["transaction_id", "amount"]))).sort_by("transaction_id")
        assert got["amount"].to_pylist() == [Decimal("10.50")] * 3 + [Decimal("77.25")] * 3
        assert sink.counts()["transactions"] == 6
        gold = pa.table({"account_id": ["A", "A"], "activity_date": [T0.date(), T0.date() + timedelta(days=1)], "txn_count": [1, 2],
                         "total_amount": pa.array([Decimal("1.00"), Decimal("2.00")], pa.decimal128(18, 2)), "distinct_merchants": [1, 1],
                         "first_event_time": [T0, T0], "last_event_time": [T0, T0], "fraud_count": [0, 1], "_version": [3, 3]})  # fmt: skip
        sink.write(Dataset.DAILY_ACCOUNT_ACTIVITY, gold)
        sink.write(Dataset.DAILY_ACCOUNT_ACTIVITY, gold.set_column(2, "txn_count", pa.array([5, 6])).set_column(8, "_version", pa.array([4, 4])))
        assert sink.counts()["daily_account_activity"] == 2
        rows = pa.concat_tables(list(sink.read(Dataset.DAILY_ACCOUNT_ACTIVITY, ["txn_count"])))
        assert sorted(rows["txn_count"].to_pylist()) == [5, 6]
    finally:
        sink.close()


# ---- graph: Ladybug, and the Neo4j backend through a recording driver ------------------------------


def ladybug_rows(conn: Any, query: str) -> list[list[Any]]:
    """Every row a Cypher query returns on a Ladybug connection."""
    r = conn.execute(query)
    out = []
    while r.has_next():
        out.append(r.get_next())
    return out


def _ladybug_state(conn: Any) -> dict[str, Any]:
    def rows(q: str) -> list[list[Any]]:
        return ladybug_rows(conn, q)

    return {
        "paid": rows("MATCH (a:Account)-[p:PAID]->(m:Merchant) RETURN p.transaction_id, a.id, m.id, p.amount, p.status, p.fraud_score ORDER BY p.transaction_id"),
        "used": rows("MATCH (a:Account)-[u:USED]->(d:Device) RETURN a.id, d.id, u.first_seen, u.last_seen ORDER BY a.id, d.id"),
        "merchants": rows("MATCH (m:Merchant) RETURN m.id, m.name ORDER BY m.id"),
    }


def _write_sequence(sink: Any) -> None:
    sink.write(Dataset.TRANSACTIONS, txn_block(IDS))
    sink.write(Dataset.TRANSACTIONS, txn_block(IDS[:3], amount="99.00", status="reversed", version=T0 - timedelta(hours=1)))
    sink.write(Dataset.TRANSACTIONS, txn_block(IDS[3:], amount="77.25", status="chargeback", version=T0 + timedelta(hours=1), score=0.9))
    sink.write(Dataset.TRANSACTIONS, txn_block(IDS[3:], amount="77.25", status="chargeback", version=T0 + timedelta(hours=1), score=0.9))


EXPECTED_PAID = [
    [tid, f"ACC{i % 2}", f"M{i % 3}", 10.5 if i < 3 else 77.25, "settled" if i < 3 else "chargeback", 0.25 if i < 3 else 0.9]
    for i, tid in enumerate(IDS)
]
# ACC0 used DEV0 at minutes 0 and 2 (TX004 has no device); ACC1 used DEV1 at minutes 1, 3, 5.
EXPECTED_USED = [["ACC0", "DEV0", T0.replace(tzinfo=None), (T0 + timedelta(minutes=2)).replace(tzinfo=None)],
                 ["ACC1", "DEV1", (T0 + timedelta(minutes=1)).replace(tzinfo=None), (T0 + timedelta(minutes=5)).replace(tzinfo=None)]]  # fmt: skip


def test_graph_on_ladybug(tmp_path: Path) -> None:
    import ladybug

    sink = make_sink("graph", f"ladybug://{tmp_path / 'graph' / 'db.lbug'}")
    try:
        sink.on_write_start()
        sink.on_write_start()
        _write_sequence(sink)
        assert sink.counts() == {"Account": 2, "Merchant": 3, "Device": 2, "PAID": 6, "USED": 2}
    finally:
        sink.close()
    db = ladybug.Database(str(tmp_path / "graph" / "db.lbug"))
    conn = ladybug.Connection(db)
    state = _ladybug_state(conn)
    assert state["paid"] == EXPECTED_PAID
    assert state["used"] == EXPECTED_USED
    assert state["merchants"] == [["M0", "Shop 0"], ["M1", "Shop 1"], ["M2", "Shop 2"]]
    conn.close()
    db.close()


def test_graph_on_falkordb_over_bolt(falkordb: str) -> None:
    """The Neo4j backend's statements over Bolt on a real openCypher server: the same graph as Ladybug's."""
    from rayapp.sinks.views import HIGHEST, LOWEST

    sink = make_sink("graph", falkordb)
    try:
        sink.on_write_start()
        sink.on_write_start()  # indexes exist: nothing created twice
        assert sink._backend.dialect == "falkordb"  # it asked the server what it is
        _write_sequence(sink)
        assert sink.counts() == {"Account": 2, "Merchant": 3, "Device": 2, "PAID": 6, "USED": 2}
        paid = sink.scan("paid", LOWEST, HIGHEST).sort_by("transaction_id")
        assert [list(r.values())[:6] for r in paid.to_pylist()] == EXPECTED_PAID
        used = sink.scan("used", LOWEST, HIGHEST).sort_by("account_id")
        assert [[r["account_id"], r["device_id"], r["first_seen"].replace(tzinfo=None), r["last_seen"].replace(tzinfo=None)]
                for r in used.to_pylist()] == EXPECTED_USED  # fmt: skip
        moved = txn_block(IDS[:1], status="reversed", version=T0 + timedelta(hours=1))
        moved = moved.set_column(moved.schema.get_field_index("account_id"), "account_id", pa.array(["ACC7"]))
        sink.write(Dataset.TRANSACTIONS, moved)  # a correction moves a payment to another account
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS[:1]))  # the older version, replayed late: ignored
        paid = {r["transaction_id"]: (r["account_id"], r["status"]) for r in sink.scan("paid", LOWEST, HIGHEST).to_pylist()}
        assert len(paid) == 6 and sink.counts()["PAID"] == 6 and paid["TX000"] == ("ACC7", "reversed")
    finally:
        sink.close()


def test_concurrent_writers_on_a_server_create_each_payment_once(falkordb: str) -> None:
    """Two writer processes' worth of sinks send the same payments at once: one PAID per transaction."""
    import threading

    from rayapp.sinks.views import HIGHEST, LOWEST

    ids = [f"TX{i:03d}" for i in range(300)]
    sinks = [make_sink("graph", falkordb, batch_rows=50) for _ in range(3)]
    errors: list[BaseException] = []
    together = threading.Barrier(len(sinks))

    def send(sink: Any) -> None:
        try:
            sink.on_write_start()
            for start in range(0, len(ids), 50):
                block = txn_block(ids[start : start + 50])
                together.wait(timeout=60)  # every writer sends the same batch at the same moment
                sink.write(Dataset.TRANSACTIONS, block)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            together.abort()

    threads = [threading.Thread(target=send, args=(s,)) for s in sinks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, [repr(e) for e in errors]
        paid = sink_ids = sinks[0].scan("paid", LOWEST, HIGHEST)["transaction_id"].to_pylist()
        assert sorted(paid) == ids and len(sink_ids) == len(set(sink_ids))  # every payment exactly once
        assert sinks[0].counts()["PAID"] == 300
    finally:
        for sink in sinks:
            sink.close()


def test_graph_moves_a_transaction_to_its_new_account(tmp_path: Path) -> None:
    """A correction that changes a transaction's account replaces its PAID relationship: one per transaction."""
    import ladybug

    url = f"ladybug://{tmp_path / 'graph.lbug'}"
    sink = make_sink("graph", url, batch_rows=4)
    try:
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS))
        moved = txn_block(IDS[:1], status="reversed", version=T0 + timedelta(hours=1))
        moved = moved.set_column(moved.schema.get_field_index("account_id"), "account_id", pa.array(["ACC7"]))
        sink.write(Dataset.TRANSACTIONS, moved)
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS[:1]))  # the older version, replayed late: ignored
        assert sink.counts()["PAID"] == 6
    finally:
        sink.close()
    conn = ladybug.Connection(ladybug.Database(str(tmp_path / "graph.lbug")))
    paid = ladybug_rows(conn, "MATCH (a:Account)-[p:PAID {transaction_id: 'TX000'}]->(m:Merchant) RETURN a.id, m.id, p.status")
    assert paid == [["ACC7", "M0", "reversed"]]


def test_neo4j_backend_sends_the_same_cypher_in_managed_transactions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ladybug
    import neo4j
    from neo4j.exceptions import ServiceUnavailable

    from rayapp.lake import Lake
    from rayapp.publish.writers import StoreWriter
    from rayapp.sinks import graph
    from tests.fakes.neo4j_driver import FakeDriver

    db = ladybug.Database(str(tmp_path / "mirror.lbug"))
    conn = ladybug.Connection(db)
    for q in graph.LADYBUG_SCHEMA:
        conn.execute(q)
    drivers: list[FakeDriver] = []

    def fake_driver(uri: str, auth: Any = None, **kwargs: Any) -> FakeDriver:
        d = FakeDriver(uri, auth, conn)
        if not drivers:  # the first connection fails twice, like a server still starting
            d.failures = [ServiceUnavailable("connection refused"), ServiceUnavailable("connection refused")]
        drivers.append(d)
        return d

    monkeypatch.setattr(neo4j.GraphDatabase, "driver", staticmethod(fake_driver))
    settings = load_settings(overrides={"data_dir": str(tmp_path / "data"), "graph_url": "neo4j://neo4j:s3cret@graph.example:7687?database=fraud",
                                        "graph_batch_rows": 4, "writer_backoff_s": 0.01})  # fmt: skip
    writer = StoreWriter(Lake(settings), "graph", store("graph").url(settings), "run-1")
    for block in (txn_block(IDS), txn_block(IDS[:3], amount="99.00", status="reversed", version=T0 - timedelta(hours=1)),
                  txn_block(IDS[3:], amount="77.25", status="chargeback", version=T0 + timedelta(hours=1), score=0.9)):  # fmt: skip
        out = writer.write("transactions", block)
        assert out["error"] is None and out["written"] == block.num_rows
    calls_before_rerun = len(drivers[-1].calls)
    out = writer.write("transactions", txn_block(IDS[3:], amount="77.25", status="chargeback", version=T0 + timedelta(hours=1), score=0.9))
    assert out["error"] is None
    writer.close()

    d = drivers[-1]
    rerun = {c.query for c in d.calls[calls_before_rerun:]}
    assert rerun and not rerun & {graph.MERGE_PAID, graph.DELETE_PAID, graph.MERGE_USED}  # what the graph holds: nothing rewritten
    replaced = sorted(r["transaction_id"] for c in d.calls if c.query == graph.DELETE_PAID for r in c.params["rows"])
    assert replaced == ["TX003", "TX004", "TX005"]  # only the newer versions replaced relationships; the older were skipped
    assert d.uri == "neo4j://graph.example:7687" and d.auth == ("neo4j", "s3cret")  # credentials not left in the URI
    assert len(drivers) == 1 and drivers[0].failures == []  # the server refused twice while starting: setup retried
    schema = [c for c in d.calls if c.kind == "run" and c.query.startswith("CREATE")]
    assert [c.query for c in schema] == list(graph.NEO4J_SCHEMA)
    writes = [c for c in d.calls if c.kind == "tx.run" and not c.query.startswith("CALL dbms.")]  # the dialect probe reads
    assert writes and all(c.in_transaction and c.database == "fraud" for c in writes)
    assert {c.query for c in writes} == {graph.MERGE_ACCOUNTS, graph.MERGE_MERCHANTS, graph.MERGE_DEVICES, graph.LOCK_ACCOUNTS, graph.FIND_PAID,
                                         graph.FIND_TOMBSTONES, graph.DELETE_PAID, graph.MERGE_PAID, graph.FIND_USED, graph.MERGE_USED,
                                         # replaced payments: their pairs' USED ranges recomputed, nodes left alone removed
                                         graph.FIND_ACCOUNT_PAID, graph.SET_USED, graph.DELETE_ORPHAN_ACCOUNTS,
                                         graph.DELETE_ORPHAN_MERCHANTS, graph.DELETE_ORPHAN_DEVICES}  # fmt: skip
    order = [c.query for c in writes]
    assert order.index(graph.LOCK_ACCOUNTS) < order.index(graph.FIND_TOMBSTONES) < order.index(graph.MERGE_PAID)  # locked, then read
    assert max(len(c.params["rows"]) for c in writes) <= 4  # batched
    first_block = [c.query for c in writes[:8]]
    assert first_block.index(graph.MERGE_PAID) > first_block.index(graph.MERGE_MERCHANTS)  # nodes before relationships
    state = _ladybug_state(conn)
    assert state["paid"] == EXPECTED_PAID
    assert state["used"] == EXPECTED_USED


# ---- vectors: LanceDB, and Pinecone through the SDK against a local data plane ----------------------


def vec_block(ids: list[str], version: datetime, fill: float, text: str = "t", with_vector: bool = True) -> pa.Table:
    rows = [{"id": i, "vector": [fill] * 384 if with_vector else None, "text": text, "account_id": "A", "merchant_id": "M",
             "amount": 1.0, "fraud_score": 0.9, "model_version": "m1", "event_time": T0, "_version": version} for i in ids]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=dataset_schema(Dataset.TRANSACTION_VECTORS))


def test_lancedb_vectors_upsert_versioned_and_delete(tmp_path: Path) -> None:
    import lancedb

    sink = make_sink("vector", f"lancedb://{tmp_path / 'vec'}")
    try:
        sink.on_write_start()
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(IDS, T0, 0.1))
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(IDS[:2], T0 - timedelta(hours=1), 0.9))  # older: ignored
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(IDS[2:4], T0 + timedelta(hours=1), 0.5))  # newer
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(IDS[4:], T0 + timedelta(hours=1), 0.0, with_vector=False))  # below threshold now
        assert sink.counts() == {"merchants": 0, "transactions": 4}
    finally:
        sink.close()
    got = lancedb.connect(str(tmp_path / "vec")).open_table("transactions").to_arrow().sort_by("id")
    assert got["id"].to_pylist() == IDS[:4]
    assert [round(v[0], 3) for v in got["vector"].to_pylist()] == [0.1, 0.1, 0.5, 0.5]


@pytest.fixture
def pinecone_server() -> Iterator[str]:
    from tests.servers import start_reporting_port, stop

    proc, port = start_reporting_port("tests.fakes.pinecone_server", "--api-key", "test-key")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def test_pinecone_requests_stay_within_documented_limits(pinecone_server: str) -> None:
    import json

    from pinecone import Pinecone

    sink = make_sink("vector", "pinecone://fraud-index", pinecone_api_key="test-key", pinecone_host=pinecone_server)
    ids = [f"TX{i:05d}" for i in range(2500)]
    try:
        sink.on_write_start()
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(ids, T0, 0.1, text="x" * 6000))  # ~8 KB JSON per vector: the 2 MB cap binds
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(ids[:10], T0 + timedelta(minutes=30), 0.1, text="y" * 60_000))  # metadata over 40 KB: text is cut
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(ids[10:20], T0 - timedelta(hours=1), 0.9))  # older: skipped
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(ids[2000:], T0 + timedelta(hours=1), 0.0, with_vector=False))  # 500 deletes
        assert sink.counts()["transactions"] == 2000
    finally:
        sink.close()
    stats = json.loads(urllib.request.urlopen(f"{pinecone_server}/_fake/stats").read())
    assert stats["rejected"] == 0
    assert stats["max_upsert_vectors"] <= 1000 and stats["max_upsert_bytes"] <= 2 * 1024 * 1024
    assert stats["upserts"] > 2500 * 8000 // (2 * 1024 * 1024)  # more requests than the vector count alone would need
    index = Pinecone(api_key="test-key").Index(host=pinecone_server)
    got = index.fetch(ids=["TX00000", "TX00015", "TX02100"], namespace="transactions").vectors
    assert set(got) == {"TX00000", "TX00015"}
    assert got["TX00015"].values[0] == pytest.approx(0.1)  # the older version did not overwrite
    assert got["TX00000"].metadata["text"].startswith("y") and len(json.dumps(got["TX00000"].metadata)) <= 40 * 1024
    assert got["TX00000"].metadata["fraud_score"] == 0.9 and got["TX00000"].metadata["_version"] > 0


def test_pinecone_without_api_key_is_a_clear_error() -> None:
    from rayapp.sinks.base import SinkError

    sink = make_sink("vector", "pinecone://idx", pinecone_host="http://127.0.0.1:9")
    with pytest.raises(SinkError, match="API key"):
        sink.on_write_start()


# ---- deletes: tombstones in every store ------------------------------------------------------------


def gone_block(ids: list[str], version: datetime) -> pa.Table:
    """Tombstones of ``txn_block`` rows: the key, the account/merchant/device they hung on, the version."""
    from rayapp.transforms.serving import tombstones

    live = txn_block(ids)
    known = live.select(["transaction_id", "account_id", "merchant_id", "device_id"])
    return tombstones(Dataset.TRANSACTIONS, known.append_column("_version", pa.array([version] * len(ids), live.schema.field("_version").type)))


def repair(block: pa.Table) -> pa.Table:
    from rayapp.sinks.base import REPAIR

    return block.replace_schema_metadata(REPAIR)


TXN_STORES = {"postgres": ("pgserver://{}", "transactions"), "clickhouse": ("chdb://{}", "transactions"), "graph": ("ladybug://{}", "paid"),
              "falkordb": ("(the falkordb fixture)", "paid"), "postgres15": ("(the postgres_server fixture)", "transactions"),
              "clickhouse_http": ("(the clickhouse_http fixture)", "transactions")}  # fmt: skip


def _graph_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The graph under test: embedded Ladybug, or a graph of its own on the session's FalkorDB (Bolt)."""
    if kind == "ladybug":
        return f"ladybug://{tmp_path / 'g.lbug'}"
    return str(request.getfixturevalue("falkordb"))


@pytest.mark.parametrize("kind", sorted(TXN_STORES))
def test_tombstones_delete_older_rows_and_keep_them_deleted(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    from rayapp.sinks.views import HIGHEST, LOWEST

    url, view = TXN_STORES[kind]
    name = {"falkordb": "graph", "postgres15": "postgres", "clickhouse_http": "clickhouse"}.get(kind, kind)
    if kind == "falkordb":
        url = _graph_url(kind, tmp_path, request)
    elif kind == "postgres15":  # a PostgreSQL server, a database of this test's own
        from tests.conftest import fresh_postgres_database

        url = fresh_postgres_database(request.getfixturevalue("postgres_server"), "rayapp_it_tombstones")
    elif kind == "clickhouse_http":  # ClickHouse over HTTP
        url = str(request.getfixturevalue("clickhouse_http"))
    else:
        url = url.format(tmp_path / name)
    sink = make_sink(name, url)
    h = timedelta(hours=1)

    def held() -> dict[str, str]:
        t = sink.scan(view, LOWEST, HIGHEST)
        return dict(zip(t["transaction_id"].to_pylist(), t["status"].to_pylist()))

    try:
        sink.on_write_start()
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS))
        sink.write(Dataset.TRANSACTIONS, gone_block(IDS[:2], T0 + h))  # two transactions left the lake
        assert sorted(held()) == IDS[2:]
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS[:2]))  # an older upsert replayed (a dead letter, a re-run)
        sink.write(Dataset.TRANSACTIONS, gone_block(IDS[:2], T0 + h))  # the delete replayed: nothing changes
        assert sorted(held()) == IDS[2:]
        sink.write(Dataset.TRANSACTIONS, gone_block(IDS[2:3], T0 - h))  # an old delete replayed: the newer row stays
        assert sorted(held()) == IDS[2:]
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS[:1], status="chargeback", version=T0 + 2 * h))  # back in the lake, newer
        assert sorted(held()) == [IDS[0], *IDS[2:]] and held()[IDS[0]] == "chargeback"
        sink.write(Dataset.TRANSACTIONS, repair(txn_block(IDS[1:2], status="refunded", version=T0)))  # repair: whatever the version
        sink.write(Dataset.TRANSACTIONS, repair(gone_block(IDS[2:3], T0 - 2 * h)))  # repair of a stray row: removed
        assert held() == {IDS[0]: "chargeback", IDS[1]: "refunded", **{i: "settled" for i in IDS[3:]}}
        sink.write(Dataset.TRANSACTIONS, gone_block(IDS, T0 + 3 * h))
        assert held() == {}
        counts = sink.counts()
        if name == "graph":  # accounts, merchants and devices left without relationships are gone too
            assert counts == {"Account": 0, "Merchant": 0, "Device": 0, "PAID": 0, "USED": 0}
            assert sink.scan("used", LOWEST, HIGHEST).num_rows == 0
        else:
            assert counts["transactions"] == 0
    finally:
        sink.close()


@pytest.mark.parametrize("kind", ["ladybug", "falkordb"])
def test_graph_deletes_shrink_device_use_to_the_payments_left(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    from rayapp.sinks.views import HIGHEST, LOWEST

    sink = make_sink("graph", _graph_url(kind, tmp_path, request))
    try:
        sink.on_write_start()
        sink.write(Dataset.TRANSACTIONS, txn_block(IDS))  # ACC0 used DEV0 for TX000, TX002 (TX004 has no device)
        sink.write(Dataset.TRANSACTIONS, gone_block(["TX002"], T0 + timedelta(hours=1)))
        used = {(r["account_id"], r["device_id"]): (r["first_seen"], r["last_seen"]) for r in sink.scan("used", LOWEST, HIGHEST).to_pylist()}
        assert used == {("ACC0", "DEV0"): (T0, T0), ("ACC1", "DEV1"): (T0 + timedelta(minutes=1), T0 + timedelta(minutes=5))}
        sink.write(Dataset.TRANSACTIONS, gone_block(["TX001", "TX003", "TX005"], T0 + timedelta(hours=1)))  # all of ACC1's payments
        assert {(r["account_id"], r["device_id"]) for r in sink.scan("used", LOWEST, HIGHEST).to_pylist()} == {("ACC0", "DEV0")}
        assert sink.counts() == {"Account": 1, "Merchant": 2, "Device": 1, "PAID": 2, "USED": 1}  # M0 (TX000), M1 (TX004)
    finally:
        sink.close()


@pytest.mark.parametrize("backend", ["lancedb", "pinecone"])
def test_vector_deletes_are_version_guarded_and_stay(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    from rayapp.sinks.views import HIGHEST, LOWEST

    if backend == "lancedb":
        sink = make_sink("vector", f"lancedb://{tmp_path / 'vec'}")
    else:
        host = request.getfixturevalue("pinecone_server")
        sink = make_sink("vector", "pinecone://fraud-index", pinecone_api_key="test-key", pinecone_host=host)
    h = timedelta(hours=1)

    def held() -> list[str]:
        sink._ids = None  # read afresh
        return sorted(sink.scan("transaction_vectors", LOWEST, HIGHEST)["id"].to_pylist())

    try:
        sink.on_write_start()
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(IDS, T0, 0.1))
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(IDS[:2], T0 - h, 0.0, with_vector=False))  # an old delete: ignored
        assert held() == IDS
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(IDS[:2], T0 + h, 0.0, with_vector=False))  # a newer one deletes
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(IDS[:2], T0, 0.3))  # the older vector replayed: stays deleted
        assert held() == IDS[2:]
        sink.write(Dataset.TRANSACTION_VECTORS, vec_block(IDS[:1], T0 + 2 * h, 0.7))  # newer than the delete: back
        assert held() == [IDS[0], *IDS[2:]]
        sink.write(Dataset.TRANSACTION_VECTORS, repair(vec_block(IDS[1:2], T0, 0.2)))  # repair writes whatever the version
        assert held() == IDS and sink.counts()["transactions"] == 6
    finally:
        sink.close()


# ---- read side: vector search ---------------------------------------------------------------------------

SEARCH_FILTERS = [
    (None, lambda m: True),
    ({"category": "fuel"}, lambda m: m["category"] == "fuel"),
    ({"fraud_rate": {"$gte": 0.2}, "country": {"$in": ["DE"]}}, lambda m: m["fraud_rate"] >= 0.2 and m["country"] == "DE"),
    ({"$or": [{"category": "travel"}, {"txn_count": {"$lt": 100}}]}, lambda m: m["category"] == "travel" or m["txn_count"] < 100),
    ({"name": {"$nin": ["Shop 1", "Shop 2"]}, "fraud_count": {"$ne": 0}}, lambda m: m["name"] not in ("Shop 1", "Shop 2") and m["fraud_count"] != 0),
]


@pytest.mark.parametrize("backend", ["lancedb", "pinecone"])
def test_vector_search_with_filters_equals_brute_force(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import numpy as np

    from rayapp.sinks.vector_filter import FilterError

    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(60, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = [{"id": f"M{i:03d}", "vector": vecs[i].tolist(), "text": f"merchant {i}", "name": f"Shop {i}", "category": ("grocery", "fuel", "travel")[i % 3],
             "country": ("DE", "FR")[i % 2], "txn_count": i * 10, "fraud_count": i % 4, "fraud_rate": (i % 4) / 10, "_version": 1} for i in range(60)]  # fmt: skip
    if backend == "lancedb":
        sink = make_sink("vector", f"lancedb://{tmp_path / 'vectors'}")
    else:
        sink = make_sink("vector", "pinecone://idx", pinecone_api_key="test-key", pinecone_host=request.getfixturevalue("pinecone_server"))
    try:
        sink.on_write_start()
        sink.write(Dataset.MERCHANT_VECTORS, pa.Table.from_pylist(rows, schema=dataset_schema(Dataset.MERCHANT_VECTORS)))
        query = vecs[7] + 0.3 * vecs[8]
        query /= np.linalg.norm(query)
        for flt, keep in SEARCH_FILTERS:
            got = sink.search(Dataset.MERCHANT_VECTORS, query.tolist(), 5, flt)
            cands = [(float(vecs[i] @ query), r["id"]) for i, r in enumerate(rows) if keep(r)]
            expected = sorted(cands, reverse=True)[:5]
            assert [h["id"] for h in got] == [i for _, i in expected], flt
            assert [h["score"] for h in got] == pytest.approx([s for s, _ in expected], abs=1e-4)
            assert all(keep({**h["metadata"], "id": h["id"]}) for h in got)
        assert sink.search(Dataset.MERCHANT_VECTORS, query.tolist(), 1)[0]["metadata"]["name"] == "Shop 7"
        with pytest.raises(FilterError):
            sink.search(Dataset.MERCHANT_VECTORS, query.tolist(), 5, {"category": {"$gt": "a"}})
    finally:
        sink.close()


def _graph_history(seed: int) -> tuple[list[pa.Table], set[str]]:
    """A first load of 3,000 payments, then runs where 10% of the rows are corrections (newer
    versions, some moved to another account or merchant, a device changed), older replays,
    deletes and payments back after their delete; and the ids live at the end."""
    import random

    rng = random.Random(seed)
    schema = dataset_schema(Dataset.TRANSACTIONS)
    held: dict[str, dict[str, Any]] = {}

    def row(tid: str, version: datetime) -> dict[str, Any]:
        acc, mer = rng.randrange(300), rng.randrange(40)
        return {"transaction_id": tid, "account_id": f"ACC{acc}", "merchant_id": f"M{mer}", "merchant_name": f"Shop {mer}",
                "merchant_category": "grocery", "amount": Decimal(f"{rng.randrange(1, 100000) / 100:.2f}"), "currency": "USD",
                "country": "US", "channel": "pos", "device_id": f"DEV{rng.randrange(500)}" if rng.random() > 0.1 else None,
                "ip_address": "10.0.0.1", "status": rng.choice(["settled", "pending", "reversed"]), "description": "x", "is_fraud": False,
                "event_time": T0 + timedelta(seconds=rng.randrange(86400 * 30)), "updated_at": version, "_updated_at": version,
                "model_version": "m1", "fraud_score": rng.random(), "is_fraud_pred": False, "scored_at": version, "_version": version}  # fmt: skip

    blocks = []
    first = [row(f"T{i:05d}", T0) for i in range(3000)]
    held.update((r["transaction_id"], r) for r in first)
    blocks.append(pa.Table.from_pylist(first, schema=schema))
    live = set(held)
    for run in range(1, 4):
        version = T0 + timedelta(hours=run)
        fresh = [row(f"T{3000 * run + i:05d}", version) for i in range(900)]
        fixed = []
        for tid in rng.sample(sorted(live), 100):  # corrections: a newer version, often elsewhere
            r = dict(held[tid], _version=version, updated_at=version, status="chargeback", amount=Decimal("1.23"))
            if rng.random() < 0.5:
                r["account_id"] = f"ACC{rng.randrange(300)}"
            if rng.random() < 0.3:
                r["merchant_id"] = f"M{rng.randrange(40)}"
            fixed.append(r)
        stale = [dict(held[t], _version=T0 - timedelta(hours=1)) for t in rng.sample(sorted(live), 20)]  # older replays: ignored
        for r in fresh + fixed:
            held[r["transaction_id"]] = r
        live |= {r["transaction_id"] for r in fresh}
        blocks.append(pa.Table.from_pylist(fresh + fixed + stale, schema=schema))
        dead = rng.sample(sorted(live), 30)
        from rayapp.transforms.serving import tombstones

        keys = pa.Table.from_pylist([{k: held[t][k] for k in ("transaction_id", "account_id", "merchant_id", "device_id")} for t in dead])
        gone_at = version + timedelta(minutes=30)  # deleted after this run's upserts
        blocks.append(tombstones(Dataset.TRANSACTIONS, keys.append_column("_version", pa.array([gone_at] * len(dead), schema.field("_version").type))))
        live -= set(dead)
    back = sorted(held.keys() - live)[:10]  # deleted, then back in the lake with a newer version
    later = T0 + timedelta(hours=9)
    blocks.append(pa.Table.from_pylist([dict(held[t], _version=later, updated_at=later) for t in back], schema=schema))
    return blocks, live | set(back)


def test_graph_bulk_load_equals_the_statement_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ladybug's COPY path (new nodes and relationships bulk-loaded) builds exactly the graph the
    row-statement path builds, through corrections, moves, replays, deletes and returns."""
    from rayapp.sinks.graph_engines import LadybugEngine
    from rayapp.sinks.views import HIGHEST, LOWEST

    copied: dict[str, int] = {}
    real_copy = LadybugEngine.copy

    def counting_copy(self: LadybugEngine, table: str, rows: pa.Table) -> None:
        copied[table] = copied.get(table, 0) + rows.num_rows
        real_copy(self, table, rows)

    monkeypatch.setattr(LadybugEngine, "copy", counting_copy)
    blocks, live = _graph_history(7)
    states = {}
    for bulk in (True, False):
        sink = make_sink("graph", f"ladybug://{tmp_path / f'bulk-{bulk}.lbug'}", bulk=bulk, batch_rows=1000)
        try:
            sink.on_write_start()
            for block in blocks:
                sink.write(Dataset.TRANSACTIONS, block)
            paid = sink.scan("paid", LOWEST, HIGHEST).sort_by("transaction_id")
            used = sink.scan("used", LOWEST, HIGHEST).sort_by([("account_id", "ascending"), ("device_id", "ascending")])
            states[bulk] = (paid, used, sink.counts())
        finally:
            sink.close()
    assert states[True][0].equals(states[False][0])
    assert states[True][1].equals(states[False][1])
    assert states[True][2] == states[False][2]
    assert sorted(states[True][0]["transaction_id"].to_pylist()) == sorted(live)  # one PAID per live payment
    assert states[True][1].num_rows > 0
    # the bulk run loaded every new payment by COPY (the statement run none): 3,000 + 3 x 900 + 10 returns
    assert copied["PAID"] >= 5700 and copied["Account"] == 300 and copied["USED"] > 0
