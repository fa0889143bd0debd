"""API keys of the consumer API, kept in the ledger table ``_ledger/api_keys``.

A key reads ``rayapp_<key id>_<secret>``; it is shown once, when it is created, and only its
SHA-256 is stored (the secret is 256 random bits, so a plain hash is enough: there is nothing to
guess). Each key carries scopes; a request needs a live key holding the route's scope.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import pyarrow as pa

from rayapp.catalog import API_KEYS_SCHEMA, LEDGER_API_KEYS
from rayapp.errors import ConfigError
from rayapp.lake import Lake
from rayapp.ledger import utcnow

PREFIX = "rayapp"


class Scope(str, Enum):
    """What a key may do: read datasets, search vectors, look rows up, score and embed."""

    DATASETS_READ = "datasets:read"
    SEARCH = "search"
    LOOKUP = "lookup"
    SCORE = "score"


def parse_scopes(text: str) -> tuple[Scope, ...]:
    """``"datasets:read,search"`` → scopes, in a stable order.

    Raises:
        ConfigError: an unknown or missing scope.
    """
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ConfigError(f"name at least one scope: {', '.join(s.value for s in Scope)}")
    known = {s.value: s for s in Scope}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown scope {unknown[0]!r}; scopes: {', '.join(known)}")
    return tuple(s for s in Scope if s.value in names)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A key as stored (never the key itself)."""

    key_id: str
    name: str
    scopes: tuple[Scope, ...]
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: Scope | None) -> bool:
        return scope is None or scope in self.scopes

    def public(self) -> dict[str, object]:
        return {"key_id": self.key_id, "name": self.name, "scopes": [s.value for s in self.scopes],
                "created_at": self.created_at.isoformat(), "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}  # fmt: skip


class KeyStore:
    """Create, list, revoke and check API keys of one lake.

    Args:
        cache_s: how long :meth:`verify` trusts its copy of the table (a revoked key stops working
            within this many seconds in every API replica).
    """

    def __init__(self, lake: Lake, cache_s: float = 2.0) -> None:
        self.lake = lake
        self.cache_s = cache_s
        self._cached: dict[str, ApiKey] | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def _load(self) -> dict[str, ApiKey]:
        table = self.lake.read(LEDGER_API_KEYS)
        latest: dict[str, ApiKey] = {}
        if table.num_rows:
            for row in table.sort_by([("recorded_at", "ascending")]).to_pylist():
                latest[row["key_id"]] = ApiKey(
                    row["key_id"], row["name"], tuple(Scope(s) for s in row["scopes"].split(",") if s), row["key_hash"],
                    row["created_at"], row["revoked_at"],
                )  # fmt: skip
        return latest

    def _record(self, key: ApiKey) -> None:
        row = {"key_id": key.key_id, "name": key.name, "scopes": ",".join(s.value for s in key.scopes), "key_hash": key.key_hash,
               "created_at": key.created_at, "revoked_at": key.revoked_at, "recorded_at": utcnow()}  # fmt: skip
        self.lake.append(LEDGER_API_KEYS, pa.Table.from_pylist([row], schema=API_KEYS_SCHEMA))
        self._cached = None

    def create(self, name: str, scopes: tuple[Scope, ...]) -> tuple[ApiKey, str]:
        """A new key; returns its record and the key itself (shown once, stored nowhere).

        Raises:
            ConfigError: an empty name, or a live key already has this name.
        """
        name = name.strip()
        if not name or len(name) > 100:
            raise ConfigError("a key needs a name of 1 to 100 characters")
        if any(k.name == name and k.active for k in self._load().values()):
            raise ConfigError(f"a live key is already named {name!r}: revoke it first or choose another name")
        key_id = secrets.token_hex(6)
        key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id, name, scopes, key_hash(key), utcnow())
        self._record(record)
        return record, key

    def list(self, include_revoked: bool = False) -> list[ApiKey]:
        keys = sorted(self._load().values(), key=lambda k: k.created_at)
        return [k for k in keys if include_revoked or k.active]

    def revoke(self, ident: str) -> ApiKey:
        """Revoke the live key with this id or name.

        Raises:
            ConfigError: no live key matches.
        """
        found = [k for k in self._load().values() if k.active and ident in (k.key_id, k.name)]
        if not found:
            raise ConfigError(f"no live key with id or name {ident!r} (see `rayapp keys list`)")
        revoked = ApiKey(**{**found[0].__dict__, "revoked_at": utcnow()})
        self._record(revoked)
        return revoked

    def _lookup(self, key_id: str, reload_missing: bool) -> ApiKey | None:
        with self._lock:
            age = time.monotonic() - self._loaded_at
        if reload_missing and age < 0.25:
            time.sleep(0.25 - age)  # outside the lock: valid keys are not held up
        with self._lock:
            age = time.monotonic() - self._loaded_at
            if self._cached is None or age > self.cache_s or (reload_missing and age >= 0.25):
                self._cached = self._load()
                self._loaded_at = time.monotonic()
            return self._cached.get(key_id)

    def verify(self, key: str) -> ApiKey | None:
        """The live key ``key`` is, or None (unknown, malformed or revoked)."""
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            return None
        record = self._lookup(parts[1], reload_missing=False)
        if record is None:  # maybe a key created since the last read: re-read, at most every 0.25 s
            record = self._lookup(parts[1], reload_missing=True)
        if record is None or not record.active or not hmac.compare_digest(record.key_hash, key_hash(key)):
            return None
        return record
