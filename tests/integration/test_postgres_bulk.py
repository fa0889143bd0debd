"""A PostgreSQL table's first load without its indexes (rayapp.sinks.pg_bulk): two writers, a
repeated block, older and newer versions, tombstones and a run that died midway all end with the
rows the version-guarded upsert gives and with exactly the indexes the table had."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from rayapp.catalog import Dataset, dataset_schema
from tests.integration.test_sinks import IDS, T0, gone_block, make_sink, txn_block

pytestmark = pytest.mark.integration

H = timedelta(hours=1)
B1 = txn_block(IDS[:4])
B2 = pa.concat_tables([txn_block(IDS[2:4], amount="1.00", version=T0 - H), txn_block(IDS[4:], amount="5.00", version=T0 + H)])
B4 = txn_block(IDS[1:2], amount="2.00", status="reversed", version=T0 + 2 * H)
PREDS = txn_block(IDS[:3], score=0.5).select(dataset_schema(Dataset.PREDICTIONS).names)


def _dsn(sink: Any) -> str:
    from rayapp.sinks.postgres import sqlalchemy_url

    return sqlalchemy_url(sink.url).replace("postgresql+psycopg", "postgresql")


def _query(sink: Any, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(_dsn(sink)) as conn:
        return conn.execute(sql).fetchall()


def _state(sink: Any) -> dict[str, Any]:
    """Rows of both tables, their indexes and constraints, and the open loads."""
    return {
        "transactions": _query(sink, "SELECT * FROM transactions ORDER BY transaction_id"),
        "predictions": _query(sink, "SELECT * FROM predictions ORDER BY transaction_id, model_version"),
        "indexes": _query(sink, "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename IN ('transactions', 'predictions') ORDER BY 2"),
        "constraints": _query(sink, "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid IN "
                                    "('transactions'::regclass, 'predictions'::regclass) ORDER BY 1"),  # fmt: skip
        "open": _query(sink, "SELECT table_name FROM rayapp_bulk_loads ORDER BY 1"),
    }


def _url(kind: str, tmp_path: Path, name: str, request: pytest.FixtureRequest) -> str:
    if kind == "pgserver":
        return f"pgserver://{tmp_path / name}"
    from tests.conftest import fresh_postgres_database

    return fresh_postgres_database(request.getfixturevalue("postgres_server"), f"rayapp_it_bulk_{name}")


def _reference(url: str, writes: list[tuple[Dataset, pa.Table]]) -> dict[str, Any]:
    """The same writes through the upsert alone (first loads keep their indexes)."""
    sink = make_sink("postgres", url, bulk_first_load=False)
    try:
        for dataset, block in writes:
            sink.write(dataset, block)
        sink.finish()
        return _state(sink)
    finally:
        sink.close()


@pytest.mark.parametrize("kind", ["pgserver", "postgres15"])
def test_first_load_without_indexes_ends_as_the_upsert_would(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    writes = [(Dataset.TRANSACTIONS, B1), (Dataset.TRANSACTIONS, B2), (Dataset.TRANSACTIONS, B1), (Dataset.TRANSACTIONS, B4),
              (Dataset.PREDICTIONS, PREDS), (Dataset.PREDICTIONS, PREDS)]  # fmt: skip
    expected = _reference(_url(kind, tmp_path, "ref", request), writes)
    assert expected["open"] == [] and len(expected["transactions"]) == 6 and len(expected["predictions"]) == 3
    assert {r[1] for r in expected["indexes"]} == {"transactions_pkey", "transactions_account_idx", "predictions_pkey"}

    url = _url(kind, tmp_path, "bulk", request)
    a, b = make_sink("postgres", url), make_sink("postgres", url)  # two writer actors of one run
    try:
        a.write(Dataset.TRANSACTIONS, B1)
        during = _state(a)
        assert during["open"] == [("transactions",)] and [r[1] for r in during["indexes"]] == ["predictions_pkey"]
        for sink, (dataset, block) in zip([b, a, b, a, b], writes[1:]):  # the repeated B1 is a retried block
            sink.write(dataset, block)
        during = _state(a)
        assert during["open"] == [("predictions",), ("transactions",)] and during["indexes"] == [] and during["constraints"] == []
        assert len(during["transactions"]) == 4 + 4 + 4 + 1 and len(during["predictions"]) == 6  # as written, keys twice
        a.finish()
        b.finish()  # nothing left for the second writer
        assert _state(a) == expected
        a.write(Dataset.TRANSACTIONS, txn_block(["TX009"]))  # the table holds rows now: the upsert, indexes kept
        assert _state(a)["open"] == [] and len(_state(a)["transactions"]) == 7
    finally:
        a.close()
        b.close()


def test_a_delete_finishes_the_open_load_first(tmp_path: Path) -> None:
    writes = [(Dataset.TRANSACTIONS, B1), (Dataset.TRANSACTIONS, B1), (Dataset.TRANSACTIONS, gone_block(IDS[:1], T0 + H)),
              (Dataset.TRANSACTIONS, txn_block(IDS[:2]))]  # fmt: skip
    expected = _reference(f"pgserver://{tmp_path / 'ref'}", writes)
    sink = make_sink("postgres", f"pgserver://{tmp_path / 'bulk'}")
    try:
        sink.write(*writes[0])
        sink.write(*writes[1])
        assert _state(sink)["open"] == [("transactions",)]
        sink.write(*writes[2])  # tombstones: the rows are deduplicated and indexed before the delete
        assert _state(sink)["open"] == [] and len(_state(sink)["transactions"]) == 3
        sink.write(*writes[3])  # older than its tombstone: TX000 stays deleted
        sink.finish()
        assert _state(sink) == expected
    finally:
        sink.close()


def test_a_load_a_dead_run_left_open_is_finished_by_the_next(tmp_path: Path) -> None:
    url = f"pgserver://{tmp_path / 'bulk'}"
    expected = _reference(f"pgserver://{tmp_path / 'ref'}", [(Dataset.TRANSACTIONS, B1), (Dataset.TRANSACTIONS, B2)])
    dead = make_sink("postgres", url)
    try:
        dead.write(Dataset.TRANSACTIONS, B1)
    finally:
        dead.close()  # closed without finishing, as a killed writer would leave it
    sink = make_sink("postgres", url)
    try:
        assert _state(sink)["open"] == [("transactions",)]
        sink.write(Dataset.TRANSACTIONS, B1)  # the next run sends everything again, into the same load
        sink.write(Dataset.TRANSACTIONS, B2)
        sink.finish()
        assert _state(sink) == expected
    finally:
        sink.close()


def test_a_table_another_table_references_keeps_its_indexes(tmp_path: Path) -> None:
    import psycopg

    sink = make_sink("postgres", f"pgserver://{tmp_path / 'pg'}")
    try:
        sink.on_write_start()
        with psycopg.connect(_dsn(sink)) as conn:  # a user's migration: disputes point at transactions
            conn.execute("CREATE TABLE disputes (transaction_id text REFERENCES transactions (transaction_id))")
        before = _state(sink)
        sink.write(Dataset.TRANSACTIONS, B1)
        after = _state(sink)
        assert after["open"] == [] and after["indexes"] == before["indexes"] and len(after["transactions"]) == 4
        sink.write(Dataset.PREDICTIONS, PREDS)  # predictions are referenced by nothing: their first load is open
        assert _state(sink)["open"] == [("predictions",)]
    finally:
        sink.close()


@pytest.mark.usefixtures("ray_local")
def test_a_dataset_is_finished_once_its_writes_are_done_while_the_others_load(settings: Any) -> None:
    """Writer actors and the fan-out of a publish run: predictions are indexed as soon as their
    writes are in, while transactions still load; the drain ends the rest."""
    import ray

    from rayapp.lake import Lake
    from rayapp.publish.writers import Fanout, start_writers, stop_writers
    from rayapp.sinks import store

    lake = Lake(settings)
    pools = start_writers(lake, ["postgres"], "run-bulk")
    sink = make_sink("postgres", store("postgres").url(settings))  # this test's view of the store
    try:
        fan = Fanout(lake, "run-bulk", pools)
        fan.submit("postgres", Dataset.PREDICTIONS, ray.put(PREDS))
        fan.submit("postgres", Dataset.PREDICTIONS, ray.put(PREDS))
        fan.finish_when_written("postgres", Dataset.PREDICTIONS)
        assert fan.finishing == []  # its writes are not known to be done yet
        fan.submit("postgres", Dataset.TRANSACTIONS, ray.put(B1))
        deadline = time.monotonic() + 60
        while not fan.finishing and time.monotonic() < deadline:
            fan.poll()  # records the writes that are done: the predictions' finish goes out then
        assert ray.get(fan.finishing[0][1]) is None
        during = _state(sink)
        assert during["open"] == [("transactions",)] and [r[1] for r in during["indexes"]] == ["predictions_pkey"]
        assert len(during["predictions"]) == 3  # the repeated block's rows, once
        tally = fan.drain()
        assert tally["postgres"].unfinished == [] and sum(tally["postgres"].written.values()) == 10
        after = _state(sink)
        assert after["open"] == [] and {r[1] for r in after["indexes"]} == {"predictions_pkey", "transactions_pkey", "transactions_account_idx"}
    finally:
        stop_writers(pools)
        sink.close()
