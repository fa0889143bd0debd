"""`publish` end to end on Ray: every store holds exactly the lake's state, re-runs change nothing,
increments arrive, a killed writer actor loses nothing, and a store that is down fills the
dead-letter queue until `replay_dlq` delivers it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from jobs import bronze_to_silver as b2s_job
from jobs import generate as generate_job
from jobs import ingest as ingest_job
from jobs import publish as publish_job
from jobs import replay_dlq as replay_job
from jobs import score_transactions as score_job
from jobs import silver_to_gold as gold_job
from jobs import train_fraud_model as train_job
from rayapp.catalog import GOLD_ACCOUNT, GOLD_MERCHANT, PREDICTIONS, SILVER
from rayapp.lake import Lake
from rayapp.ledger import Ledger
from rayapp.settings import Settings, load_settings
from rayapp.sinks import store
from tests.integration.test_sinks import ladybug_rows

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]

MIN_SCORE = 0.5


def _run(job: Any, args: list[str]) -> None:
    assert job.entrypoint(args) == 0


def _refresh_lake(args: list[str]) -> None:
    for job in (ingest_job, b2s_job, gold_job):
        _run(job, args)
    _run(score_job, args + ["--mode", "inline"])


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> tuple[Path, Path]:
    """A scored lake from 2 of 4 generated files; the other 2 wait in ``later/``."""
    root = tmp_path_factory.mktemp("publish")
    data = root / "data"
    args = ["--data-dir", str(data)]
    _run(generate_job, args + ["--rows", "16000", "--files", "4", "--seed", "11"])
    landing = data / "lake" / "landing"
    later = root / "later"
    later.mkdir()
    for f in sorted(p for p in landing.rglob("*") if p.is_file())[2:]:
        shutil.move(str(f), later / f.name)
    for job in (ingest_job, b2s_job, gold_job, train_job):
        _run(job, args)
    _run(score_job, args + ["--mode", "inline"])
    return data, later


def _settings(data: Path, stores_dir: Path, **extra: Any) -> tuple[Settings, list[str]]:
    overrides = {
        "postgres_url": f"pgserver://{stores_dir / 'pg'}",
        "clickhouse_url": f"chdb://{stores_dir / 'ch'}",
        "graph_url": f"ladybug://{stores_dir / 'graph.lbug'}",
        "vector_url": f"lancedb://{stores_dir / 'vec'}",
        "writer_backoff_s": "0.01",
        **{k: str(v) for k, v in extra.items()},
    }
    args = ["--data-dir", str(data)] + [x for k, v in overrides.items() for x in ("--set", f"{k}={v}")]
    return load_settings(overrides={"data_dir": str(data), **overrides}), args


# ---- what the lake says each store must hold (read independently with polars) -----------------------


def expected(settings: Settings) -> dict[str, Any]:
    silver = pl.read_delta(Lake(settings).uri(SILVER))
    preds = pl.read_delta(Lake(settings).uri(PREDICTIONS))
    latest = preds.sort(["transaction_id", "scored_at", "model_version"]).group_by("transaction_id").last()
    txns = silver.join(latest.select("transaction_id", "model_version", "fraud_score"), on="transaction_id", how="left")
    acc = pl.read_delta(Lake(settings).uri(GOLD_ACCOUNT))
    mer = pl.read_delta(Lake(settings).uri(GOLD_MERCHANT))
    linked = txns.filter(pl.col("account_id").is_not_null() & pl.col("merchant_id").is_not_null())
    used = (
        linked.filter(pl.col("device_id").is_not_null())
        .group_by("account_id", "device_id")
        .agg(pl.col("event_time").min().alias("first"), pl.col("event_time").max().alias("last"))
    )
    return {
        "transactions": {r[0]: (str(r[1]), r[2], _r(r[3]), r[4]) for r in txns.select("transaction_id", "amount", "status", "fraud_score", "model_version").iter_rows()},
        "predictions": {(r[0], r[1]): _r(r[2]) for r in preds.select("transaction_id", "model_version", "fraud_score").iter_rows()},
        "daily_account_activity": {(r[0], str(r[1])): (r[2], str(r[3])) for r in acc.select("account_id", "activity_date", "txn_count", "total_amount").iter_rows()},
        "merchant_daily_stats": {(r[0], str(r[1])): (r[2], r[3]) for r in mer.select("merchant_id", "activity_date", "txn_count", "fraud_count").iter_rows()},
        "paid": {r[0]: (r[1], r[2], _r(float(r[3])), r[4], _r(r[5])) for r in linked.select("transaction_id", "account_id", "merchant_id", "amount", "status", "fraud_score").iter_rows()},
        "used": {(r[0], r[1]): (r[2].replace(tzinfo=None), r[3].replace(tzinfo=None)) for r in used.iter_rows()},
        "merchants": set(mer["merchant_id"].to_list()),
        "risky": {r[0] for r in txns.filter(pl.col("fraud_score") >= MIN_SCORE).select("transaction_id").iter_rows()},
    }  # fmt: skip


def _r(x: Any) -> Any:
    return None if x is None else round(float(x), 9)


def postgres_state(settings: Settings) -> dict[str, Any]:
    import psycopg

    from rayapp.sinks.postgres import sqlalchemy_url

    with psycopg.connect(sqlalchemy_url(store("postgres").url(settings)).replace("postgresql+psycopg", "postgresql")) as c:
        return {
            "transactions": {r[0]: (str(r[1]), r[2], _r(r[3]), r[4]) for r in c.execute("SELECT transaction_id, amount, status, fraud_score, model_version FROM transactions")},
            "predictions": {(r[0], r[1]): _r(r[2]) for r in c.execute("SELECT transaction_id, model_version, fraud_score FROM predictions")},
            "daily_account_activity": {(r[0], str(r[1])): (r[2], str(r[3])) for r in c.execute("SELECT account_id, activity_date, txn_count, total_amount FROM daily_account_activity")},
            "merchant_daily_stats": {(r[0], str(r[1])): (r[2], r[3]) for r in c.execute("SELECT merchant_id, activity_date, txn_count, fraud_count FROM merchant_daily_stats")},
            "rows": c.execute("SELECT (SELECT count(*) FROM transactions) + (SELECT count(*) FROM predictions)").fetchone()[0],
        }  # fmt: skip


def clickhouse_state(settings: Settings) -> dict[str, Any]:
    from rayapp.sinks.clickhouse import client_for

    c = client_for(store("clickhouse").url(settings))
    try:
        q = lambda sql: c.query(sql).result_rows  # noqa: E731
        return {
            "transactions": {r[0]: (str(r[1]), r[2], _r(r[3]), r[4]) for r in q("SELECT transaction_id, amount, status, fraud_score, model_version FROM transactions FINAL")},
            "predictions": {(r[0], r[1]): _r(r[2]) for r in q("SELECT transaction_id, model_version, fraud_score FROM predictions FINAL")},
            "daily_account_activity": {(r[0], str(r[1])): (r[2], str(r[3])) for r in q("SELECT account_id, activity_date, txn_count, total_amount FROM daily_account_activity FINAL")},
            "merchant_daily_stats": {(r[0], str(r[1])): (r[2], r[3]) for r in q("SELECT merchant_id, activity_date, txn_count, fraud_count FROM merchant_daily_stats FINAL")},
        }  # fmt: skip
    finally:
        c.close()


PAID_Q = "MATCH (a:Account)-[p:PAID]->(m:Merchant) RETURN p.transaction_id, a.id, m.id, p.amount, p.status, p.fraud_score"
USED_Q = "MATCH (a:Account)-[u:USED]->(d:Device) RETURN a.id, d.id, u.first_seen, u.last_seen"


def _bolt_graph_state(url: str) -> dict[str, Any]:
    """The graph as the neo4j driver reads it from a Bolt server (FalkorDB keeps times as epoch µs)."""
    from datetime import datetime, timedelta

    from neo4j import GraphDatabase

    from rayapp.urls import url_query

    def t(v: Any) -> Any:
        return datetime(1970, 1, 1) + timedelta(microseconds=v) if isinstance(v, int) else v

    base, _, _ = url.partition("?")
    with GraphDatabase.driver(base, auth=None, connection_timeout=2, connection_acquisition_timeout=2) as driver:
        with driver.session(database=url_query(url).get("database")) as session:
            def rows(q: str) -> list[list[Any]]:
                return session.execute_read(lambda tx: tx.run(q).values())

            paid, used = rows(PAID_Q), rows(USED_Q)
    return {"paid": {r[0]: (r[1], r[2], _r(r[3]), r[4], _r(r[5])) for r in paid}, "paid_count": len(paid),
            "used": {(r[0], r[1]): (t(r[2]), t(r[3])) for r in used}, "used_count": len(used)}  # fmt: skip


def graph_state(settings: Settings) -> dict[str, Any]:
    import ladybug

    from rayapp.urls import url_path

    url = store("graph").url(settings)
    if url.startswith("bolt://"):
        return _bolt_graph_state(url)
    db = ladybug.Database(url_path(url))
    conn = ladybug.Connection(db)

    def rows(q: str) -> list[list[Any]]:
        return ladybug_rows(conn, q)

    try:
        return {
            "paid": {r[0]: (r[1], r[2], _r(r[3]), r[4], _r(r[5])) for r in rows("MATCH (a:Account)-[p:PAID]->(m:Merchant) RETURN p.transaction_id, a.id, m.id, p.amount, p.status, p.fraud_score")},
            "paid_count": rows("MATCH ()-[p:PAID]->() RETURN count(p)")[0][0],
            "used": {(r[0], r[1]): (r[2], r[3]) for r in rows("MATCH (a:Account)-[u:USED]->(d:Device) RETURN a.id, d.id, u.first_seen, u.last_seen")},
            "used_count": rows("MATCH ()-[u:USED]->() RETURN count(u)")[0][0],
        }  # fmt: skip
    finally:
        conn.close()
        db.close()


def vector_state(settings: Settings) -> dict[str, Any]:
    import lancedb

    from rayapp.urls import url_path

    db = lancedb.connect(url_path(store("vector").url(settings)))
    merchants = db.open_table("merchants").to_arrow()
    txns = db.open_table("transactions").to_arrow()
    return {"merchants": merchants["id"].to_pylist(), "risky": txns["id"].to_pylist(), "dims": {len(v) for v in txns["vector"].to_pylist()}}


def assert_stores_match(settings: Settings) -> None:
    exp = expected(settings)
    pg = postgres_state(settings)
    for table in ("transactions", "predictions", "daily_account_activity", "merchant_daily_stats"):
        assert pg[table] == exp[table], f"postgres {table}"
    ch = clickhouse_state(settings)
    for table in ("transactions", "predictions", "daily_account_activity", "merchant_daily_stats"):
        assert ch[table] == exp[table], f"clickhouse {table}"
    g = graph_state(settings)
    assert g["paid_count"] == len(exp["paid"]) and g["paid"] == exp["paid"]
    assert g["used_count"] == len(exp["used"]) and g["used"] == exp["used"]
    v = vector_state(settings)
    assert sorted(v["merchants"]) == sorted(exp["merchants"])
    assert sorted(v["risky"]) == sorted(exp["risky"]) and v["dims"] <= {384}


def test_publish_exact_idempotent_and_incremental(lake: tuple[Path, Path], tmp_path: Path) -> None:
    module_data, later = lake
    data = tmp_path / "data"  # this test grows its lake: a copy, so the module's lake stays as every test found it
    shutil.copytree(module_data, data)
    settings, args = _settings(data, tmp_path / "stores")
    _run(publish_job, args)
    run = Ledger(Lake(settings)).last_run("publish")
    assert run is not None and run.status == "succeeded"
    assert run.counts["postgres.written"] > 0 and run.counts["graph.failed"] == 0
    assert_stores_match(settings)
    assert len(expected(settings)["risky"]) > 0

    _run(publish_job, args)  # nothing new: nothing written, nothing changed
    again = Ledger(Lake(settings)).last_run("publish")
    assert again is not None and again.run_id != run.run_id
    assert all(again.counts[f"{s}.written"] == 0 for s in ("postgres", "clickhouse", "graph", "vector"))
    assert_stores_match(settings)

    landing = tmp_path / "landing"  # the copy's own landing zone, holding the rest of the files: new transactions and
    shutil.copytree(later, landing)  # newer versions of old ones (the first two were ingested from the module's)
    _refresh_lake(["--data-dir", str(data), "--set", f"landing_uri={landing}"])
    _run(publish_job, args)
    inc = Ledger(Lake(settings)).last_run("publish")
    assert inc is not None
    total = len(expected(settings)["transactions"])
    assert 0 < inc.counts["rows_read"] < total  # only what changed was read
    assert_stores_match(settings)


def test_a_store_pointed_elsewhere_gets_everything_and_the_others_nothing(lake: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = lake
    settings, args = _settings(data, tmp_path / "stores")
    _run(publish_job, args)
    first = Ledger(Lake(settings)).last_run("publish")
    assert first is not None
    moved, moved_args = _settings(data, tmp_path / "stores", clickhouse_url=f"chdb://{tmp_path / 'ch-new'}")
    _run(publish_job, moved_args)
    run = Ledger(Lake(moved)).last_run("publish")
    assert run is not None and run.run_id != first.run_id
    assert run.counts["clickhouse.written"] == first.counts["clickhouse.written"]  # the whole history, to the new place
    assert [run.counts[f"{s}.written"] for s in ("postgres", "graph", "vector")] == [0, 0, 0]  # the others had it all
    assert run.counts["rows_read"] == first.counts["rows_read"]  # silver was read once, for the moved store
    assert clickhouse_state(moved) == clickhouse_state(settings)


def _writer_pids() -> list[int]:
    """Writer actors of this test session's Ray instance only (its raylet is a child of this process)."""
    import psutil

    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if " ".join(proc.cmdline()).startswith("ray::StoreWriter"):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return sorted(pids)


def _postgres_rows(settings: Settings) -> int:
    """Transactions PostgreSQL holds now (0 before the table exists): proof that writers are mid-stream."""
    import psycopg

    from rayapp.sinks.postgres import sqlalchemy_url

    try:
        with psycopg.connect(sqlalchemy_url(store("postgres").url(settings)).replace("postgresql+psycopg", "postgresql")) as c:
            return int(c.execute("SELECT count(*) FROM transactions").fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        return 0


def test_killed_writer_actors_lose_nothing(lake: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = lake
    settings, args = _settings(data, tmp_path / "stores", writer_batch_rows=1000, writer_pool_size=1)
    killed: list[int] = []

    def killer() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and len(killed) < 2:
            pids = [p for p in _writer_pids() if p not in killed]
            if len(pids) >= 4 and _postgres_rows(settings) > 0:  # every pool is up and rows are landing: kill two writers mid-stream
                for pid in pids[:2]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    except ProcessLookupError:
                        pass
            time.sleep(0.2)

    t = threading.Thread(target=killer)
    t.start()
    code = publish_job.entrypoint(args)
    t.join()
    assert len(killed) == 2
    assert code == 0
    run = Ledger(Lake(settings)).last_run("publish", status=("succeeded", "partial"))
    assert run is not None and run.status == "succeeded" and run.counts["dead_letters"] == 0
    assert_stores_match(settings)


def test_store_down_dead_letters_then_replay(lake: tuple[Path, Path], tmp_path: Path) -> None:
    from pinecone import Pinecone

    from tests.servers import start_reporting_port, stop

    data, _ = lake
    proc, port = start_reporting_port("tests.fakes.pinecone_server", "--api-key", "k", "--down")  # an outage: 503s
    host = f"http://127.0.0.1:{port}"
    settings, args = _settings(data, tmp_path / "stores", vector_url="pinecone://fraud", pinecone_api_key="k", pinecone_host=host,
                               writer_retries=2, writer_batch_rows=400)  # fmt: skip
    # The Pinecone data plane is down: publish still succeeds for the other stores, and says it was partial.
    assert publish_job.entrypoint(args) == 3
    ledger = Ledger(Lake(settings))
    run = ledger.last_run("publish", status=("partial",))
    assert run is not None and run.status == "partial"
    assert run.counts["vector.failed"] > 0 and run.counts["vector.written"] == 0 and run.counts["postgres.failed"] == 0
    pending = ledger.dead_letters(store="vector")
    assert pending and all(d.status == "pending" and d.run_id == run.run_id and d.error for d in pending)
    assert sum(d.rows for d in pending) == run.counts["vector.failed"]
    assert postgres_state(settings)["transactions"] == expected(settings)["transactions"]

    assert replay_job.entrypoint(args) == 3  # still down: nothing replayed, nothing lost, and the exit code says so
    again = ledger.last_run("replay_dlq", status=("partial",))
    assert again is not None and again.status == "partial"
    assert again.counts["replayed"] == 0 and again.counts["still_failing"] == len(pending)
    assert len(ledger.dead_letters(store="vector")) == len(pending)
    assert replay_job.entrypoint(args + ["--allow-partial"]) == 0  # the operator's opt-out

    urllib.request.urlopen(urllib.request.Request(f"{host}/_fake/up", method="POST"), timeout=10)  # the store is back
    try:
        assert replay_job.entrypoint(args + ["--store", "vector"]) == 0
        replayed = ledger.last_run("replay_dlq")
        assert replayed is not None and replayed.counts["replayed"] == len(pending) and replayed.counts["still_failing"] == 0
        assert ledger.dead_letters(store="vector") == []
        assert all(not os.path.exists(d.path) for d in pending)
        exp = expected(settings)
        index = Pinecone(api_key="k").Index(host=host)
        stats = index.describe_index_stats()
        assert stats.namespaces["merchants"].vector_count == len(exp["merchants"])
        assert stats.namespaces["transactions"].vector_count == len(exp["risky"])
        some = sorted(exp["risky"])[:5]
        assert set(index.fetch(ids=some, namespace="transactions").vectors) == set(some)
        _run(publish_job, args + ["--store", "vector"])  # the partial run's watermark holds: nothing to redo
        last = ledger.last_run("publish")
        assert last is not None and last.counts["vector.written"] == 0 and last.status == "succeeded"
    finally:
        stop(proc)


def test_backfill_graph_and_vectors_from_clickhouse(lake: tuple[Path, Path], tmp_path: Path) -> None:
    from jobs import clickhouse_to_graph, clickhouse_to_vectors

    data, _ = lake
    settings, args = _settings(data, tmp_path / "stores")
    _run(publish_job, args + ["--store", "clickhouse"])
    _run(clickhouse_to_graph, args)
    _run(clickhouse_to_vectors, args)
    exp = expected(settings)
    g = graph_state(settings)
    assert g["paid_count"] == len(exp["paid"]) and g["paid"] == exp["paid"]
    assert g["used"] == exp["used"]
    v = vector_state(settings)
    assert sorted(v["merchants"]) == sorted(exp["merchants"]) and sorted(v["risky"]) == sorted(exp["risky"])
    run = Ledger(Lake(settings)).last_run("clickhouse_to_vectors")
    assert run is not None and run.counts["vector.written"] == len(exp["merchants"]) + len(exp["risky"])


def test_killed_driver_then_rerun_is_exact(lake: tuple[Path, Path], tmp_path: Path) -> None:
    import ray

    from rayapp.lease import current

    data, _ = lake
    settings, args = _settings(data, tmp_path / "stores", writer_batch_rows=500, lease_ttl_s=3)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.publish", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (len(_writer_pids()) >= 4 and _postgres_rows(settings) > 0):
        time.sleep(0.1)  # wait for the event: every pool up and rows landing
    assert proc.poll() is None, "publish finished before it could be killed"
    proc.kill()
    proc.wait()
    deadline = time.time() + 60
    while _writer_pids() and time.time() < deadline:  # Ray reaps the dead driver's actors
        time.sleep(0.5)
    from rayapp.publish.changes import store_watermark

    ledger = Ledger(Lake(settings))
    assert all(store_watermark(Lake(settings), ledger, store(s)) is None for s in ("postgres", "clickhouse", "graph", "vector"))  # nothing moved

    held = current(Lake(settings), "publish")  # the dead driver's lease: the re-run waits for it to expire
    assert held is not None and not held.released
    time.sleep(max(0.0, held.expires_at() + 0.5 - time.time()))
    _run(publish_job, args)
    dead = ledger.get_run(held.run_id)
    assert dead is not None and dead.status == "abandoned"
    run = ledger.last_run("publish")
    assert run is not None and run.counts["dead_letters"] == 0
    assert_stores_match(settings)


def _grown_lake(lake: tuple[Path, Path], tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the module lake with the later files ingested too; returns its data dir and job args."""
    module_data, later = lake
    data = tmp_path / "data"
    shutil.copytree(module_data, data)
    landing = tmp_path / "landing"
    shutil.copytree(later, landing)
    args = ["--data-dir", str(data), "--set", f"landing_uri={landing}"]
    _refresh_lake(args)
    return data, args


def test_deletes_reach_every_store(lake: tuple[Path, Path], tmp_path: Path) -> None:
    data, lake_args = _grown_lake(lake, tmp_path)
    settings, args = _settings(data, tmp_path / "stores")
    _run(publish_job, args)
    assert_stores_match(settings)
    before = expected(settings)

    # Rebuild silver from the bronze of the first two files only: the later files' new transactions
    # leave silver (change-feed deletes), their dates' gold rows shrink or vanish, their predictions
    # are withdrawn, and the transactions they had updated go back to their earlier versions.
    ledger = Ledger(Lake(settings))
    first_ingest = sorted((r for r in ledger.runs() if r.job == "ingest" and r.status == "succeeded"), key=lambda r: r.started_at)[0]
    bronze_first = first_ingest.versions_written["bronze/transactions"]
    _run(b2s_job, lake_args + ["--full-refresh", "--as-of-version", str(bronze_first)])
    _run(gold_job, lake_args)
    _run(score_job, lake_args + ["--mode", "inline"])
    score = ledger.last_run("score_transactions")
    after = expected(settings)
    gone = set(before["transactions"]) - set(after["transactions"])
    assert gone and score is not None and score.counts["withdrawn"] == len({k for k in before["predictions"] if k[0] in gone})
    assert set(before["daily_account_activity"]) - set(after["daily_account_activity"])  # whole gold rows left too

    _run(publish_job, args)
    run = ledger.last_run("publish")
    assert run is not None and run.details["changes"]["postgres,clickhouse,graph,vector"]["deleted_transactions"] == len(gone)
    assert_stores_match(settings)  # every store: exactly the lake, deletes included
    _run(publish_job, args)  # a re-run sends nothing and resurrects nothing
    again = ledger.last_run("publish")
    assert again is not None and again.counts["rows_written"] == 0
    assert_stores_match(settings)


def _corrupt_stores(settings: Settings) -> dict[str, dict[str, int]]:
    """Change each store behind the project's back; returns the differences made, per store and view."""
    import clickhouse_connect
    import ladybug
    import lancedb
    import psycopg

    from rayapp.sinks.postgres import sqlalchemy_url
    from rayapp.urls import url_path

    exp = expected(settings)
    ids = sorted(exp["transactions"])
    with psycopg.connect(sqlalchemy_url(store("postgres").url(settings)).replace("postgresql+psycopg", "postgresql")) as c:
        c.execute("DELETE FROM transactions WHERE transaction_id = ANY(%s)", (ids[:3],))  # 3 missing
        c.execute("UPDATE transactions SET amount = amount + 1 WHERE transaction_id = %s", (ids[3],))  # 1 different
        c.execute("INSERT INTO transactions (transaction_id, status, _version) VALUES ('TX-STRAY', 'settled', now())")  # 1 extra
        c.execute("DELETE FROM predictions WHERE transaction_id = %s", (ids[4],))  # its predictions missing
        lost_predictions = sum(1 for k in exp["predictions"] if k[0] == ids[4])
    ch = clickhouse_connect.get_client(dsn=f"chdb://{url_path(store('clickhouse').url(settings))}")
    acc = sorted(exp["daily_account_activity"])
    ch.command(f"ALTER TABLE daily_account_activity DELETE WHERE account_id = '{acc[0][0]}' AND activity_date = '{acc[0][1]}'",
               settings={"mutations_sync": 1})  # 1 missing
    ch.command(f"INSERT INTO daily_account_activity (account_id, activity_date, txn_count, _version, is_deleted) "
               f"VALUES ('{acc[1][0]}', '{acc[1][1]}', 999, 10000000, 0)")  # 1 different: a newer version with a wrong count
    ch.close()
    db = ladybug.Database(url_path(store("graph").url(settings)))
    conn = ladybug.Connection(db)
    paid = sorted(exp["paid"])
    conn.execute(f"MATCH ()-[p:PAID {{transaction_id: '{paid[0]}'}}]->() DELETE p")  # a dropped relationship
    conn.execute(f"MATCH ()-[p:PAID {{transaction_id: '{paid[1]}'}}]->() SET p.amount = p.amount * 2")  # a changed value
    used = sorted(exp["used"])
    conn.execute(f"MATCH (a:Account {{id: '{used[0][0]}'}})-[u:USED]->(d:Device {{id: '{used[0][1]}'}}) DELETE u")  # a dropped USED
    conn.close()
    db.close()
    vec = lancedb.connect(url_path(store("vector").url(settings)))
    merchant = sorted(exp["merchants"])[0]
    vec.open_table("merchants").delete(f"id = '{merchant}'")  # a missing vector
    vec.open_table("transactions").update(where=f"id = '{sorted(exp['risky'])[0]}'", values={"fraud_score": 0.01})  # different
    return {
        "postgres": {"transactions": 5, "predictions": lost_predictions},
        "clickhouse": {"daily_account_activity": 2},
        "graph": {"paid": 2, "used": 1},  # a dropped PAID leaves USED as it was (a relationship of its own)
        "vector": {"merchant_vectors": 1, "transaction_vectors": 1},
    }


def test_reconcile_finds_each_corruption_and_repair_restores_parity(lake: tuple[Path, Path], tmp_path: Path) -> None:
    from jobs import reconcile as reconcile_job

    data, _ = lake
    settings, args = _settings(data, tmp_path / "stores", reconcile_range_rows=3000)  # several key ranges per view
    _run(publish_job, args)
    _run(reconcile_job, args)
    ledger = Ledger(Lake(settings))
    clean = ledger.last_run("reconcile")
    assert clean is not None and clean.counts["mismatches"] == 0
    assert clean.counts["postgres.checked"] == len(expected(settings)["transactions"]) + len(expected(settings)["predictions"]) + \
        len(expected(settings)["daily_account_activity"]) + len(expected(settings)["merchant_daily_stats"])

    made = _corrupt_stores(settings)
    assert reconcile_job.entrypoint(args) == 4  # differences remain: its own exit code
    found = ledger.last_run("reconcile", status=("mismatch",))
    assert found is not None
    for name, views in made.items():
        got = {v: d["total"] for v, d in found.details["stores"][name]["views"].items() if d["total"]}
        assert got == {v: n for v, n in views.items() if n}, name
    pg = found.details["stores"]["postgres"]["views"]["transactions"]
    assert (pg["missing"], pg["different"], pg["extra"]) == (3, 1, 1) and pg["examples"]["extra"] == ["TX-STRAY"]

    _run(reconcile_job, args + ["--repair"])
    repaired = ledger.last_run("reconcile")
    assert repaired is not None and repaired.counts["repaired"] == repaired.counts["mismatches"] == sum(sum(v.values()) for v in made.values())
    assert repaired.counts["remaining"] == 0
    assert_stores_match(settings)  # the independent expectation agrees
    _run(reconcile_job, args)
    final = ledger.last_run("reconcile")
    assert final is not None and final.counts["mismatches"] == 0


def test_graph_on_a_bolt_server_end_to_end(lake: tuple[Path, Path], tmp_path: Path, falkordb: str) -> None:
    """The neo4j path on a real Bolt/openCypher server (FalkorDB): publish with a writer killed
    mid-stream, a re-run that writes nothing, and reconcile finding and repairing a dropped payment."""
    from jobs import reconcile as reconcile_job

    data, _ = lake
    settings, args = _settings(data, tmp_path / "stores", graph_url=falkordb, graph_batch_rows=1000)
    graph_args = args + ["--store", "graph"]
    killed: list[int] = []
    from neo4j import GraphDatabase

    # One connection for the whole watch: FalkorDB stalls the next client's handshake after one leaves.
    watch = GraphDatabase.driver(falkordb.partition("?")[0], auth=None, connection_timeout=2, connection_acquisition_timeout=2)

    def paid_now() -> int:
        try:
            with watch.session(database="rayapp") as session:
                return int(session.execute_read(lambda tx: tx.run("MATCH ()-[p:PAID]->() RETURN count(p)").single()[0]))
        except Exception:  # noqa: BLE001 - the graph does not exist yet
            return 0

    def killer() -> None:  # kill one writer mid-stream: its batches are retried on a fresh actor
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            pids = _writer_pids()
            if pids and paid_now() > 0:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.2)

    t = threading.Thread(target=killer)
    t.start()
    try:
        _run(publish_job, graph_args)
    finally:
        t.join()
        watch.close()
    assert killed
    exp = expected(settings)
    g = graph_state(settings)
    assert g["paid_count"] == len(exp["paid"]) and g["paid"] == exp["paid"]
    assert g["used_count"] == len(exp["used"]) and g["used"] == exp["used"]
    _run(publish_job, graph_args)  # nothing new: nothing written
    run = Ledger(Lake(settings)).last_run("publish")
    assert run is not None and run.counts["graph.written"] == 0

    # Corruption behind the project's back, found and repaired by reconcile over Bolt.
    victim = sorted(exp["paid"])[0]
    with GraphDatabase.driver(falkordb.partition("?")[0], auth=None, connection_timeout=2, connection_acquisition_timeout=2) as driver, \
            driver.session(database="rayapp") as session:  # a stalled first handshake is retried after 2 s
        session.execute_write(lambda tx: tx.run("MATCH ()-[p:PAID {transaction_id: $id}]->() DELETE p", id=victim).consume())
    assert reconcile_job.entrypoint(args + ["--store", "graph"]) == 4
    found = Ledger(Lake(settings)).last_run("reconcile", status=("mismatch",))
    assert found is not None and found.details["stores"]["graph"]["views"]["paid"]["examples"] == {"missing": [victim]}
    _run(reconcile_job, args + ["--store", "graph", "--repair"])
    assert graph_state(settings)["paid"] == exp["paid"]


def test_graph_server_outage_dead_letters_then_replay(lake: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.servers import start_falkordb, stop

    data, _ = lake
    proc, port = start_falkordb(tmp_path / "falkordb")
    stop(proc)  # the server is down: every graph batch fails and waits in the dead-letter queue
    url = f"bolt://127.0.0.1:{port}?database=rayapp"
    settings, args = _settings(data, tmp_path / "stores", graph_url=url, writer_retries=2)
    assert publish_job.entrypoint(args + ["--store", "graph"]) == 3
    ledger = Ledger(Lake(settings))
    pending = ledger.dead_letters(store="graph")
    run = ledger.last_run("publish", status=("partial",))
    assert run is not None and pending and sum(d.rows for d in pending) == run.counts["graph.failed"] == len(expected(settings)["transactions"])
    proc, _ = start_falkordb(tmp_path / "falkordb-back", port=port)  # back, where its clients expect it
    try:
        _run(replay_job, args + ["--store", "graph"])
        assert ledger.dead_letters(store="graph") == []
        exp, g = expected(settings), graph_state(settings)
        assert g["paid"] == exp["paid"] and g["used"] == exp["used"]
    finally:
        stop(proc)


# ---- real servers: PostgreSQL 15 on every run; the others opt in (RAYAPP_IT_*, see the README) --------


def test_postgres_server_publish_repair_and_rerun(lake: tuple[Path, Path], tmp_path: Path, postgres_server: str) -> None:
    """The server path of the PostgreSQL store (a pool of writer actors, migrations under an advisory
    lock, COPY + upsert, tombstones) against a real server, reconciled and repaired."""
    import psycopg

    from jobs import reconcile as reconcile_job
    from tests.conftest import fresh_postgres_database

    data, _ = lake
    url = fresh_postgres_database(postgres_server, f"rayapp_it_{os.getpid()}")
    settings, args = _settings(data, tmp_path / "stores", postgres_url=url, writer_batch_rows=2000)
    pg_args = args + ["--store", "postgres"]
    _run(publish_job, pg_args)
    exp, pg = expected(settings), postgres_state(settings)
    for table in ("transactions", "predictions", "daily_account_activity", "merchant_daily_stats"):
        assert pg[table] == exp[table], table
    _run(publish_job, pg_args)
    run = Ledger(Lake(settings)).last_run("publish")
    assert run is not None and run.counts["postgres.written"] == 0
    with psycopg.connect(url) as c:
        c.execute("DELETE FROM transactions WHERE transaction_id = %s", (sorted(exp["transactions"])[0],))
    assert reconcile_job.entrypoint(args + ["--store", "postgres"]) == 4
    _run(reconcile_job, args + ["--store", "postgres", "--repair"])
    assert postgres_state(settings)["transactions"] == exp["transactions"]


def _opt_in(name: str) -> dict[str, str]:
    from tests.conftest import IT

    wanted = {"clickhouse": ["RAYAPP_IT_CLICKHOUSE_URL"], "neo4j": ["RAYAPP_IT_NEO4J_URL"],
              "pinecone": ["RAYAPP_IT_PINECONE_API_KEY", "RAYAPP_IT_PINECONE_INDEX"],
              "s3": ["RAYAPP_IT_S3_ENDPOINT", "RAYAPP_IT_S3_ACCESS_KEY_ID", "RAYAPP_IT_S3_SECRET_ACCESS_KEY", "RAYAPP_IT_S3_BUCKET"]}[name]  # fmt: skip
    missing = [k for k in wanted if not IT.get(k)]
    if missing:
        pytest.skip(f"opt-in: set {', '.join(missing)} (cluster/compose.yaml starts these servers)")
    return IT


@pytest.mark.parametrize("server", ["clickhouse", "neo4j", "pinecone"])
def test_opt_in_server_publish_and_reconcile(lake: tuple[Path, Path], tmp_path: Path, server: str) -> None:
    """publish, re-run and reconcile against a real ClickHouse, Neo4j or Pinecone (scratch ones: the
    test empties what it writes to first)."""
    from jobs import reconcile as reconcile_job

    it = _opt_in(server)
    data, _ = lake
    if server == "clickhouse":
        from rayapp.sinks.clickhouse import client_for

        c = client_for(it["RAYAPP_IT_CLICKHOUSE_URL"])
        c.command("DROP DATABASE IF EXISTS rayapp_it SYNC")
        c.command("CREATE DATABASE rayapp_it")
        c.close()
        extra, name = {"clickhouse_url": f"{it['RAYAPP_IT_CLICKHOUSE_URL'].rstrip('/')}/rayapp_it"}, "clickhouse"  # the server URL, no database
    elif server == "neo4j":
        from rayapp.sinks.graph_engines import Neo4jEngine

        url = it["RAYAPP_IT_NEO4J_URL"]
        engine = Neo4jEngine(url, ())
        with engine.driver.session(database=engine.database) as session:
            session.run("MATCH (n) DETACH DELETE n").consume()
        engine.close()
        extra, name = {"graph_url": url}, "graph"
    else:
        from pinecone import Pinecone

        index = Pinecone(api_key=it["RAYAPP_IT_PINECONE_API_KEY"]).Index(
            host=it.get("RAYAPP_IT_PINECONE_HOST") or Pinecone(api_key=it["RAYAPP_IT_PINECONE_API_KEY"]).describe_index(it["RAYAPP_IT_PINECONE_INDEX"]).host)
        for ns in ("merchants", "transactions", "merchants__tombstones", "transactions__tombstones"):
            try:
                index.delete(delete_all=True, namespace=ns)
            except Exception:  # noqa: BLE001 - a namespace that does not exist yet
                pass
        extra = {"vector_url": f"pinecone://{it['RAYAPP_IT_PINECONE_INDEX']}", "pinecone_api_key": it["RAYAPP_IT_PINECONE_API_KEY"],
                 **({"pinecone_host": it["RAYAPP_IT_PINECONE_HOST"]} if it.get("RAYAPP_IT_PINECONE_HOST") else {})}  # fmt: skip
        name = "vector"
    settings, args = _settings(data, tmp_path / "stores", **extra)
    _run(publish_job, args + ["--store", name])
    _run(reconcile_job, args + ["--store", name])
    check = Ledger(Lake(settings)).last_run("reconcile")
    assert check is not None and check.counts[f"{name}.mismatches"] == 0 and check.counts[f"{name}.checked"] > 0
    _run(publish_job, args + ["--store", name])
    run = Ledger(Lake(settings)).last_run("publish")
    assert run is not None and run.counts[f"{name}.written"] == 0


def test_opt_in_s3_lake_pipeline_and_reconcile(tmp_path: Path) -> None:
    """The whole pipeline on an S3 lake of a real object store (MinIO), ending in parity."""
    import uuid

    it = _opt_in("s3")
    lake_uri = f"s3://{it['RAYAPP_IT_S3_BUCKET']}/rayapp-it-{uuid.uuid4().hex[:8]}"
    sets = {"lake_uri": lake_uri, "s3_endpoint_url": it["RAYAPP_IT_S3_ENDPOINT"], "s3_access_key_id": it["RAYAPP_IT_S3_ACCESS_KEY_ID"],
            "s3_secret_access_key": it["RAYAPP_IT_S3_SECRET_ACCESS_KEY"], "s3_region": it.get("RAYAPP_IT_S3_REGION", "us-east-1")}  # fmt: skip
    settings, args = _settings(tmp_path / "data", tmp_path / "stores", **sets)
    from jobs import pipeline as pipeline_job

    _run(generate_job, args + ["--rows", "4000", "--files", "2"])
    _run(pipeline_job, args + ["--score-mode", "inline", "--verify"])
    check = Ledger(Lake(settings)).last_run("reconcile")
    assert check is not None and check.counts["mismatches"] == 0


def test_clickhouse_over_http_publish_reconcile_and_read_clickhouse_backfill(lake: tuple[Path, Path], tmp_path: Path,
                                                                             clickhouse_http: str, falkordb: str) -> None:  # fmt: skip
    """The store's server path (clickhouse-connect over HTTP, a pool of writer actors) and Ray Data's
    ``read_clickhouse`` backfill, against ClickHouse's HTTP interface over a real engine (chDB); the
    graph backfill lands on a Bolt server (FalkorDB)."""
    from jobs import clickhouse_to_graph, clickhouse_to_vectors
    from jobs import reconcile as reconcile_job

    data, _ = lake
    settings, args = _settings(data, tmp_path / "stores", clickhouse_url=clickhouse_http, graph_url=falkordb, writer_batch_rows=2000)
    _run(publish_job, args + ["--store", "clickhouse"])
    exp, ch = expected(settings), clickhouse_state(settings)
    for table in ("transactions", "predictions", "daily_account_activity", "merchant_daily_stats"):
        assert ch[table] == exp[table], table
    _run(reconcile_job, args + ["--store", "clickhouse"])
    check = Ledger(Lake(settings)).last_run("reconcile")
    assert check is not None and check.counts["clickhouse.mismatches"] == 0
    _run(clickhouse_to_graph, args)  # Ray Data's read_clickhouse: a server URL
    _run(clickhouse_to_vectors, args)
    g, v = graph_state(settings), vector_state(settings)
    assert g["paid"] == exp["paid"] and g["used"] == exp["used"]
    assert sorted(v["merchants"]) == sorted(exp["merchants"]) and sorted(v["risky"]) == sorted(exp["risky"])


def test_each_text_is_embedded_once(lake: tuple[Path, Path], tmp_path: Path) -> None:
    """The embedding cache: a republish embeds nothing and sends the same vectors; the cached vector
    is the model's for that text; another model is another key."""
    import lancedb
    import numpy as np

    from rayapp.catalog import EMBEDDING_CACHE
    from rayapp.model_store import load_embedder
    from rayapp.publish.embedding import EmbeddingCache, text_hashes
    from rayapp.urls import url_path

    module_data, _ = lake
    data = tmp_path / "data"
    shutil.copytree(module_data, data)
    shutil.rmtree(data / "lake" / "_cache", ignore_errors=True)  # a cold cache (other tests publish from the module's lake)
    settings, args = _settings(data, tmp_path / "stores")

    def vectors() -> dict[str, list[float]]:
        db = lancedb.connect(url_path(store("vector").url(settings)))
        out = {}
        for name in ("merchants", "transactions"):
            t = db.open_table(name).to_arrow()
            out.update(zip(t["id"].to_pylist(), t["vector"].to_pylist()))
        return out

    _run(publish_job, args + ["--store", "vector"])
    first = Ledger(Lake(settings)).last_run("publish")
    assert first is not None
    c = first.counts
    assert c["embed.requested"] == c["vector.written"] > 0 and 0 < c["embed.distinct"] <= c["embed.requested"]
    assert c["embed.embedded"] == c["embed.distinct"] and c["embed.cache_hits"] == 0  # a cold cache
    cache_rows = Lake(settings).read(EMBEDDING_CACHE)
    assert cache_rows.num_rows == c["embed.distinct"] and len(set(cache_rows["text_hash"].to_pylist())) == cache_rows.num_rows
    sent = vectors()

    _run(publish_job, args + ["--store", "vector", "--full"])  # everything again: every text is in the cache
    again = Ledger(Lake(settings)).last_run("publish")
    assert again is not None and again.counts["embed.embedded"] == 0 and again.counts["embed.cache_hits"] == c["embed.distinct"]
    assert again.details["embedding"]["hit_rate"] == 1.0
    assert Lake(settings).read(EMBEDDING_CACHE).num_rows == cache_rows.num_rows
    assert vectors() == sent

    # A cached vector is the model's vector for that text; another model never sees it.
    db = lancedb.connect(url_path(store("vector").url(settings)))
    merchant = db.open_table("merchants").to_arrow().slice(0, 1).to_pylist()[0]
    model = load_embedder()
    key = f"{model.name}|{model.dim}"
    (h,) = text_hashes([merchant["text"]])
    cached = EmbeddingCache(Lake(settings), key).lookup([h])[h]
    assert np.allclose(cached, model.embed([merchant["text"]])[0], atol=1e-5)
    assert EmbeddingCache(Lake(settings), f"{model.name}-v2|{model.dim}").lookup([h]) == {}
