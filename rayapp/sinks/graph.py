"""Graph sink: ``ladybug:///path`` (embedded Ladybug, a Kùzu fork; one process at a time) or
``neo4j://`` / ``bolt://`` (the official driver). Both run the same batched ``UNWIND $rows …``
Cypher below, each block of rows in one write transaction; only schema setup differs (Ladybug
needs node/rel tables, Neo4j gets uniqueness constraints).

Graph: ``(Account)-[:PAID {transaction_id, amount, event_time, status, fraud_score}]->(Merchant)``
and ``(Account)-[:USED {first_seen, last_seen}]->(Device)``. There is one PAID relationship per
transaction, only replaced by a newer version of it (also when its account or merchant changed);
USED widens its time range.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.sinks.base import Dataset, SinkError, StoreSink, conform, to_records, url_path, url_query
from rayapp.transforms.serving import UTC_US, first_of_runs

logger = logging.getLogger(__name__)

# Key-only nodes take a list of ids: Ladybug looks a MERGE key up in its primary-key index when
# it is a plain value, but scans when it is a struct field (`r.id`), ~40x slower at 40k nodes.
MERGE_ACCOUNTS = "UNWIND $rows AS id MERGE (a:Account {id: id})"
MERGE_DEVICES = "UNWIND $rows AS id MERGE (d:Device {id: id})"
MERGE_MERCHANTS = "UNWIND $rows AS r MERGE (m:Merchant {id: r.id}) SET m.name = r.name, m.category = r.category"
# A payment is keyed by its transaction id wherever it hangs: FIND_PAID returns what the graph holds
# for a batch's ids, `plan_paid` decides which rows are new or newer (or moved to other endpoints),
# and those go through DELETE_PAID (the rels they replace) and CREATE_PAID. Equal or older versions
# are skipped, so a re-run writes nothing. (A `MERGE … SET` of the five properties measured 1.5–2.5x
# the cost on Ladybug: setting properties on a relationship is its slowest write.)
# Separate MATCH clauses (not `MATCH (a), (m)`): Ladybug plans the comma form as a cross product.
FIND_PAID = """UNWIND $rows AS id
MATCH (a:Account)-[p:PAID {transaction_id: id}]->(m:Merchant)
RETURN id AS transaction_id, a.id AS account_id, m.id AS merchant_id, p.version AS version"""
DELETE_PAID = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})-[p:PAID {transaction_id: r.transaction_id}]->(m:Merchant {id: r.merchant_id})
DELETE p"""
CREATE_PAID = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})
MATCH (m:Merchant {id: r.merchant_id})
CREATE (a)-[:PAID {transaction_id: r.transaction_id, amount: r.amount, event_time: r.event_time, status: r.status,
                   fraud_score: r.fraud_score, version: r.version}]->(m)"""
# USED keeps MERGE (concurrent writers on Neo4j widen one relationship, never create two), but only
# for pairs that change the graph: FIND_USED returns the ranges held for a batch's accounts and
# `plan_used` drops the rows inside them, which after the first batches is most of them.
FIND_USED = """UNWIND $rows AS id
MATCH (a:Account {id: id})-[u:USED]->(d:Device)
RETURN a.id AS account_id, d.id AS device_id, u.first_seen AS first_seen, u.last_seen AS last_seen"""
MERGE_USED = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})
MATCH (d:Device {id: r.device_id})
MERGE (a)-[u:USED]->(d)
ON CREATE SET u.first_seen = r.first_seen, u.last_seen = r.last_seen
ON MATCH SET u.first_seen = CASE WHEN r.first_seen < u.first_seen THEN r.first_seen ELSE u.first_seen END,
             u.last_seen = CASE WHEN r.last_seen > u.last_seen THEN r.last_seen ELSE u.last_seen END"""

LADYBUG_SCHEMA = (
    "CREATE NODE TABLE IF NOT EXISTS Account(id STRING, PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Merchant(id STRING, name STRING, category STRING, PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Device(id STRING, PRIMARY KEY(id))",
    "CREATE REL TABLE IF NOT EXISTS PAID(FROM Account TO Merchant, transaction_id STRING, amount DOUBLE, "
    "event_time TIMESTAMP, status STRING, fraud_score DOUBLE, version TIMESTAMP)",
    "CREATE REL TABLE IF NOT EXISTS USED(FROM Account TO Device, first_seen TIMESTAMP, last_seen TIMESTAMP)",
)
NEO4J_SCHEMA = (
    "CREATE CONSTRAINT account_id IF NOT EXISTS FOR (n:Account) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT merchant_id IF NOT EXISTS FOR (n:Merchant) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT device_id IF NOT EXISTS FOR (n:Device) REQUIRE n.id IS UNIQUE",
    "CREATE INDEX paid_transaction_id IF NOT EXISTS FOR ()-[r:PAID]-() ON (r.transaction_id)",
)
COUNTS = {
    "Account": "MATCH (n:Account) RETURN count(n)",
    "Merchant": "MATCH (n:Merchant) RETURN count(n)",
    "Device": "MATCH (n:Device) RETURN count(n)",
    "PAID": "MATCH ()-[r:PAID]->() RETURN count(r)",
    "USED": "MATCH ()-[r:USED]->() RETURN count(r)",
}


@dataclass(frozen=True)
class GraphRows:
    """What one block of transactions puts in the graph."""

    accounts: pa.Table  # id
    merchants: pa.Table  # id, name, category (newest version's)
    devices: pa.Table  # id
    paid: pa.Table  # transaction_id, account_id, merchant_id, amount, event_time, status, fraud_score, version
    used: pa.Table  # account_id, device_id, first_seen, last_seen


def graph_rows(block: pa.Table) -> GraphRows:
    t = block.filter(pc.and_(pc.is_valid(block["account_id"]), pc.is_valid(block["merchant_id"])))
    latest = t.select(["merchant_id", "merchant_name", "merchant_category", "_version"]).sort_by(
        [("merchant_id", "ascending"), ("_version", "descending")]
    )
    first = first_of_runs(latest["merchant_id"])
    with_device = t.filter(pc.is_valid(t["device_id"]))
    used = with_device.group_by(["account_id", "device_id"]).aggregate([("event_time", "min"), ("event_time", "max")])
    used = used.rename_columns(["account_id", "device_id", "first_seen", "last_seen"])
    return GraphRows(
        accounts=pa.table({"id": pc.unique(t["account_id"])}),
        merchants=pa.table({"id": latest["merchant_id"].filter(first), "name": latest["merchant_name"].filter(first),
                            "category": latest["merchant_category"].filter(first)}),
        devices=pa.table({"id": pc.unique(with_device["device_id"])}),
        paid=pa.table({"transaction_id": t["transaction_id"], "account_id": t["account_id"], "merchant_id": t["merchant_id"],
                       "amount": t["amount"].cast(pa.float64()), "event_time": t["event_time"], "status": t["status"],
                       "fraud_score": t["fraud_score"], "version": t["_version"]}),
        used=used.filter(pc.is_valid(used["first_seen"])),
    )  # fmt: skip


PAID_HELD = pa.schema([("transaction_id", pa.string()), ("account_id", pa.string()), ("merchant_id", pa.string()), ("version", UTC_US)])
USED_HELD = pa.schema([("account_id", pa.string()), ("device_id", pa.string()), ("first_seen", UTC_US), ("last_seen", UTC_US)])
ENDPOINTS = ["transaction_id", "account_id", "merchant_id"]
# Rows per statement within a write transaction: Ladybug's parameter binding costs ~1.25x more per
# row for a 100k-row list than for 10k-row ones, and 10k is Neo4j's usual UNWIND batch too.
STATEMENT_ROWS = 10_000


def _chunks(rows: list[Any]) -> list[list[Any]]:
    return [rows[i : i + STATEMENT_ROWS] for i in range(0, len(rows), STATEMENT_ROWS)]


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


def write_graph(tx: Any, rows: GraphRows) -> None:
    """Every statement for one block, in order (nodes before relationships), on ``tx``: a
    transaction of either backend, with ``run(query, rows)``, ``table(query, rows, schema)`` and
    ``records(table)`` (Arrow rows as that backend's parameter values)."""
    tx.run(MERGE_ACCOUNTS, rows.accounts["id"].to_pylist())
    tx.run(MERGE_MERCHANTS, tx.records(rows.merchants))
    tx.run(MERGE_DEVICES, rows.devices["id"].to_pylist())
    if rows.paid.num_rows:
        held = tx.table(FIND_PAID, rows.paid["transaction_id"].to_pylist(), PAID_HELD)
        to_delete, to_create = plan_paid(rows.paid, held)
        tx.run(DELETE_PAID, tx.records(to_delete))
        tx.run(CREATE_PAID, tx.records(to_create))
    if rows.used.num_rows:
        held = tx.table(FIND_USED, rows.used["account_id"].unique().to_pylist(), USED_HELD)
        tx.run(MERGE_USED, tx.records(plan_used(rows.used, held)))


def _naive_utc(table: pa.Table) -> pa.Table:
    fields = [pa.field(f.name, pa.timestamp(f.type.unit)) if pa.types.is_timestamp(f.type) and f.type.tz else f for f in table.schema]
    return table.cast(pa.schema(fields))


class _Ladybug:
    def __init__(self, path: str) -> None:
        import ladybug

        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.db = ladybug.Database(path)
        self.conn = ladybug.Connection(self.db)
        self.prepared: dict[str, Any] = {}

    def setup(self) -> None:
        for q in LADYBUG_SCHEMA:
            self.conn.execute(q)

    def _execute(self, query: str, rows: list[Any]) -> Any:
        # A statement prepared once: `execute(text, params)` re-derives a cache key from every
        # parameter value and re-plans, which doubles the cost of a 50k-row batch.
        ps = self.prepared.get(query)
        if ps is None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ps = self.prepared[query] = self.conn.prepare(query)
        return self.conn.execute(ps, {"rows": rows})

    def run(self, query: str, rows: list[Any]) -> None:
        for chunk in _chunks(rows):
            self._execute(query, chunk)

    def table(self, query: str, rows: list[Any], schema: pa.Schema) -> pa.Table:
        # One statement however many rows: Ladybug answers a lookup by relationship property with
        # one scan of the relationship table joined to all the ids. TIMESTAMPs come back naive (UTC).
        if not rows:
            return schema.empty_table()
        return self._execute(query, rows).get_as_arrow().cast(_naive_utc(schema.empty_table()).schema).cast(schema)

    @staticmethod
    def records(table: pa.Table) -> list[dict[str, Any]]:
        # Naive UTC datetimes: what a TIMESTAMP holds, and ~3x cheaper to build than aware ones.
        return to_records(_naive_utc(table))

    def write(self, fn: Callable[[Any], None]) -> None:
        """``fn(self)`` in one write transaction: a block lands whole or not at all."""
        self.conn.execute("BEGIN TRANSACTION")
        try:
            fn(self)
        except BaseException:
            try:
                self.conn.execute("ROLLBACK")
            except RuntimeError:  # a failed statement has already rolled the transaction back
                pass
            raise
        self.conn.execute("COMMIT")

    def scalar(self, query: str) -> int:
        return int(self.conn.execute(query).get_next()[0])

    def close(self) -> None:
        self.prepared.clear()
        self.conn.close()
        self.db.close()


class _Neo4j:
    def __init__(self, url: str) -> None:
        from neo4j import GraphDatabase

        parts = urlsplit(url)
        auth = (parts.username or "neo4j", parts.password or "") if parts.username else None
        host = parts.hostname or "localhost"
        netloc = f"{host}:{parts.port}" if parts.port else host
        self.database = url_query(url).get("database") or (parts.path.strip("/") or None)
        self.driver = GraphDatabase.driver(urlunsplit((parts.scheme, netloc, "", "", "")), auth=auth)

    def setup(self) -> None:
        self.driver.verify_connectivity()
        with self.driver.session(database=self.database) as session:
            for q in NEO4J_SCHEMA:
                session.run(q).consume()

    def write(self, fn: Callable[[Any], None]) -> None:
        # A managed write transaction: the driver retries the whole function on transient errors
        # and leader changes (it re-reads what the graph holds, so a retry decides afresh).
        with self.driver.session(database=self.database) as session:
            session.execute_write(lambda tx: fn(_Neo4jTx(tx)))

    def scalar(self, query: str) -> int:
        with self.driver.session(database=self.database) as session:
            return int(session.run(query).single()[0])

    def close(self) -> None:
        self.driver.close()


def _table(values: list[list[Any]], schema: pa.Schema) -> pa.Table:
    """Neo4j result rows as Arrow (temporal values as Python ones; naive datetimes are UTC)."""
    cols: list[list[Any]] = [[] for _ in schema]
    for row in values:
        for i, v in enumerate(row):
            if hasattr(v, "to_native"):
                v = v.to_native()
            if isinstance(v, datetime) and v.tzinfo is None:
                v = v.replace(tzinfo=timezone.utc)
            cols[i].append(v)
    return pa.table(cols, schema=schema)


class _Neo4jTx:
    def __init__(self, tx: Any) -> None:
        self.tx = tx

    def run(self, query: str, rows: list[Any]) -> None:
        for chunk in _chunks(rows):
            self.tx.run(query, rows=chunk).consume()

    def table(self, query: str, rows: list[Any], schema: pa.Schema) -> pa.Table:
        values = [v for chunk in _chunks(rows) for v in self.tx.run(query, rows=chunk).values()]
        return _table(values, schema)

    @staticmethod
    def records(table: pa.Table) -> list[dict[str, Any]]:
        return to_records(table)


class GraphSink(StoreSink):
    """Accounts, merchants and devices as nodes; payments and device use as relationships."""

    store: ClassVar[str] = "graph"
    datasets: ClassVar[tuple[Dataset, ...]] = (Dataset.TRANSACTIONS,)

    _backend: Any = None

    @property
    def single_writer(self) -> bool:  # type: ignore[override]
        return urlsplit(self.url).scheme == "ladybug"

    def _open(self) -> Any:
        if self._backend is None:
            self._backend = _Ladybug(url_path(self.url)) if urlsplit(self.url).scheme == "ladybug" else _Neo4j(self.url)
        return self._backend

    def on_write_start(self) -> None:
        self._open().setup()

    def write(self, dataset: Dataset, block: pa.Table) -> int:
        if dataset not in self.datasets:
            raise SinkError(f"graph does not take {dataset.value}")
        if self._backend is None:
            self.on_write_start()
        block = conform(dataset, block)
        size = self.options.batch_rows
        for start in range(0, block.num_rows, size):
            rows = graph_rows(block.slice(start, size))
            self._backend.write(lambda tx, rows=rows: write_graph(tx, rows))
        return block.num_rows

    def counts(self) -> dict[str, int]:
        backend = self._open()
        return {name: backend.scalar(q) for name, q in COUNTS.items()}

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def example_query(self) -> str:
        q = "MATCH (a:Account)-[p:PAID]->(m:Merchant) WHERE p.fraud_score > 0.9 RETURN a.id, m.name, p.amount, p.fraud_score LIMIT 5"
        if urlsplit(self.url).scheme == "ladybug":
            return f"python -c \"import ladybug as lb; print(lb.Connection(lb.Database('{url_path(self.url)}')).execute('{q}').get_as_df())\""
        return f"cypher-shell -a '{self.display_url}' \"{q}\""
