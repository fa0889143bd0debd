"""Arrow schemas: the raw-input contract and the bronze / ledger tables."""

from __future__ import annotations

import pyarrow as pa

#: The raw-input contract: columns of a landing file, in order. Extra columns may appear.
CONTRACT_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "account_id",
    "merchant_id",
    "merchant_name",
    "merchant_category",
    "amount",
    "currency",
    "country",
    "channel",
    "device_id",
    "ip_address",
    "status",
    "description",
    "is_fraud",
    "event_time",
    "updated_at",
)

UTC_US = pa.timestamp("us", tz="UTC")

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

#: One record per job run.
RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job", pa.string(), nullable=False),
        pa.field("parent_run_id", pa.string()),
        pa.field("args", pa.string()),  # JSON, secrets redacted
        pa.field("started_at", UTC_US, nullable=False),
        pa.field("ended_at", UTC_US),
        pa.field("status", pa.string(), nullable=False),  # succeeded | failed | partial
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
        pa.field("dataset", pa.string(), nullable=False),  # the store table / collection the batch was for
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
