"""What every store plug-in shares: the sink interface, the store declaration, transient-error
classification and bounded retries with exponential backoff and jitter.

A sink is shaped like Ray's ``Datasink``: ``__init__`` only stores its URL and options,
``on_write_start`` does idempotent setup (tables, constraints, migrations), ``write`` upserts
one Arrow block into one logical table, ``close`` releases the client. Writer actors
(:mod:`rayapp.publish.writers`) own one sink each.

A store module declares ``STORE = StoreSpec(...)``: its name, the Settings field holding its URL,
the URL schemes it understands (embedded ones need a single writer), its options, the datasets
it takes. :mod:`rayapp.sinks` derives the registry from those declarations.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import DATASET_KEYS, Dataset, dataset_schema
from rayapp.errors import RayappError
from rayapp.urls import redact_url

if TYPE_CHECKING:
    from rayapp.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
O = TypeVar("O")

#: Primary key of each dataset (re-exported for the store modules).
KEYS = DATASET_KEYS


class SinkError(RayappError):
    """A store rejected a write; ``transient`` says whether retrying may help."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class StoreSink(ABC, Generic[O]):
    """One store behind one URL; backends of a store share this interface."""

    def __init__(self, url: str, options: O) -> None:
        self.url = url
        self.options = options

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

    def finish(self, dataset: Dataset | None = None) -> None:
        """End what the run's writes (of ``dataset``, or all) left open, once they are all done
        (PostgreSQL: rebuild the indexes of a first load). Safe to call from every writer, and
        when nothing is open."""

    @abstractmethod
    def close(self) -> None:
        """Release clients (safe to call twice)."""

    def example_query(self) -> str:
        """A one-line command a user can run to look at the store."""
        return ""

    def scan(self, view: str, lo: str, hi: str) -> pa.Table:
        """The live rows of a view (:mod:`rayapp.sinks.views`) whose first key column is in
        ``[lo, hi)``, with the view's schema: what ``reconcile`` compares with the lake."""
        raise SinkError(f"{type(self).__name__} cannot be read back for reconcile")


@dataclass(frozen=True)
class BatchOptions:
    """Options of a store that needs only its batch size."""

    batch_rows: int = 50_000

    @classmethod
    def from_settings(cls, settings: Settings, field: str = "writer_batch_rows") -> "BatchOptions":
        """The batch size from Settings ``field`` (``RAYAPP_WRITER_BATCH_ROWS`` unless a store names another)."""
        return cls(batch_rows=int(getattr(settings, field)))


@dataclass(frozen=True)
class StoreSpec(Generic[O]):
    """A store plug-in's declaration (see the module docstring)."""

    name: str
    setting: str
    schemes: tuple[str, ...]
    embedded_schemes: tuple[str, ...]
    default_dir: str
    datasets: tuple[Dataset, ...]
    sink: type[StoreSink[O]]
    options: Callable[[Settings], O]
    #: Where reports list the store (lower first).
    order: int = 100
    #: What ``reconcile`` compares (:data:`rayapp.sinks.views.VIEWS` names; default: the datasets).
    views: tuple[str, ...] = ()
    #: The embedded engine is a server process that other processes connect to (pgserver), so it
    #: takes a pool of writers like a server; otherwise one writer process owns the files.
    embedded_server: bool = False

    def view_names(self) -> tuple[str, ...]:
        return self.views or tuple(d.value for d in self.datasets)

    def url(self, settings: Settings) -> str:
        """The store URL from Settings, or the embedded default under ``data_dir``."""
        value = getattr(settings, self.setting)
        if value is not None:
            return str(value.get_secret_value())
        return f"{self.embedded_schemes[0]}://{settings.data_dir / self.default_dir}"

    def is_embedded(self, url: str) -> bool:
        """Whether the URL names an engine living in a local directory (one writer process, this node)."""
        return urlsplit(url).scheme in self.embedded_schemes

    def single_writer(self, url: str) -> bool:
        return self.is_embedded(url) and not self.embedded_server

    def batch_rows(self, settings: Settings) -> int:
        return int(getattr(self.options(settings), "batch_rows"))

    def make(self, settings: Settings, url: str | None = None) -> StoreSink[O]:
        """The sink at ``url`` (default: from Settings); nothing is opened until ``on_write_start``."""
        return self.sink(url or self.url(settings), self.options(settings))

    def takes(self, dataset: Dataset) -> bool:
        return dataset in self.datasets

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


#: Schema metadata of a block ``reconcile --repair`` sends: the store replaces what it holds for the
#: block's keys whatever its version (rows, tombstones), then writes the block's live rows.
REPAIR = {b"rayapp.repair": b"true"}


def is_repair(block: pa.Table) -> bool:
    return (block.schema.metadata or {}).get(b"rayapp.repair") == b"true"


def conform(dataset: Dataset, block: pa.Table) -> pa.Table:
    """``block`` with exactly the dataset's columns and types (a clear error if one is missing).
    A block without ``_deleted`` (a dead letter written before tombstones existed) is all live rows."""
    schema = dataset_schema(dataset)
    if "_deleted" in schema.names and "_deleted" not in block.column_names:
        block = block.append_column("_deleted", pa.repeat(pa.scalar(False), block.num_rows))
    missing = [f.name for f in schema if f.name not in block.column_names]
    if missing:
        raise SinkError(f"{dataset.value}: block lacks columns {missing}")
    cols = [block[f.name].cast(f.type) for f in schema]
    if "_deleted" in schema.names:
        i = schema.get_field_index("_deleted")
        cols[i] = pc.fill_null(cols[i], False)
    return pa.table(cols, schema=schema.with_metadata(block.schema.metadata or {}))


def split_deleted(block: pa.Table) -> tuple[pa.Table, pa.Table]:
    """``(live rows, tombstones)`` of a conformed block (no filter pass over a block without tombstones)."""
    deleted = block["_deleted"]
    if not pc.any(deleted).as_py():
        return block, block.slice(0, 0)
    return block.filter(pc.invert(deleted)), block.filter(deleted)
