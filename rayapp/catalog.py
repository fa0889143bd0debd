"""Every table by name: its schema, partitioning and table properties — the one place a table is defined.

Lake tables (bronze, silver, quarantine, predictions, gold, the ledger) are :class:`TableDef`s,
opened through :class:`rayapp.lake.Lake`. The datasets ``publish`` sends to the serving stores
are :class:`Dataset` members with their schema and key. Pure: pyarrow only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Mapping

import pyarrow as pa

UTC_US = pa.timestamp("us", tz="UTC")
AMOUNT_TYPE = pa.decimal128(18, 2)
#: Tables whose changes later stages read incrementally keep Delta's change data feed.
CDF: Mapping[str, str] = MappingProxyType({"delta.enableChangeDataFeed": "true"})

# ---- the raw-input contract ------------------------------------------------------------------------

#: Columns of a landing file, in order. Extra columns may appear (kept as JSON in ``_extra``).
CONTRACT_COLUMNS: tuple[str, ...] = (
    "transaction_id", "account_id", "merchant_id", "merchant_name", "merchant_category", "amount", "currency",
    "country", "channel", "device_id", "ip_address", "status", "description", "is_fraud", "event_time", "updated_at",
)  # fmt: skip

#: Ingestion metadata columns added to every bronze row.
BRONZE_META_FIELDS: tuple[pa.Field, ...] = (
    pa.field("_extra", pa.string()),  # JSON object of columns outside the contract, null if none
    pa.field("_batch_id", pa.string(), nullable=False),  # the ingest run id
    pa.field("_ingested_at", UTC_US, nullable=False),
    pa.field("_source_file", pa.string(), nullable=False),
    pa.field("_source_row", pa.int64(), nullable=False),  # 1-based data row number within the file
    pa.field("_source_system", pa.string(), nullable=False),
)
#: Bronze: every contract column as the raw text that arrived, plus ingestion metadata.
BRONZE_SCHEMA = pa.schema([pa.field(c, pa.string()) for c in CONTRACT_COLUMNS] + list(BRONZE_META_FIELDS))

# ---- silver ------------------------------------------------------------------------------------------

#: Silver business columns with their types (contract order).
BUSINESS_FIELDS: tuple[pa.Field, ...] = tuple(
    pa.field(c, AMOUNT_TYPE if c == "amount" else pa.bool_() if c == "is_fraud" else UTC_US if c in ("event_time", "updated_at") else pa.string())
    for c in CONTRACT_COLUMNS
)
BUSINESS_COLUMNS = tuple(f.name for f in BUSINESS_FIELDS)
#: Bronze lineage carried to silver: it orders versions with equal ``updated_at``.
ORDER_FIELDS = (pa.field("_ingested_at", UTC_US), pa.field("_source_file", pa.string()), pa.field("_source_row", pa.int64()))
#: Typed rows between parse and the silver MERGE (staging files of bronze_to_silver).
STANDARD_SCHEMA = pa.schema(list(BUSINESS_FIELDS) + list(ORDER_FIELDS))
SILVER_SCHEMA = pa.schema(
    list(BUSINESS_FIELDS)
    + [
        pa.field("_row_hash", pa.string()),
        pa.field("_first_seen_at", UTC_US),
        pa.field("_updated_at", UTC_US),
        pa.field("_source_file", pa.string()),
        pa.field("_source_row", pa.int64()),
        pa.field("_ingested_at", UTC_US),
        pa.field("_run_id", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [pa.field(c, pa.string()) for c in CONTRACT_COLUMNS]
    + [pa.field(f.name, f.type) for f in BRONZE_META_FIELDS]
    + [pa.field("_reasons", pa.list_(pa.string())), pa.field("_run_id", pa.string()), pa.field("_quarantined_at", UTC_US)]
)
PREDICTION_COLUMNS = ("model_version", "fraud_score", "is_fraud_pred", "scored_at")
PREDICTIONS_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("fraud_score", pa.float64()),
        pa.field("is_fraud_pred", pa.bool_()),
        pa.field("scored_at", UTC_US),
        pa.field("_run_id", pa.string()),
    ]
)

# ---- gold ----------------------------------------------------------------------------------------------

DAILY_ACCOUNT_SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.string()),
        pa.field("activity_date", pa.date32()),
        pa.field("txn_count", pa.int64()),
        pa.field("total_amount", AMOUNT_TYPE),
        pa.field("distinct_merchants", pa.int64()),
        pa.field("first_event_time", UTC_US),
        pa.field("last_event_time", UTC_US),
        pa.field("fraud_count", pa.int64()),
    ]
)
MERCHANT_DAILY_SCHEMA = pa.schema(
    [
        pa.field("merchant_id", pa.string()),
        pa.field("activity_date", pa.date32()),
        pa.field("txn_count", pa.int64()),
        pa.field("total_amount", AMOUNT_TYPE),
        pa.field("distinct_accounts", pa.int64()),
        pa.field("fraud_count", pa.int64()),
        pa.field("fraud_rate", pa.float64()),
    ]
)

# ---- the ledger ------------------------------------------------------------------------------------------

#: One record per job run (a ``running`` record at start, the final one at the end).
RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job", pa.string(), nullable=False),
        pa.field("parent_run_id", pa.string()),
        pa.field("args", pa.string()),  # JSON, secrets redacted
        pa.field("started_at", UTC_US, nullable=False),
        pa.field("ended_at", UTC_US),
        pa.field("status", pa.string(), nullable=False),  # running | succeeded | failed | partial
        pa.field("counts", pa.string()),  # JSON object of int counts
        pa.field("versions_read", pa.string()),  # JSON {table: version}
        pa.field("versions_written", pa.string()),  # JSON {table: version}
        pa.field("details", pa.string()),  # JSON: stage specific (rejected files, rule counts, ...)
        pa.field("error", pa.string()),
    ]
)
#: One record per landing file seen by `ingest` (ingested or rejected).
FILES_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("checksum", pa.string(), nullable=False),
        pa.field("size", pa.int64()),
        pa.field("status", pa.string(), nullable=False),  # ingested | rejected
        pa.field("rows", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("bronze_version", pa.int64()),
        pa.field("recorded_at", UTC_US, nullable=False),
    ]
)
#: Dead letters: batches a store refused after retries. The newest record per ``dlq_id`` wins.
DLQ_SCHEMA = pa.schema(
    [
        pa.field("dlq_id", pa.string(), nullable=False),
        pa.field("store", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),  # the publish run that gave up on it
        pa.field("error", pa.string()),
        pa.field("attempts", pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("path", pa.string(), nullable=False),  # Parquet file holding the batch
        pa.field("status", pa.string(), nullable=False),  # pending | replayed
        pa.field("resolved_run_id", pa.string()),
        pa.field("created_at", UTC_US, nullable=False),
        pa.field("recorded_at", UTC_US, nullable=False),
    ]
)
#: How far each stage has read each source table. The newest record per ``(stage, source)`` wins.
WATERMARKS_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),  # e.g. bronze_to_silver, publish:postgres|<url>
        pa.field("source", pa.string(), nullable=False),  # a table name, e.g. silver/transactions
        pa.field("version", pa.int64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("recorded_at", UTC_US, nullable=False),
    ]
)
#: API keys of the consumer API: only a hash of each key is kept. The newest record per ``key_id`` wins.
API_KEYS_SCHEMA = pa.schema(
    [
        pa.field("key_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("scopes", pa.string(), nullable=False),  # comma-separated
        pa.field("key_hash", pa.string(), nullable=False),  # sha256 hex of the whole key
        pa.field("created_at", UTC_US, nullable=False),
        pa.field("revoked_at", UTC_US),
        pa.field("recorded_at", UTC_US, nullable=False),
    ]
)

#: Where each REST API source's pagination stands, per tenant: the newest record per ``(source, tenant)`` wins.
API_CURSORS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("position", pa.string(), nullable=False),  # JSON (rayapp.sources.api.Position)
        pa.field("file", pa.string()),  # the landing file the page went to (null: a page with no rows)
        pa.field("checksum", pa.string()),  # sha256 of that file's content
        pa.field("rows", pa.int64()),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("recorded_at", UTC_US, nullable=False),
    ]
)

# ---- lake tables ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableDef:
    """A Delta table of the lake: its name is its path under the lake root."""

    name: str
    schema: pa.Schema
    description: str
    partition_by: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.name.split("/"))

    def __hash__(self) -> int:  # a table is its name (the properties mapping is not hashable)
        return hash(self.name)


BRONZE = TableDef("bronze/transactions", BRONZE_SCHEMA, "Every landing row as it arrived, with ingestion metadata (append-only)")
SILVER = TableDef("silver/transactions", SILVER_SCHEMA, "Typed, validated, latest version per transaction_id", properties=CDF)
QUARANTINE = TableDef("quarantine/transactions", QUARANTINE_SCHEMA, "Rows a drop/fail expectation rejected, with their reasons")
PREDICTIONS = TableDef("silver/predictions", PREDICTIONS_SCHEMA, "Fraud scores per (transaction_id, model_version)", properties=CDF)
GOLD_ACCOUNT = TableDef(
    "gold/daily_account_activity", DAILY_ACCOUNT_SCHEMA, "Per account and UTC day: counts, amounts, merchants, fraud",
    partition_by=("activity_date",),
)  # fmt: skip
GOLD_MERCHANT = TableDef(
    "gold/merchant_daily_stats", MERCHANT_DAILY_SCHEMA, "Per merchant and UTC day: counts, amounts, accounts, fraud rate",
    partition_by=("activity_date",),
)  # fmt: skip
LEDGER_RUNS = TableDef("_ledger/runs", RUNS_SCHEMA, "Run records")
LEDGER_FILES = TableDef("_ledger/files", FILES_SCHEMA, "Landing files seen by ingest")
LEDGER_DLQ = TableDef("_ledger/dlq", DLQ_SCHEMA, "Dead letters of the serving stores")
LEDGER_WATERMARKS = TableDef("_ledger/watermarks", WATERMARKS_SCHEMA, "Source versions each stage has processed")
LEDGER_API_CURSORS = TableDef("_ledger/api_cursors", API_CURSORS_SCHEMA, "Pagination of each REST API source and tenant")
LEDGER_API_KEYS = TableDef("_ledger/api_keys", API_KEYS_SCHEMA, "API keys of the consumer API (hashes only)")

EMBEDDING_CACHE_SCHEMA = pa.schema([pa.field("model", pa.string(), nullable=False), pa.field("text_hash", pa.string(), nullable=False),
                                    pa.field("vector", pa.list_(pa.float32())), pa.field("created_at", UTC_US)])  # fmt: skip
EMBEDDING_CACHE = TableDef("_cache/embeddings", EMBEDDING_CACHE_SCHEMA, "Sentence vectors by (embedding model, SHA-256 of the text)")
GOLD_TABLES = (GOLD_ACCOUNT, GOLD_MERCHANT)
TABLES: Mapping[str, TableDef] = MappingProxyType(
    {t.name: t for t in (BRONZE, SILVER, QUARANTINE, PREDICTIONS, *GOLD_TABLES, LEDGER_RUNS, LEDGER_FILES, LEDGER_DLQ, LEDGER_WATERMARKS,
                               LEDGER_API_KEYS, LEDGER_API_CURSORS, EMBEDDING_CACHE)}
)

# ---- published datasets (what the serving stores receive) ----------------------------------------------


class Dataset(str, Enum):
    """Logical tables ``publish`` produces; each store declares which ones it takes."""

    TRANSACTIONS = "transactions"
    PREDICTIONS = "predictions"
    DAILY_ACCOUNT_ACTIVITY = "daily_account_activity"
    MERCHANT_DAILY_STATS = "merchant_daily_stats"
    MERCHANT_VECTORS = "merchant_vectors"
    TRANSACTION_VECTORS = "transaction_vectors"


_PREDICTION_FIELDS = [
    pa.field("model_version", pa.string()),
    pa.field("fraud_score", pa.float64()),
    pa.field("is_fraud_pred", pa.bool_()),
    pa.field("scored_at", UTC_US),
]
#: True on a tombstone: the row left the lake at ``_version``; only its key (and, for transactions,
#: the account, merchant and device it hung on) is set. Stores delete older versions and keep the
#: tombstone, so an older upsert replayed later cannot bring the row back.
DELETED = pa.field("_deleted", pa.bool_())
DATASET_SCHEMAS: Mapping[Dataset, pa.Schema] = MappingProxyType(
    {
        # silver's business columns, its change time and the latest prediction; _version orders versions.
        Dataset.TRANSACTIONS: pa.schema([*BUSINESS_FIELDS, pa.field("_updated_at", UTC_US), *_PREDICTION_FIELDS, pa.field("_version", UTC_US), DELETED]),
        Dataset.PREDICTIONS: pa.schema([pa.field("transaction_id", pa.string()), *_PREDICTION_FIELDS, pa.field("_version", UTC_US), DELETED]),
        Dataset.DAILY_ACCOUNT_ACTIVITY: pa.schema([*DAILY_ACCOUNT_SCHEMA, pa.field("_version", pa.int64()), DELETED]),
        Dataset.MERCHANT_DAILY_STATS: pa.schema([*MERCHANT_DAILY_SCHEMA, pa.field("_version", pa.int64()), DELETED]),
        Dataset.MERCHANT_VECTORS: pa.schema(
            [
                pa.field("id", pa.string()),
                pa.field("vector", pa.list_(pa.float32())),
                pa.field("text", pa.string()),
                pa.field("name", pa.string()),
                pa.field("category", pa.string()),
                pa.field("country", pa.string()),
                pa.field("txn_count", pa.int64()),
                pa.field("fraud_count", pa.int64()),
                pa.field("fraud_rate", pa.float64()),
                pa.field("_version", pa.int64()),
            ]
        ),
        # rows whose vector is null fell below the score threshold or left the lake: the store deletes
        # the versions older than theirs (for both vector datasets).
        Dataset.TRANSACTION_VECTORS: pa.schema(
            [
                pa.field("id", pa.string()),
                pa.field("vector", pa.list_(pa.float32())),
                pa.field("text", pa.string()),
                pa.field("account_id", pa.string()),
                pa.field("merchant_id", pa.string()),
                pa.field("amount", pa.float64()),
                pa.field("fraud_score", pa.float64()),
                pa.field("model_version", pa.string()),
                pa.field("event_time", UTC_US),
                pa.field("_version", UTC_US),
            ]
        ),
    }
)
#: Primary key of each dataset.
DATASET_KEYS: Mapping[Dataset, tuple[str, ...]] = MappingProxyType(
    {
        Dataset.TRANSACTIONS: ("transaction_id",),
        Dataset.PREDICTIONS: ("transaction_id", "model_version"),
        Dataset.DAILY_ACCOUNT_ACTIVITY: ("account_id", "activity_date"),
        Dataset.MERCHANT_DAILY_STATS: ("merchant_id", "activity_date"),
        Dataset.MERCHANT_VECTORS: ("id",),
        Dataset.TRANSACTION_VECTORS: ("id",),
    }
)
#: The datasets of plain rows (tables in SQL stores); the vector datasets are the others.
TABLE_DATASETS = (Dataset.TRANSACTIONS, Dataset.PREDICTIONS, Dataset.DAILY_ACCOUNT_ACTIVITY, Dataset.MERCHANT_DAILY_STATS)
#: The gold dataset each gold table is published as.
GOLD_DATASETS: Mapping[str, Dataset] = MappingProxyType(
    {GOLD_ACCOUNT.name: Dataset.DAILY_ACCOUNT_ACTIVITY, GOLD_MERCHANT.name: Dataset.MERCHANT_DAILY_STATS}
)


def dataset_schema(dataset: Dataset) -> pa.Schema:
    return DATASET_SCHEMAS[dataset]
