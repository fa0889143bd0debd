"""The two graph engines behind :mod:`rayapp.sinks.graph`: embedded Ladybug and a Neo4j (Bolt) server.

Both offer the same small surface to the graph's write functions — ``run(query, rows)``,
``table(query, rows, schema)``, ``records(table)`` — and run a whole block in one write
transaction, so the same Cypher statements drive either.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from rayapp.sinks.base import to_records
from rayapp.urls import url_query

# Rows per statement within a write transaction: Ladybug's parameter binding costs ~1.25x more per
# row for a 100k-row list than for 10k-row ones, and 10k is Neo4j's usual UNWIND batch too.
STATEMENT_ROWS = 10_000


def chunks(rows: list[Any]) -> list[list[Any]]:
    return [rows[i : i + STATEMENT_ROWS] for i in range(0, len(rows), STATEMENT_ROWS)]


def _naive_utc(table: pa.Table) -> pa.Table:
    fields = [pa.field(f.name, pa.timestamp(f.type.unit)) if pa.types.is_timestamp(f.type) and f.type.tz else f for f in table.schema]
    return table.cast(pa.schema(fields))


class LadybugEngine:
    """Embedded Ladybug: prepared statements, Arrow results, one write transaction per block."""

    concurrent = False  # one process writes an embedded database

    def __init__(self, path: str, schema: tuple[str, ...]) -> None:
        import ladybug

        self.schema = schema
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.db = ladybug.Database(path)
        self.conn = ladybug.Connection(self.db)
        self.prepared: dict[str, Any] = {}

    def setup(self) -> None:
        for q in self.schema:
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
        for chunk in chunks(rows):
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


class Neo4jEngine:
    """A Bolt server through the official driver, managed write transactions.

    ``setup`` asks the server what it is: Neo4j gets the constraint DDL and concurrent writers lock
    the accounts a block touches; FalkorDB (Bolt + openCypher) has no constraint DDL over Bolt and
    no temporal parameters, so it gets exact-match indexes and timestamps as epoch microseconds,
    and its one-write-query-at-a-time execution already serialises writers."""

    def __init__(self, url: str, schema: tuple[str, ...], indexes: tuple[tuple[str, str], ...] = ()) -> None:
        from neo4j import GraphDatabase

        self.schema = schema
        self.indexes = indexes
        self.dialect = "neo4j"
        parts = urlsplit(url)
        auth = (parts.username or "neo4j", parts.password or "") if parts.username else None
        host = parts.hostname or "localhost"
        netloc = f"{host}:{parts.port}" if parts.port else host
        self.database = url_query(url).get("database") or (parts.path.strip("/") or None)
        self.driver = GraphDatabase.driver(urlunsplit((parts.scheme, netloc, "", "", "")), auth=auth)

    def _dialect(self, session: Any) -> str:
        from neo4j.exceptions import Neo4jError

        try:
            names = [r[0] for r in session.run("CALL dbms.components() YIELD name RETURN name").values()]
            if any("neo4j" in str(n).lower() for n in names):
                return "neo4j"
        except Neo4jError:
            pass
        procedures = [r[0] for r in session.run("CALL dbms.procedures() YIELD name RETURN name").values()]
        if any(str(p).startswith(("db.idx.", "algo.")) for p in procedures):
            return "falkordb"
        raise RuntimeError(f"graph server at {self.driver} is neither Neo4j nor FalkorDB (procedures: {procedures[:5]})")

    def setup(self) -> None:
        self.driver.verify_connectivity()
        with self.driver.session(database=self.database) as session:
            self.dialect = self._dialect(session)
            if self.dialect == "neo4j":
                for q in self.schema:
                    session.run(q).consume()
                return
            held = {(r[0], r[1]) for r in session.run(
                "CALL db.indexes() YIELD label, properties UNWIND properties AS p RETURN label, p").values()}  # fmt: skip
            for label, prop in self.indexes:
                if (label, prop) not in held:
                    session.run(f"CREATE INDEX FOR (n:{label}) ON (n.{prop})").consume()
            if ("PAID", "transaction_id") not in held:
                session.run("CREATE INDEX FOR ()-[r:PAID]-() ON (r.transaction_id)").consume()

    @property
    def concurrent(self) -> bool:
        return self.dialect == "neo4j"

    def write(self, fn: Callable[[Any], None]) -> None:
        # A managed write transaction: the driver retries the whole function on transient errors
        # and leader changes (it re-reads what the graph holds, so a retry decides afresh).
        with self.driver.session(database=self.database) as session:
            session.execute_write(lambda tx: fn(_Neo4jTx(tx, self.concurrent, self.dialect == "falkordb")))

    def scalar(self, query: str) -> int:
        with self.driver.session(database=self.database) as session:
            return int(session.run(query).single()[0])

    def table(self, query: str, rows: list[Any], schema: pa.Schema) -> pa.Table:
        """A read outside a write transaction (reconcile)."""
        with self.driver.session(database=self.database) as session:
            return session.execute_read(lambda tx: _Neo4jTx(tx, False, self.dialect == "falkordb").table(query, rows, schema))

    def close(self) -> None:
        self.driver.close()


def _table(values: list[list[Any]], schema: pa.Schema) -> pa.Table:
    """Bolt result rows as Arrow (temporal values as Python ones; naive datetimes are UTC; integers
    in a timestamp column are epoch microseconds)."""
    cols: list[list[Any]] = [[] for _ in schema]
    for row in values:
        for i, v in enumerate(row):
            if hasattr(v, "to_native"):
                v = v.to_native()
            if isinstance(v, datetime) and v.tzinfo is None:
                v = v.replace(tzinfo=timezone.utc)
            elif isinstance(v, int) and pa.types.is_timestamp(schema[i].type):
                v = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=v)
            cols[i].append(v)
    return pa.table(cols, schema=schema)


def _epoch_us(table: pa.Table) -> pa.Table:
    """Timestamps as epoch microseconds (a server without temporal parameters)."""
    fields = [pa.field(f.name, pa.int64()) if pa.types.is_timestamp(f.type) else f for f in table.schema]
    return pa.table([c.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()) if pa.types.is_timestamp(c.type) else c
                     for c in table.columns], schema=pa.schema(fields))  # fmt: skip


class _Neo4jTx:
    """What a write function sees inside a Bolt transaction (same methods as the Ladybug engine)."""

    def __init__(self, tx: Any, concurrent: bool, epoch_times: bool) -> None:
        self.tx = tx
        self.concurrent = concurrent
        self.epoch_times = epoch_times

    def run(self, query: str, rows: list[Any]) -> None:
        for chunk in chunks(rows):
            self.tx.run(query, rows=chunk).consume()

    def table(self, query: str, rows: list[Any], schema: pa.Schema) -> pa.Table:
        values = [v for chunk in chunks(rows) for v in self.tx.run(query, rows=chunk).values()]
        return _table(values, schema)

    def records(self, table: pa.Table) -> list[dict[str, Any]]:
        return to_records(_epoch_us(table) if self.epoch_times else table)
