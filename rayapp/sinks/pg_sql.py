"""PostgreSQL statements of the sink: versioned migrations, the version-guarded upsert, tombstones,
``reconcile --repair``'s purge and the read side's lookups. Pure text; the sink runs them."""

from __future__ import annotations

from importlib import resources

from rayapp.catalog import Dataset, dataset_schema
from rayapp.sinks.base import KEYS

MIGRATIONS_TABLE = "rayapp_schema_migrations"
MIGRATION_LOCK_ID = 0x7261_7961  # advisory lock: pool actors starting together migrate one at a time

CREATE_MIGRATIONS = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration file, in order."""
    out = []
    for entry in resources.files("rayapp.sinks").joinpath("migrations", "postgres").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append((version, entry.name, entry.read_text()))
    return sorted(out)


def on_keys(keys: tuple[str, ...], a: str, b: str) -> str:
    """``a.k = b.k AND …`` over ``keys``."""
    return " AND ".join(f"{a}.{k} = {b}.{k}" for k in keys)


def upsert_sql(dataset: Dataset, stage: str) -> str:
    cols = [f.name for f in dataset_schema(dataset) if f.name != "_deleted"]
    keys = KEYS[dataset]
    col_list = ", ".join(cols)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in keys)
    # DISTINCT ON keeps the newest version per key should a block ever carry two; a row whose key
    # has a tombstone as new as the row itself stays deleted.
    return (
        f"INSERT INTO {dataset.value} AS t ({col_list}) "
        f"SELECT DISTINCT ON ({', '.join(keys)}) {col_list} FROM {stage} s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {dataset.value}_tombstones x WHERE {on_keys(keys, 'x', 's')} AND x._version >= s._version) "
        f"ORDER BY {', '.join(keys)}, _version DESC "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} WHERE t._version < EXCLUDED._version"
    )


def delete_sql(dataset: Dataset, gone: str) -> list[str]:
    """Record tombstones (the newest per key) and delete the rows older than them."""
    keys = KEYS[dataset]
    key_list = ", ".join(keys)
    return [
        f"INSERT INTO {dataset.value}_tombstones AS x ({key_list}, _version) "
        f"SELECT DISTINCT ON ({key_list}) {key_list}, _version FROM {gone} ORDER BY {key_list}, _version DESC "
        f"ON CONFLICT ({key_list}) DO UPDATE SET _version = EXCLUDED._version WHERE x._version < EXCLUDED._version",
        f"DELETE FROM {dataset.value} t USING {gone} g WHERE {on_keys(keys, 't', 'g')} AND t._version < g._version",
    ]


def purge_sql(dataset: Dataset, gone: str) -> list[str]:
    """``reconcile --repair``: forget the block's keys (rows and tombstones) whatever their version."""
    keys = KEYS[dataset]
    return [f"DELETE FROM {dataset.value}{suffix} t USING {gone} g WHERE {on_keys(keys, 't', 'g')}" for suffix in ("", "_tombstones")]


LOOKUP_TRANSACTION = "SELECT * FROM transactions WHERE transaction_id = %(id)s"
LATEST_PREDICTION = """SELECT model_version, fraud_score, is_fraud_pred, scored_at FROM predictions
WHERE transaction_id = %(id)s ORDER BY scored_at DESC, model_version DESC LIMIT 1"""


__all__ = ["CREATE_MIGRATIONS", "LATEST_PREDICTION", "LOOKUP_TRANSACTION", "MIGRATIONS_TABLE", "MIGRATION_LOCK_ID", "delete_sql", "migrations",
           "on_keys", "purge_sql", "upsert_sql"]
