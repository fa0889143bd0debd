"""What every store sink shares: the interface, the datasets it may receive, transient-error
classification and bounded retries with exponential backoff and jitter.

A sink is shaped like Ray's ``Datasink``: ``__init__`` only stores its URL and options,
``on_write_start`` does idempotent setup (tables, constraints, migrations), ``write`` upserts
one Arrow block into one logical table, ``close`` releases the client. Writer actors
(:mod:`rayapp.pipelines.publish`) own one sink each.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, ClassVar, TypeVar
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa

from rayapp.errors import RayappError
from rayapp.settings import redact_url

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Dataset(str, Enum):
    """Logical tables ``publish`` produces; each sink declares which ones it takes."""

    TRANSACTIONS = "transactions"
    PREDICTIONS = "predictions"
    DAILY_ACCOUNT_ACTIVITY = "daily_account_activity"
    MERCHANT_DAILY_STATS = "merchant_daily_stats"
    MERCHANT_VECTORS = "merchant_vectors"
    TRANSACTION_VECTORS = "transaction_vectors"


class SinkError(RayappError):
    """A store rejected a write; ``transient`` says whether retrying may help."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class SinkOptions:
    """Tuning shared by every sink (from Settings)."""

    batch_rows: int = 50_000
    pinecone_api_key: str | None = None
    pinecone_host: str | None = None
    vector_dimension: int = 384


class StoreSink(ABC):
    """One store behind one URL; backends of a store share this interface."""

    store: ClassVar[str]
    datasets: ClassVar[tuple[Dataset, ...]]
    #: Embedded engines allow one writer process: publish gives them exactly one actor.
    single_writer: ClassVar[bool] = False

    def __init__(self, url: str, options: SinkOptions | None = None) -> None:
        self.url = url
        self.options = options or SinkOptions()

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    @abstractmethod
    def on_write_start(self) -> None:
        """Connect and create what is missing (idempotent)."""

    @abstractmethod
    def write(self, dataset: Dataset, block: pa.Table) -> int:
        """Upsert ``block`` (rows newer than what the store holds win); returns rows sent."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Rows / nodes / relationships / vectors per table, for reports and the demo."""

    @abstractmethod
    def close(self) -> None:
        """Release clients (safe to call twice)."""

    def example_query(self) -> str:
        """A one-line command a user can run to look at the store."""
        return ""


# ---- transient errors and retries ----------------------------------------------------------------

_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH}
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_TRANSIENT_NAMES = (
    "OperationalError",  # psycopg / sqlalchemy: connection lost or refused
    "ServiceUnavailable",  # neo4j
    "SessionExpired",
    "TransientError",
    "ConnectTimeout",
    "ReadTimeout",
    "ConnectError",
    "RemoteProtocolError",
    "PoolTimeout",
)
_TRANSIENT_TEXT = ("connection refused", "timed out", "timeout", "temporarily unavailable", "too many requests", "connection reset")


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may succeed: refused/reset connections, timeouts, 429 and 5xx."""
    if isinstance(exc, SinkError):
        return exc.transient
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (ConnectionError, TimeoutError, socket.timeout)):
            return True
        if isinstance(cur, OSError) and cur.errno in _TRANSIENT_ERRNOS:
            return True
        status = getattr(cur, "status", None) or getattr(cur, "status_code", None)
        if isinstance(status, int) and status in _TRANSIENT_STATUS:
            return True
        if any(type(c).__name__ in _TRANSIENT_NAMES for c in type(cur).__mro__ if c is not object):
            return True
        if any(t in str(cur).lower() for t in _TRANSIENT_TEXT):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter: ``sleep ∈ [0, min(cap, base·2^k)]``."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 20.0

    def delays(self) -> list[float]:
        return [random.uniform(0, min(self.cap_s, self.base_s * 2**k)) for k in range(self.attempts - 1)]

    def call(self, fn: Callable[[], T], what: str, on_retry: Callable[[BaseException], None] | None = None) -> tuple[T, int]:
        """Run ``fn`` until it succeeds, fails permanently, or attempts run out.

        Returns:
            ``(result, attempts_used)``.

        Raises:
            RetryExhausted: carrying the last error and the attempts made.
        """
        delays = self.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(), attempt
            except Exception as exc:  # noqa: BLE001 - classified below
                transient = is_transient(exc)
                if not transient or attempt >= self.attempts:
                    raise RetryExhausted(exc, attempt, transient) from exc
                delay = delays[attempt - 1]
                logger.warning("%s failed (attempt %d/%d, retry in %.2fs): %s", what, attempt, self.attempts, delay, short_error(exc))
                if on_retry is not None:
                    on_retry(exc)
                time.sleep(delay)


class RetryExhausted(Exception):
    def __init__(self, error: BaseException, attempts: int, transient: bool) -> None:
        super().__init__(short_error(error))
        self.error = error
        self.attempts = attempts
        self.transient = transient


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


# ---- URLs --------------------------------------------------------------------------------------------


def url_path(url: str) -> str:
    """The filesystem path of an embedded-engine URL (``chdb:///abs/path`` -> ``/abs/path``)."""
    parts = urlsplit(url)
    path = (parts.netloc + parts.path) if parts.netloc not in ("", "localhost") else parts.path
    if not path:
        raise RayappError(f"{redact_url(url)}: the URL names no path")
    return path


def url_query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def to_records(block: pa.Table) -> list[dict[str, Any]]:
    """Arrow rows as parameter dicts (decimals as floats: Cypher and JSON have no decimal type).
    Column-wise ``to_pylist`` + ``zip`` is ~3x faster than ``Table.to_pylist``."""
    names = block.column_names
    cols = []
    for col in block.columns:
        if pa.types.is_decimal(col.type):
            col = col.cast(pa.float64())
        cols.append(col.to_pylist())
    return [dict(zip(names, values)) for values in zip(*cols)]


# ---- what publish sends ------------------------------------------------------------------------------


def _schemas() -> dict[Dataset, pa.Schema]:
    from rayapp.transforms import silver as tx

    ts = pa.timestamp("us", tz="UTC")
    prediction = [
        pa.field("model_version", pa.string()),
        pa.field("fraud_score", pa.float64()),
        pa.field("is_fraud_pred", pa.bool_()),
        pa.field("scored_at", ts),
    ]
    return {
        # silver's business columns, its change time and the latest prediction; _version orders versions.
        Dataset.TRANSACTIONS: pa.schema([*tx.BUSINESS_FIELDS, pa.field("_updated_at", ts), *prediction, pa.field("_version", ts)]),
        Dataset.PREDICTIONS: pa.schema([pa.field("transaction_id", pa.string()), *prediction, pa.field("_version", ts)]),
        Dataset.DAILY_ACCOUNT_ACTIVITY: pa.schema([*tx.DAILY_ACCOUNT_SCHEMA, pa.field("_version", pa.int64())]),
        Dataset.MERCHANT_DAILY_STATS: pa.schema([*tx.MERCHANT_DAILY_SCHEMA, pa.field("_version", pa.int64())]),
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
        # rows whose vector is null fell below the score threshold: the store deletes them.
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
                pa.field("event_time", ts),
                pa.field("_version", ts),
            ]
        ),
    }


_SCHEMAS: dict[Dataset, pa.Schema] = {}


def dataset_schema(dataset: Dataset) -> pa.Schema:
    if not _SCHEMAS:
        _SCHEMAS.update(_schemas())
    return _SCHEMAS[dataset]


#: Primary key of each dataset.
KEYS: dict[Dataset, tuple[str, ...]] = {
    Dataset.TRANSACTIONS: ("transaction_id",),
    Dataset.PREDICTIONS: ("transaction_id", "model_version"),
    Dataset.DAILY_ACCOUNT_ACTIVITY: ("account_id", "activity_date"),
    Dataset.MERCHANT_DAILY_STATS: ("merchant_id", "activity_date"),
    Dataset.MERCHANT_VECTORS: ("id",),
    Dataset.TRANSACTION_VECTORS: ("id",),
}


def conform(dataset: Dataset, block: pa.Table) -> pa.Table:
    """``block`` with exactly the dataset's columns and types (a clear error if one is missing)."""
    schema = dataset_schema(dataset)
    missing = [f.name for f in schema if f.name not in block.column_names]
    if missing:
        raise SinkError(f"{dataset.value}: block lacks columns {missing}")
    return pa.table([block[f.name].cast(f.type) for f in schema], schema=schema)
