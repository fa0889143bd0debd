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
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import Dataset
from rayapp.sinks.base import BatchOptions, SinkError, StoreSink, StoreSpec, conform, is_repair, split_deleted
from rayapp.sinks import graph_network
from rayapp.sinks.graph_engines import LadybugEngine, Neo4jEngine
from rayapp.sinks.graph_plan import (ACCOUNT_PAID, ENDPOINTS, PAID_HELD, TOMBSTONES_HELD, USED_HELD, GraphRows, exact_used, graph_rows,
                                     newest, not_older_than, plan_paid, plan_used)
from rayapp.sinks.views import HIGHEST, LOWEST, VIEWS
from rayapp.urls import url_path

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
RETURN id AS transaction_id, a.id AS account_id, m.id AS merchant_id, p.version AS version, p.device_id AS device_id"""
DELETE_PAID = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})-[p:PAID {transaction_id: r.transaction_id}]->(m:Merchant {id: r.merchant_id})
DELETE p"""
CREATE_PAID = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})
MATCH (m:Merchant {id: r.merchant_id})
CREATE (a)-[:PAID {transaction_id: r.transaction_id, amount: r.amount, event_time: r.event_time, status: r.status,
                   fraud_score: r.fraud_score, version: r.version, device_id: r.device_id}]->(m)"""
# On a server other writers may create the same payment between our read and our write: there it is
# a MERGE on the relationship pattern (one write query is atomic), properties set after.
MERGE_PAID = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})
MATCH (m:Merchant {id: r.merchant_id})
MERGE (a)-[p:PAID {transaction_id: r.transaction_id}]->(m)
SET p.amount = r.amount, p.event_time = r.event_time, p.status = r.status, p.fraud_score = r.fraud_score, p.version = r.version,
    p.device_id = r.device_id"""
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

# Deletes: a tombstone per deleted transaction (the version it left the lake at); USED ranges of the
# pairs that lost payments recomputed from the PAID relationships left; nodes left alone removed.
FIND_TOMBSTONES = """UNWIND $rows AS id
MATCH (t:PaidTombstone {transaction_id: id})
RETURN t.transaction_id AS transaction_id, t.version AS version"""
MERGE_TOMBSTONES = "UNWIND $rows AS r MERGE (t:PaidTombstone {transaction_id: r.transaction_id}) SET t.version = r.version"
DELETE_TOMBSTONES = "UNWIND $rows AS id MATCH (t:PaidTombstone {transaction_id: id}) DELETE t"
FIND_ACCOUNT_PAID = """UNWIND $rows AS id
MATCH (a:Account {id: id})-[p:PAID]->(m:Merchant)
RETURN a.id AS account_id, p.device_id AS device_id, p.event_time AS event_time"""
SET_USED = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})
MATCH (d:Device {id: r.device_id})
MERGE (a)-[u:USED]->(d)
SET u.first_seen = r.first_seen, u.last_seen = r.last_seen"""
DELETE_USED = "UNWIND $rows AS r MATCH (a:Account {id: r.account_id})-[u:USED]->(d:Device {id: r.device_id}) DELETE u"
DELETE_ORPHAN_ACCOUNTS = "UNWIND $rows AS id MATCH (n:Account {id: id}) WHERE NOT (n)--() DELETE n"
DELETE_ORPHAN_MERCHANTS = "UNWIND $rows AS id MATCH (n:Merchant {id: id}) WHERE NOT (n)--() DELETE n"
DELETE_ORPHAN_DEVICES = "UNWIND $rows AS id MATCH (n:Device {id: id}) WHERE NOT (n)--() DELETE n"
# What reconcile reads back, one key range at a time.
SCAN_PAID = """UNWIND $rows AS r
MATCH (a:Account)-[p:PAID]->(m:Merchant)
WHERE (r.lo IS NULL OR p.transaction_id >= r.lo) AND (r.hi IS NULL OR p.transaction_id < r.hi)
RETURN p.transaction_id AS transaction_id, a.id AS account_id, m.id AS merchant_id, p.amount AS amount, p.status AS status,
       p.fraud_score AS fraud_score, p.event_time AS event_time"""
SCAN_USED = """UNWIND $rows AS r
MATCH (a:Account)-[u:USED]->(d:Device)
WHERE (r.lo IS NULL OR a.id >= r.lo) AND (r.hi IS NULL OR a.id < r.hi)
RETURN a.id AS account_id, d.id AS device_id, u.first_seen AS first_seen, u.last_seen AS last_seen"""
# Concurrent writers (a Neo4j server) take the write locks of the accounts a block touches first.
LOCK_ACCOUNTS = "UNWIND $rows AS id MATCH (a:Account {id: id}) SET a._lock = true REMOVE a._lock"

LADYBUG_SCHEMA = (
    "CREATE NODE TABLE IF NOT EXISTS Account(id STRING, PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Merchant(id STRING, name STRING, category STRING, PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Device(id STRING, PRIMARY KEY(id))",
    "CREATE REL TABLE IF NOT EXISTS PAID(FROM Account TO Merchant, transaction_id STRING, amount DOUBLE, "
    "event_time TIMESTAMP, status STRING, fraud_score DOUBLE, version TIMESTAMP, device_id STRING)",
    "ALTER TABLE PAID ADD IF NOT EXISTS device_id STRING",  # graphs made before deletes
    "CREATE NODE TABLE IF NOT EXISTS PaidTombstone(transaction_id STRING, version TIMESTAMP, PRIMARY KEY(transaction_id))",
    "CREATE REL TABLE IF NOT EXISTS USED(FROM Account TO Device, first_seen TIMESTAMP, last_seen TIMESTAMP)",
)
NEO4J_SCHEMA = (
    "CREATE CONSTRAINT account_id IF NOT EXISTS FOR (n:Account) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT merchant_id IF NOT EXISTS FOR (n:Merchant) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT device_id IF NOT EXISTS FOR (n:Device) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT paid_tombstone_id IF NOT EXISTS FOR (n:PaidTombstone) REQUIRE n.transaction_id IS UNIQUE",
    "CREATE INDEX paid_transaction_id IF NOT EXISTS FOR ()-[r:PAID]-() ON (r.transaction_id)",
)
#: What the schema means on a server without Neo4j's constraint DDL (FalkorDB): exact-match indexes
#: (FalkorDB runs one write query at a time per graph, so MERGE cannot create a key twice).
INDEXES = (("Account", "id"), ("Merchant", "id"), ("Device", "id"), ("PaidTombstone", "transaction_id"))
COUNTS = {
    "Account": "MATCH (n:Account) RETURN count(n)",
    "Merchant": "MATCH (n:Merchant) RETURN count(n)",
    "Device": "MATCH (n:Device) RETURN count(n)",
    "PAID": "MATCH ()-[r:PAID]->() RETURN count(r)",
    "USED": "MATCH ()-[r:USED]->() RETURN count(r)",
}


def _lock(tx: Any, rows: pa.Table) -> pa.Table:
    """What the graph holds for the block's transaction ids (``PAID_HELD``), read under the locks of
    every account involved where the server takes locks (Neo4j): two writers holding the same
    transaction serialise on its accounts. (FalkorDB runs one write query at a time; there the
    MERGE of ``MERGE_PAID`` keeps a payment single.)"""
    ids = rows["transaction_id"].unique().to_pylist()
    held = tx.table(FIND_PAID, ids, PAID_HELD)
    if not tx.locks:
        return held
    locked: set[str] = set()
    while True:
        wanted = {a for a in pc.unique(pa.chunked_array([rows["account_id"], held["account_id"]], pa.string())).to_pylist() if a is not None}
        if wanted <= locked:
            return held
        tx.run(LOCK_ACCOUNTS, sorted(wanted - locked))
        locked |= wanted
        held = tx.table(FIND_PAID, ids, PAID_HELD)  # re-read: a writer may have moved one before we locked


def write_graph(tx: Any, rows: GraphRows, gone: pa.Table, repair: bool = False) -> None:
    """Every statement for one block, in order (nodes before relationships), on ``tx``: a
    transaction of either backend, with ``run(query, rows)``, ``table(query, rows, schema)``,
    ``records(table)``, ``concurrent`` (whether other writers run beside it: a server) and ``locks``
    (whether it takes write locks: Neo4j).

    ``gone``: tombstones (transaction_id, account_id, device_id, version). A tombstone removes the
    older PAID relationship and is kept (``PaidTombstone``) so that an older version arriving later
    is skipped; ``repair`` first forgets what the graph holds for the block's ids."""
    tx.run(MERGE_ACCOUNTS, rows.accounts["id"].to_pylist())
    tx.run(MERGE_MERCHANTS, tx.records(rows.merchants))
    tx.run(MERGE_DEVICES, rows.devices["id"].to_pylist())
    everything = pa.concat_tables([rows.paid.select(["transaction_id", "account_id"]), gone.select(["transaction_id", "account_id"])])
    if everything.num_rows == 0:
        return
    held = _lock(tx, everything)
    ids = everything["transaction_id"].unique().to_pylist()
    removed = [held.slice(0, 0)]
    paid = rows.paid
    if repair:
        tx.run(DELETE_PAID, tx.records(held.select(ENDPOINTS)))
        tx.run(DELETE_TOMBSTONES, ids)
        removed.append(held)
        held = held.slice(0, 0)
    else:
        marks = tx.table(FIND_TOMBSTONES, ids, TOMBSTONES_HELD)
        if gone.num_rows:
            latest = newest(gone.select(["transaction_id", "version"]))
            fresh = latest.filter(pc.invert(not_older_than(latest, marks, strictly=False)))
            tx.run(MERGE_TOMBSTONES, tx.records(fresh))
            dead = held.filter(not_older_than(held, latest, strictly=True))  # held versions older than the tombstone
            tx.run(DELETE_PAID, tx.records(dead.select(ENDPOINTS)))
            removed.append(dead)
            held = held.filter(pc.invert(pc.is_in(held["transaction_id"], dead["transaction_id"])))
            marks = pa.concat_tables([marks, fresh.cast(TOMBSTONES_HELD)])
        paid = paid.filter(pc.invert(not_older_than(paid, marks, strictly=False)))  # deleted at a version this new or newer
    if paid.num_rows:
        to_delete, to_create = plan_paid(paid, held)
        tx.run(DELETE_PAID, tx.records(to_delete))
        tx.run(MERGE_PAID if tx.concurrent else CREATE_PAID, tx.records(to_create))
        removed.append(held.filter(pc.is_in(held["transaction_id"], to_delete["transaction_id"])))
    if rows.used.num_rows:
        held_used = tx.table(FIND_USED, rows.used["account_id"].unique().to_pylist(), USED_HELD)
        tx.run(MERGE_USED, tx.records(plan_used(rows.used, held_used)))
    _after_removals(tx, pa.concat_tables(removed), gone, rows if repair else None)


def _after_removals(tx: Any, removed: pa.Table, gone: pa.Table, repaired: GraphRows | None) -> None:
    """USED ranges of the pairs that lost payments, recomputed exactly, and the accounts, merchants
    and devices left with no relationship removed (with ``repaired``: every pair of its accounts)."""
    pairs = pa.concat_tables([removed.select(["account_id", "device_id"]), gone.select(["account_id", "device_id"]).cast(removed.select(["account_id", "device_id"]).schema)])
    accounts = pairs["account_id"]
    if repaired is not None:
        held_used = tx.table(FIND_USED, repaired.accounts["id"].to_pylist(), USED_HELD).select(["account_id", "device_id"])
        pairs = pa.concat_tables([pairs, held_used, repaired.used.select(["account_id", "device_id"])])
    pairs = pairs.filter(pc.and_(pc.is_valid(pairs["account_id"]), pc.is_valid(pairs["device_id"])))
    if pairs.num_rows:
        paid = tx.table(FIND_ACCOUNT_PAID, pc.unique(pairs["account_id"]).to_pylist(), ACCOUNT_PAID)
        to_set, to_delete = exact_used(pairs, paid)
        tx.run(SET_USED, tx.records(to_set))
        tx.run(DELETE_USED, tx.records(to_delete))
    for query, values in ((DELETE_ORPHAN_ACCOUNTS, accounts), (DELETE_ORPHAN_MERCHANTS, removed["merchant_id"]),
                          (DELETE_ORPHAN_DEVICES, pairs["device_id"])):  # fmt: skip
        ids = [v for v in pc.unique(values).to_pylist() if v is not None]
        tx.run(query, ids)


class GraphSink(StoreSink[BatchOptions]):
    """Accounts, merchants and devices as nodes; payments and device use as relationships."""

    datasets = (Dataset.TRANSACTIONS,)
    _backend: Any = None

    def _open(self) -> Any:
        if self._backend is None:
            self._backend = LadybugEngine(url_path(self.url), LADYBUG_SCHEMA) if urlsplit(self.url).scheme == "ladybug" else Neo4jEngine(self.url, NEO4J_SCHEMA, INDEXES)
        return self._backend

    def on_write_start(self) -> None:
        self._open().setup()

    def write(self, dataset: Dataset, block: pa.Table) -> int:
        if dataset not in self.datasets:
            raise SinkError(f"graph does not take {dataset.value}")
        if self._backend is None:
            self.on_write_start()
        block = conform(dataset, block)
        repair = is_repair(block)
        size = self.options.batch_rows
        for start in range(0, block.num_rows, size):
            live, gone = split_deleted(block.slice(start, size))
            rows = graph_rows(live)
            dead = gone.select(["transaction_id", "account_id", "device_id", "_version"]).rename_columns(
                ["transaction_id", "account_id", "device_id", "version"])
            self._backend.write(lambda tx, rows=rows, dead=dead: write_graph(tx, rows, dead, repair))
        return block.num_rows

    def scan(self, view: str, lo: str, hi: str) -> pa.Table:
        query = {"paid": SCAN_PAID, "used": SCAN_USED}[view]
        # Open ends as nulls: FalkorDB's index range scan finds nothing below a non-BMP bound.
        bounds = {"lo": None if lo == LOWEST else lo, "hi": None if hi == HIGHEST else hi}
        return self._open().table(query, [bounds], VIEWS[view].schema)

    def network(self, account_id: str, depth: int, limit: int) -> dict[str, Any] | None:
        """Read side: the accounts linked to ``account_id`` through shared devices and merchants
        (:func:`rayapp.sinks.graph_network.network`). Ladybug is opened read-only for the call, so a
        writer can take the database between reads.

        Raises:
            SinkError: the graph holds nothing yet, or an embedded graph is being written right now.
        """
        if self._backend is not None or urlsplit(self.url).scheme != "ladybug":
            return graph_network.network(self._open(), account_id, depth, limit)
        if not os.path.exists(url_path(self.url)):
            raise SinkError("the graph holds nothing yet: run `rayapp run publish`")
        try:
            engine = LadybugEngine(url_path(self.url), LADYBUG_SCHEMA, read_only=True)
        except RuntimeError as exc:  # the writer actor holds the database
            raise SinkError(f"the embedded graph is being written; try again shortly ({exc})", transient=True) from None
        try:
            return graph_network.network(engine, account_id, depth, limit)
        finally:
            engine.close()

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


STORE = StoreSpec(
    name="graph", setting="graph_url", schemes=("ladybug", "neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"),
    embedded_schemes=("ladybug",), default_dir="graph", datasets=GraphSink.datasets, sink=GraphSink, views=("paid", "used"),
    # Transactions per graph write transaction come from RAYAPP_GRAPH_BATCH_ROWS: Ladybug's commit
    # cost grows with the graph, so it takes fewer, larger writes than the other stores.
    options=partial(BatchOptions.from_settings, field="graph_batch_rows"), order=30,
)  # fmt: skip
