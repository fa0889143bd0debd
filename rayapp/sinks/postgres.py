"""PostgreSQL sink: versioned SQL migrations, then COPY into a staging table and one
``INSERT … ON CONFLICT … DO UPDATE`` per block that only replaces rows with newer ``_version``.
While a table has no tombstones, a block is COPYd straight into it (binary where the column
types fit) under a savepoint: rows whose keys it does not hold are exactly what the upsert would
insert. The first key it already holds sends that block, and the writer's later ones, back to
the upsert. A table's first load (it and its tombstones empty) goes in without its indexes,
rebuilt once the run's writes are done (:mod:`rayapp.sinks.pg_bulk`).

URLs: ``postgresql://user:pass@host:5432/db`` (any server), or ``pgserver:///path`` — an
embedded PostgreSQL 16 (the ``pgserver`` package) whose data directory is ``path``; it is
started on first use and stops when the last process using it exits.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from rayapp.catalog import TABLE_DATASETS, Dataset
from rayapp.sinks import pg_bulk
from rayapp.sinks.base import KEYS, BatchOptions, SinkError, StoreSink, StoreSpec, conform, is_repair, split_deleted
from rayapp.sinks.pg_binary import COLUMN_TYPES_SQL, binary_fits, encode_binary
from rayapp.sinks.pg_csv import csv_bytes, read_csv
from rayapp.sinks.pg_sql import (CREATE_MIGRATIONS, LATEST_PREDICTION, LOOKUP_TRANSACTION, MIGRATION_LOCK_ID, MIGRATIONS_TABLE,
                                 delete_sql, migrations, purge_sql, upsert_sql)  # fmt: skip
from rayapp.sinks.views import VIEWS
from rayapp.urls import url_path

if TYPE_CHECKING:
    from rayapp.settings import Settings

logger = logging.getLogger(__name__)


def sqlalchemy_url(url: str) -> str:
    """A ``postgresql+psycopg://`` URL for SQLAlchemy (starting the embedded server if needed)."""
    if urlsplit(url).scheme == "pgserver":
        url = str(embedded_server(url_path(url)).get_uri())
    parts = urlsplit(url)
    return urlunsplit(("postgresql+psycopg", *parts[1:]))


def embedded_server(pgdata: str) -> Any:
    """Start (or join) the embedded server; a file lock keeps pool actors from racing ``initdb``."""
    import fcntl
    import os
    import warnings

    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import; irrelevant here
        warnings.simplefilter("ignore")
        import pgserver

    parent = os.path.dirname(os.path.abspath(pgdata))
    os.makedirs(parent, exist_ok=True)
    with open(os.path.join(parent, f".{os.path.basename(pgdata)}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return pgserver.get_server(pgdata, cleanup_mode="stop")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


DATASETS = TABLE_DATASETS
@dataclass(frozen=True)
class PostgresOptions(BatchOptions):
    """Rows per COPY, and whether a table's first load goes in without its indexes."""

    bulk_first_load: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, field: str = "writer_batch_rows") -> "PostgresOptions":
        return cls(batch_rows=int(getattr(settings, field)), bulk_first_load=settings.postgres_bulk_first_load)


class PostgresSink(StoreSink[PostgresOptions]):
    """Upserts transactions, predictions and the gold tables into PostgreSQL."""

    datasets = DATASETS
    _engine: Any = None
    _server: Any = None
    _fresh_tables: dict[Dataset, bool] | None = None  # per table: COPY straight in (see _fresh)
    _binary_tables: dict[str, bool] | None = None  # per table: COPY in binary (see _binary_fits)
    _bulk_open = False  # the current block's table is in an open first load (see _settled)

    def __init__(self, url: str, options: PostgresOptions) -> None:
        super().__init__(url, options)
        # Tables whose loads keep their indexes: found holding rows, or all with the option off.
        self._no_bulk: set[str] = set() if options.bulk_first_load else {d.value for d in DATASETS}

    def _connect(self, pool_size: int = 1) -> None:
        from sqlalchemy import create_engine

        if self._engine is None:
            url = self.url
            if urlsplit(url).scheme == "pgserver":
                self._server = embedded_server(url_path(url))
                url = str(self._server.get_uri())
            self._engine = create_engine(sqlalchemy_url(url), pool_pre_ping=True, pool_size=pool_size, max_overflow=0, pool_timeout=10)

    def on_write_start(self) -> None:
        from sqlalchemy import text

        self._connect()
        with self._engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            conn.execute(text(CREATE_MIGRATIONS))
            done = {row[0] for row in conn.execute(text(f"SELECT version FROM {MIGRATIONS_TABLE}"))}
            for version, name, sql in migrations():
                if version in done:
                    continue
                conn.exec_driver_sql(sql)
                conn.execute(text(f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES (:v, :n)"), {"v": version, "n": name})
                logger.info("postgres: applied migration %s", name)

    def write(self, dataset: Dataset, block: pa.Table) -> int:
        if dataset not in self.datasets:
            raise SinkError(f"postgres does not take {dataset.value}")
        if self._engine is None:
            self.on_write_start()
        block = conform(dataset, block)
        if block.num_rows == 0:
            return 0
        live, gone = split_deleted(block)
        live = live.drop_columns(["_deleted"])
        keys = list(KEYS[dataset])
        stage, gone_stage = f"_stage_{dataset.value}", f"_gone_{dataset.value}"
        plain = not gone.num_rows and not is_repair(block)  # rows only: a first load may take it without indexes
        raw = self._engine.raw_connection()
        try:
            conn = raw.driver_connection
            while not self._settled(conn, dataset, plain and live.num_rows > 0):
                pass
            with conn.cursor() as cur:
                if self._bulk_open:  # the table has no indexes until the load finishes: rows go straight in
                    self._copy(cur, dataset.value, live)
                    conn.commit()
                    return block.num_rows
                cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {dataset.value}) ON COMMIT DELETE ROWS")
                cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {gone_stage} (LIKE {dataset.value}_tombstones) ON COMMIT DELETE ROWS")
                if is_repair(block):  # the whole block's keys: what the store holds for them goes first
                    self._copy(cur, gone_stage, block.select([*keys, "_version"]))
                    for sql in purge_sql(dataset, gone_stage):
                        cur.execute(sql)
                elif gone.num_rows:
                    self._copy(cur, gone_stage, gone.select([*keys, "_version"]))
                    for sql in delete_sql(dataset, gone_stage):
                        cur.execute(sql)
                changed = 0
                if gone.num_rows or is_repair(block):
                    self._freshness()[dataset] = False  # tombstones now exist: every row is checked against them
                elif live.num_rows and self._fresh(cur, dataset):
                    changed = self._copy_direct(conn, cur, dataset, live)
                if changed == 0 and live.num_rows:
                    self._copy(cur, stage, live)
                    cur.execute(upsert_sql(dataset, stage))
                    changed = cur.rowcount
            conn.commit()
        except Exception:
            try:
                raw.driver_connection.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone; the original error matters
                pass
            raise
        finally:
            raw.close()
        logger.debug("postgres %s: %d rows sent, %d inserted/updated", dataset.value, block.num_rows, changed)
        return block.num_rows

    def _settled(self, conn: Any, dataset: Dataset, plain: bool) -> bool:
        """Start the block's transaction with ``dataset``'s table locked against a new first load
        and ``_bulk_open`` saying whether one is open: a block of rows joins it, or opens one when
        the table is empty (see pg_bulk); any other block finishes an open load first. False when
        the transaction was rolled back instead (the load's state changed: ask again)."""
        table = dataset.value
        if not plain:
            pg_bulk.finish(conn, table)
        with conn.cursor() as cur:
            self._bulk_open = pg_bulk.held(cur, table)
        if self._bulk_open != plain and (not plain or table not in self._no_bulk):
            conn.rollback()  # begin takes the table's lock after this transaction's
            if plain and not pg_bulk.begin(conn, table, KEYS[dataset]):
                self._no_bulk.add(table)  # it holds rows: it never qualifies again
            return False
        return True

    def finish(self, dataset: Dataset | None = None) -> None:
        """Finish the first load of ``dataset``'s table, or every one left open (sharing the work
        with other writers): duplicates out, indexes rebuilt."""
        if self._engine is None:
            self.on_write_start()
        raw = self._engine.raw_connection()
        try:
            if dataset is not None:
                pg_bulk.finish(raw.driver_connection, dataset.value)
            else:
                pg_bulk.finish(raw.driver_connection, skip_locked=True)  # tables no other writer is finishing
                pg_bulk.finish(raw.driver_connection)  # then wait for those that were
        finally:
            raw.close()

    def _fresh(self, cur: Any, dataset: Dataset) -> bool:
        """Whether ``dataset``'s blocks go straight into its table: its tombstones were empty when this
        writer first wrote to it (asked once per writer), and no key conflict or delete happened since.
        Rows the table holds already do not matter (another writer's first blocks of the same load):
        a held key fails the COPY, and that block takes the upsert."""
        fresh = self._freshness()
        if dataset not in fresh:
            cur.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {dataset.value}_tombstones)")
            fresh[dataset] = bool(cur.fetchone()[0])
        return fresh[dataset]

    def _freshness(self) -> dict[Dataset, bool]:
        if self._fresh_tables is None:
            self._fresh_tables = {}
        return self._fresh_tables

    def _copy_direct(self, conn: Any, cur: Any, dataset: Dataset, live: pa.Table) -> int:
        """COPY straight into the table, under a savepoint. A key the table already holds (a block with
        two versions of a key, a row of an earlier run or of another writer) rolls the COPY back and returns 0:
        the block then takes the version-guarded upsert, so the outcome is the same either way."""
        import psycopg

        try:
            with conn.transaction():  # a savepoint inside the block's transaction
                self._copy(cur, dataset.value, live)
            return live.num_rows
        except psycopg.errors.UniqueViolation:
            self._freshness()[dataset] = False
            logger.info("postgres %s: a key is already held; upserting from here on", dataset.value)
            return 0

    def _copy(self, cur: Any, table: str, rows: pa.Table) -> None:
        """COPY ``rows`` into ``table`` in chunks of the batch size: in binary where every column's
        type fits its encoding (see pg_binary), else as CSV."""
        cols = ", ".join(rows.column_names)
        binary = self._binary_fits(cur, table, rows.schema)
        for start in range(0, rows.num_rows, self.options.batch_rows):
            part = rows.slice(start, self.options.batch_rows)
            data = encode_binary(part) if binary else csv_bytes(part)
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT {'binary' if binary else 'csv'})") as copy:
                copy.write(data)

    def _binary_fits(self, cur: Any, table: str, schema: pa.Schema) -> bool:
        """Whether ``table`` takes ``schema`` in binary; its column types are asked once per writer."""
        if self._binary_tables is None:
            self._binary_tables = {}
        if table not in self._binary_tables:
            cur.execute(COLUMN_TYPES_SQL, (table,))
            self._binary_tables[table] = binary_fits(schema, dict(cur.fetchall()))
            if not self._binary_tables[table]:
                logger.info("postgres %s: a column's type differs from what binary COPY encodes; writing CSV", table)
        return self._binary_tables[table]

    def scan(self, view: str, lo: str, hi: str) -> pa.Table:
        """The view's rows with its first key in ``[lo, hi)`` (code point order), read by one COPY."""
        from psycopg import sql

        v = VIEWS[view]
        if self._engine is None:
            self.on_write_start()
        first = v.key[0]
        query = sql.SQL("COPY (SELECT {} FROM {} WHERE {} COLLATE \"C\" >= {} AND {} COLLATE \"C\" < {}) TO STDOUT (FORMAT csv)").format(
            sql.SQL(", ").join(map(sql.Identifier, v.schema.names)), sql.Identifier(view), sql.Identifier(first), sql.Literal(lo),
            sql.Identifier(first), sql.Literal(hi))  # fmt: skip
        buf = io.BytesIO()
        raw = self._engine.raw_connection()
        try:
            conn = raw.driver_connection
            with conn.cursor() as cur:
                cur.execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO'; SET LOCAL extra_float_digits = 1")
                with cur.copy(query) as copy:
                    for chunk in copy:
                        buf.write(chunk)
            conn.rollback()
        finally:
            raw.close()
        return read_csv(buf.getvalue(), v.schema)

    def transaction(self, transaction_id: str) -> dict[str, Any] | None:
        """Read side: one transaction as published, with its latest prediction; None when the store
        does not hold it.

        Raises:
            SinkError: the store has not been published to yet.
        """
        from psycopg.rows import dict_row

        self._connect(pool_size=4)
        raw = self._engine.raw_connection()
        try:
            with raw.driver_connection.cursor(row_factory=dict_row) as cur:
                try:
                    row = cur.execute(LOOKUP_TRANSACTION, {"id": transaction_id}).fetchone()
                    prediction = cur.execute(LATEST_PREDICTION, {"id": transaction_id}).fetchone() if row else None
                except Exception as exc:  # noqa: BLE001 - psycopg.errors.UndefinedTable before the first publish
                    if type(exc).__name__ == "UndefinedTable":
                        raise SinkError("postgres holds no transactions yet: run `rayapp run publish`") from None
                    raise
            raw.driver_connection.rollback()
        finally:
            raw.close()
        if row is None:
            return None
        row.pop("_version", None)
        return {**row, "prediction": prediction}

    def counts(self) -> dict[str, int]:
        from sqlalchemy import text

        if self._engine is None:
            self.on_write_start()
        with self._engine.connect() as conn:
            return {d.value: int(conn.execute(text(f"SELECT count(*) FROM {d.value}")).scalar_one()) for d in self.datasets}

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._server is not None:
            # Leave the embedded server explicitly: pgserver stops it when its last user leaves, and
            # a writer actor ends by ray.kill, which skips the atexit hook that would do it.
            self._server.cleanup()
            self._server = None

    def example_query(self) -> str:
        if urlsplit(self.url).scheme == "pgserver":
            return (
                f"python -c \"import pgserver; print(pgserver.get_server('{url_path(self.url)}')"
                ".psql('SELECT status, count(*), round(avg(fraud_score)::numeric, 4) FROM transactions GROUP BY 1'))\""
            )
        return f"psql '{self.display_url}' -c 'SELECT status, count(*) FROM transactions GROUP BY 1'"


STORE = StoreSpec(
    name="postgres", setting="postgres_url", schemes=("postgresql", "postgresql+psycopg", "postgres", "pgserver"),
    embedded_schemes=("pgserver",), default_dir="postgres", datasets=DATASETS, sink=PostgresSink,
    options=PostgresOptions.from_settings, order=10, embedded_server=True,
)  # fmt: skip
