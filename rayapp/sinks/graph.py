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
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import UTC_US, Dataset
from rayapp.sinks.base import BatchOptions, SinkError, StoreSink, StoreSpec, conform
from rayapp.sinks.graph_engines import LadybugEngine, Neo4jEngine
from rayapp.transforms.serving import first_of_runs
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


class GraphSink(StoreSink[BatchOptions]):
    """Accounts, merchants and devices as nodes; payments and device use as relationships."""

    datasets = (Dataset.TRANSACTIONS,)
    _backend: Any = None

    def _open(self) -> Any:
        if self._backend is None:
            self._backend = LadybugEngine(url_path(self.url), LADYBUG_SCHEMA) if urlsplit(self.url).scheme == "ladybug" else Neo4jEngine(self.url, NEO4J_SCHEMA)
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


STORE = StoreSpec(
    name="graph", setting="graph_url", schemes=("ladybug", "neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"),
    embedded_schemes=("ladybug",), default_dir="graph", datasets=GraphSink.datasets, sink=GraphSink,
    # Transactions per graph write transaction come from RAYAPP_GRAPH_BATCH_ROWS: Ladybug's commit
    # cost grows with the graph, so it takes fewer, larger writes than the other stores.
    options=partial(BatchOptions.from_settings, field="graph_batch_rows"), order=30,
)  # fmt: skip
