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


#: FalkorDB 4.16's experimental Bolt server crashes on a RUN message over about 4 KB (measured:
#: 3.8 KB passes, 4.7 KB kills the server), so its statements carry rows up to this many bytes.
FALKORDB_MESSAGE_BYTES = 3000
#: Floats sent to FalkorDB as integers of this many units (9 decimals).
FLOAT_SCALE = 1_000_000_000


def chunks(rows: list[Any], max_bytes: int | None = None) -> list[list[Any]]:
    """``rows`` in statements of at most ``STATEMENT_ROWS`` rows (and about ``max_bytes`` of parameters)."""
    if max_bytes is None:
        return [rows[i : i + STATEMENT_ROWS] for i in range(0, len(rows), STATEMENT_ROWS)]
    out: list[list[Any]] = []
    part: list[Any] = []
    size = 0
    for row in rows:
        n = len(repr(row).encode())  # at least what PackStream sends for it
        if part and (size + n > max_bytes or len(part) >= STATEMENT_ROWS):
            out.append(part)
            part, size = [], 0
        part.append(row)
        size += n
    return out + [part] if part else out


def _naive_utc(table: pa.Table) -> pa.Table:
    fields = [pa.field(f.name, pa.timestamp(f.type.unit)) if pa.types.is_timestamp(f.type) and f.type.tz else f for f in table.schema]
    return table.cast(pa.schema(fields))


class LadybugEngine:
    """Embedded Ladybug: prepared statements, Arrow results, one write transaction per block."""

    concurrent = False  # one process writes an embedded database
    locks = False
    embedded = True

    def __init__(self, path: str, schema: tuple[str, ...], read_only: bool = False, bulk: bool = True) -> None:
        import ladybug

        self.schema = schema
        self.bulk = bulk
        if not read_only:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.db = ladybug.Database(path, read_only=read_only)
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

    def copy(self, table: str, rows: pa.Table) -> None:
        """Ladybug's bulk loader: ``COPY table FROM`` an Arrow table (a relationship table's first two
        columns are the endpoints' keys, then its properties in declared order). Inside the block's
        transaction: it lands or rolls back with the rest; a key already held is an error."""
        if rows.num_rows == 0:
            return
        data = _naive_utc(rows).combine_chunks()  # noqa: F841 - COPY reads the Python variable by name
        self.conn.execute(f"COPY {table} FROM data")

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
    no temporal parameters, so it gets exact-match indexes, timestamps as epoch microseconds and
    statements small enough for its Bolt server, and its one-write-query-at-a-time execution
    already serialises writers."""

    bulk = False  # no bulk loader over Bolt: new rows go in large UNWIND statements
    embedded = False

    def __init__(self, url: str, schema: tuple[str, ...], indexes: tuple[tuple[str, str], ...] = ()) -> None:
        from neo4j import GraphDatabase

        self.schema = schema
        self.indexes = indexes
        self.dialect = "neo4j"
        parts = urlsplit(url)
        auth = (parts.username or "neo4j", parts.password or "") if parts.username else None
        host = parts.hostname or "localhost"
        netloc = f"{host}:{parts.port}" if parts.port else host
        query = url_query(url)
        self.database = query.get("database") or (parts.path.strip("/") or None)
        # Seconds to open a connection / to get one (handshake included): a server that does not
        # answer is retried soon rather than after the driver's 60 s (FalkorDB's experimental Bolt
        # can leave the first handshake after another client left unanswered).
        timeouts = {k: float(query.get(k, "5")) for k in ("connection_timeout", "connection_acquisition_timeout")}
        self.driver = GraphDatabase.driver(urlunsplit((parts.scheme, netloc, "", "", "")), auth=auth, **timeouts)

    def _dialect(self, session: Any) -> str:
        from neo4j.exceptions import Neo4jError

        def values(query: str) -> list[list[Any]]:
            return session.execute_read(lambda tx: tx.run(query).values())

        try:
            if any("neo4j" in str(r[0]).lower() for r in values("CALL dbms.components() YIELD name RETURN name")):
                return "neo4j"
        except Neo4jError:
            pass
        procedures = [r[0] for r in values("CALL dbms.procedures() YIELD name RETURN name")]
        if any(str(p).startswith(("db.idx.", "algo.")) for p in procedures):
            return "falkordb"
        raise RuntimeError(f"graph server at {self.driver} is neither Neo4j nor FalkorDB (procedures: {procedures[:5]})")

    def setup(self) -> None:
        from neo4j.exceptions import ServiceUnavailable

        for attempt in range(3):
            try:
                return self._setup()
            except ServiceUnavailable:
                if attempt == 2:
                    raise

    def _setup(self) -> None:
        from neo4j.exceptions import Neo4jError

        # Everything in explicit transactions: they carry the database (FalkorDB: the graph) to use,
        # which FalkorDB ignores on auto-commit queries.
        self.driver.verify_connectivity()
        with self.driver.session(database=self.database) as session:
            self.dialect = self._dialect(session)
            if self.dialect == "neo4j":
                for q in self.schema:
                    session.run(q).consume()  # Neo4j runs schema commands in auto-commit transactions only
                return
            def held() -> set[tuple[str, str]]:
                return {(r[0], r[1]) for r in session.execute_read(lambda tx: tx.run(
                    "CALL db.indexes() YIELD label, properties UNWIND properties AS p RETURN label, p").values())}  # fmt: skip

            wanted = [(f"(n:{label})", label, prop) for label, prop in self.indexes] + [("()-[n:PAID]-()", "PAID", "transaction_id")]
            for pattern, label, prop in wanted:
                if (label, prop) in held():
                    continue
                try:
                    session.execute_write(lambda tx, p=pattern, q=prop: tx.run(f"CREATE INDEX FOR {p} ON (n.{q})").consume())
                except Neo4jError:
                    if (label, prop) not in held():  # not another writer creating it at the same time
                        raise

    concurrent = True  # a server: other writer processes run beside this one

    @property
    def locks(self) -> bool:
        return self.dialect == "neo4j"

    def write(self, fn: Callable[[Any], None]) -> None:
        # A managed write transaction: the driver retries the whole function on transient errors
        # and leader changes (it re-reads what the graph holds, so a retry decides afresh).
        with self.driver.session(database=self.database) as session:
            session.execute_write(lambda tx: fn(_Neo4jTx(tx, self.locks, self.dialect == "falkordb")))

    def scalar(self, query: str) -> int:
        with self.driver.session(database=self.database) as session:
            return int(session.execute_read(lambda tx: tx.run(query).single()[0]))

    def table(self, query: str, rows: list[Any], schema: pa.Schema) -> pa.Table:
        """A read outside a write transaction (reconcile)."""
        with self.driver.session(database=self.database) as session:
            return session.execute_read(lambda tx: _Neo4jTx(tx, self.locks, self.dialect == "falkordb").table(query, rows, schema))

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

    concurrent = True

    def __init__(self, tx: Any, locks: bool, falkordb: bool) -> None:
        self.tx = tx
        self.locks = locks
        self.falkordb = falkordb
        self.max_bytes = FALKORDB_MESSAGE_BYTES if falkordb else None

    def run(self, query: str, rows: list[Any]) -> None:
        query = _with_floats(query, rows)
        for chunk in chunks(rows, self.max_bytes):
            self.tx.run(query, rows=chunk).consume()

    def table(self, query: str, rows: list[Any], schema: pa.Schema) -> pa.Table:
        query = _with_floats(query, rows)
        values = [v for chunk in chunks(rows, self.max_bytes) for v in self.tx.run(query, rows=chunk).values()]
        return _table(values, schema)

    def records(self, table: pa.Table) -> list[dict[str, Any]]:
        if not self.falkordb:
            return to_records(table)
        # FalkorDB reads a float parameter through a 6-decimal text form (0.000567297 arrives as
        # 0.000567) and its toFloat() is single precision; integers arrive exact. So floats travel
        # as integers in units of 1e-9 and the statement divides them back.
        floats = [f.name for f in table.schema if pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)]
        rows = _FloatRows(to_records(_epoch_us(table)))
        for row in rows:
            for name in floats:
                if row[name] is not None:
                    row[name] = round(float(row[name]) * FLOAT_SCALE)
        rows.float_fields = tuple(floats)
        return rows


class _FloatRows(list):  # type: ignore[type-arg]
    """Rows whose ``float_fields`` are sent as scaled integers (FalkorDB)."""

    float_fields: tuple[str, ...] = ()


def _with_floats(query: str, rows: list[Any]) -> str:
    import re

    for name in getattr(rows, "float_fields", ()):
        query = re.sub(rf"\br\.{name}\b", f"(r.{name} / {FLOAT_SCALE}.0)", query)
    return query
