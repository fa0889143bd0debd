"""A recording stand-in for the ``neo4j`` driver API (no Neo4j server runs on these machines).

``FakeDriver`` implements the part of ``neo4j.Driver`` rayapp uses — ``verify_connectivity``,
``session(database=)`` with ``run`` and ``execute_write`` (managed transactions whose
functions call ``tx.run(query, **params)``), ``close`` — records every call, can fail the next
N calls with a real ``neo4j.exceptions`` error, and executes each write on a Ladybug database
so the exact Cypher text the Neo4j backend sends is checked by a real Cypher engine.
Schema statements (constraints/indexes) and the account lock are Neo4j-only: recorded, not
executed; ``CALL dbms.components()`` answers as Neo4j does. Real Bolt and openCypher are
exercised against FalkorDB (``tests/servers.py``); this fake only shows what a server cannot be
made to do on demand: fail with ``ServiceUnavailable``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Call:
    kind: str  # run | tx.run
    query: str
    params: dict[str, Any]
    database: str | None
    in_transaction: bool


class _Result:
    def __init__(self, rows: list[list[Any]]) -> None:
        self.rows = rows

    def consume(self) -> None:
        return None

    def single(self) -> list[Any] | None:
        return self.rows[0] if self.rows else None

    def values(self) -> list[list[Any]]:
        return self.rows


@dataclass
class FakeDriver:
    uri: str
    auth: Any
    ladybug_conn: Any
    calls: list[Call] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)  # raised by the next execute_write calls
    closed: bool = False
    sessions: int = 0

    def verify_connectivity(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    def session(self, database: str | None = None) -> "FakeSession":
        self.sessions += 1
        return FakeSession(self, database)

    def execute(self, query: str, params: dict[str, Any]) -> list[list[Any]]:
        q = query.lstrip().upper()
        if q.startswith("CALL DBMS.COMPONENTS()"):
            return [["Neo4j Kernel"]]  # what a Neo4j 5 server answers
        if q.startswith(("CREATE CONSTRAINT", "CREATE INDEX")) or "REMOVE A._LOCK" in q:
            return []  # Neo4j-only schema and lock statements: recorded, not executed
        result = self.ladybug_conn.execute(query, params)
        rows = []
        while result.has_next():
            rows.append(result.get_next())
        return rows

    def close(self) -> None:
        self.closed = True


class FakeSession:
    def __init__(self, driver: FakeDriver, database: str | None) -> None:
        self.driver = driver
        self.database = database

    def __enter__(self) -> "FakeSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def run(self, query: str, parameters: dict[str, Any] | None = None, **kwargs: Any) -> _Result:
        params = {**(parameters or {}), **kwargs}
        self.driver.calls.append(Call("run", query, params, self.database, False))
        return _Result(self.driver.execute(query, params))

    def execute_write(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.driver.failures:
            raise self.driver.failures.pop(0)
        return fn(FakeTransaction(self), *args, **kwargs)

    def execute_read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(FakeTransaction(self), *args, **kwargs)


class FakeTransaction:
    def __init__(self, session: FakeSession) -> None:
        self.session = session

    def run(self, query: str, parameters: dict[str, Any] | None = None, **kwargs: Any) -> _Result:
        params = {**(parameters or {}), **kwargs}
        self.session.driver.calls.append(Call("tx.run", query, params, self.session.database, True))
        return _Result(self.session.driver.execute(query, params))
