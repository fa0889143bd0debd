"""Graph sink: ``ladybug:///path`` (embedded Ladybug, a Kùzu fork; one process at a time) or
``neo4j://`` / ``bolt://`` (the official driver). Both run the same batched ``UNWIND $rows … MERGE``
Cypher below; only schema setup differs (Ladybug needs node/rel tables, Neo4j gets
uniqueness constraints).

Graph: ``(Account)-[:PAID {transaction_id, amount, event_time, status, fraud_score}]->(Merchant)``
and ``(Account)-[:USED {first_seen, last_seen}]->(Device)``. A PAID relationship is only
overwritten by a newer version of its transaction; USED widens its time range.
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.sinks.base import Dataset, SinkError, StoreSink, conform, to_records, url_path, url_query
from rayapp.transforms.serving import first_of_runs

logger = logging.getLogger(__name__)

# Key-only nodes take a list of ids: Ladybug looks a MERGE key up in its primary-key index when
# it is a plain value, but scans when it is a struct field (`r.id`), ~40x slower at 40k nodes.
MERGE_ACCOUNTS = "UNWIND $rows AS id MERGE (a:Account {id: id})"
MERGE_DEVICES = "UNWIND $rows AS id MERGE (d:Device {id: id})"
SCALAR_ROWS = (MERGE_ACCOUNTS, MERGE_DEVICES)
MERGE_MERCHANTS = "UNWIND $rows AS r MERGE (m:Merchant {id: r.id}) SET m.name = r.name, m.category = r.category"
# Separate MATCH clauses (not `MATCH (a), (m)`): Ladybug plans the comma form as a cross product.
MERGE_PAID = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})
MATCH (m:Merchant {id: r.merchant_id})
MERGE (a)-[p:PAID {transaction_id: r.transaction_id}]->(m)
WITH p, r WHERE p.version IS NULL OR p.version <= r.version
SET p.amount = r.amount, p.event_time = r.event_time, p.status = r.status, p.fraud_score = r.fraud_score, p.version = r.version"""
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


def graph_batches(block: pa.Table) -> list[tuple[str, pa.Table]]:
    """The statements (in order: nodes before relationships) and their parameter rows for one
    block of transactions."""
    t = block.filter(pc.and_(pc.is_valid(block["account_id"]), pc.is_valid(block["merchant_id"])))
    accounts = pa.table({"id": pc.unique(t["account_id"])})
    latest = t.select(["merchant_id", "merchant_name", "merchant_category", "_version"]).sort_by(
        [("merchant_id", "ascending"), ("_version", "descending")]
    )
    first = first_of_runs(latest["merchant_id"])
    merchants = pa.table(
        {"id": latest["merchant_id"].filter(first), "name": latest["merchant_name"].filter(first),
         "category": latest["merchant_category"].filter(first)}
    )  # fmt: skip
    with_device = t.filter(pc.is_valid(t["device_id"]))
    devices = pa.table({"id": pc.unique(with_device["device_id"])})
    paid = pa.table(
        {"transaction_id": t["transaction_id"], "account_id": t["account_id"], "merchant_id": t["merchant_id"],
         "amount": t["amount"], "event_time": t["event_time"], "status": t["status"], "fraud_score": t["fraud_score"],
         "version": t["_version"]}
    )  # fmt: skip
    used = with_device.group_by(["account_id", "device_id"]).aggregate([("event_time", "min"), ("event_time", "max")])
    used = used.rename_columns(["account_id", "device_id", "first_seen", "last_seen"])
    used = used.filter(pc.is_valid(used["first_seen"]))
    return [(MERGE_ACCOUNTS, accounts), (MERGE_MERCHANTS, merchants), (MERGE_DEVICES, devices), (MERGE_PAID, paid), (MERGE_USED, used)]


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

    def run(self, query: str, rows: list[Any]) -> None:
        # A statement prepared once: `execute(text, params)` re-derives a cache key from every
        # parameter value and re-plans, which doubles the cost of a 50k-row batch.
        ps = self.prepared.get(query)
        if ps is None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ps = self.prepared[query] = self.conn.prepare(query)
        self.conn.execute(ps, {"rows": rows})

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

    def run(self, query: str, rows: list[dict[str, Any]]) -> None:
        # A managed write transaction: the driver retries it on transient errors and leader changes.
        with self.driver.session(database=self.database) as session:
            session.execute_write(_run_write, query, rows)

    def scalar(self, query: str) -> int:
        with self.driver.session(database=self.database) as session:
            return int(session.run(query).single()[0])

    def close(self) -> None:
        self.driver.close()


def _run_write(tx: Any, query: str, rows: list[dict[str, Any]]) -> None:
    tx.run(query, rows=rows).consume()


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
        for query, params in graph_batches(block):
            for start in range(0, params.num_rows, size):
                part = params.slice(start, size)
                self._backend.run(query, part["id"].to_pylist() if query in SCALAR_ROWS else to_records(part))
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
