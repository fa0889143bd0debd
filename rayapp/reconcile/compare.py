"""Comparing one key range of a view: rows matched by key, contents by a hash of the normalised
compared columns (floats to 9 decimals, decimals exact, timestamps in UTC). Pure: pyarrow only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa

from rayapp.sinks.views import View

EXAMPLES = 5


def _norm(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 9)
    if isinstance(v, Decimal):
        return str(v.normalize()) if v == v else "NaN"
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
    return v


def row_hashes(view: View, rows: pa.Table) -> dict[tuple[Any, ...], str]:
    """Key → content hash of every row (a key held twice counts once, the last)."""
    rows = rows.select(view.schema.names).cast(view.schema)
    keys = [rows[k].to_pylist() for k in view.key]
    values = [rows[c].to_pylist() for c in view.compared]
    out = {}
    for i, key in enumerate(zip(*keys)):
        content = repr(tuple(_norm(col[i]) for col in values)).encode()
        out[tuple(_norm(k) for k in key)] = hashlib.blake2b(content, digest_size=12).hexdigest()
    return out


@dataclass
class Diff:
    """Differences of one store's view, summed over key ranges; examples are the first few keys."""

    checked: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    examples: dict[str, list[str]] = field(default_factory=lambda: {"missing": [], "extra": [], "different": []})

    @property
    def total(self) -> int:
        return self.missing + self.extra + self.different

    def add(self, kind: str, keys: list[tuple[Any, ...]]) -> None:
        setattr(self, kind, getattr(self, kind) + len(keys))
        room = EXAMPLES - len(self.examples[kind])
        self.examples[kind] += ["/".join(str(k) for k in key) for key in sorted(keys)[: max(0, room)]]

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "missing": self.missing, "extra": self.extra, "different": self.different,
                "total": self.total, "examples": {k: v for k, v in self.examples.items() if v}}  # fmt: skip


def compare(view: View, lake_rows: pa.Table, store_rows: pa.Table, diff: Diff) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Add one key range's differences to ``diff``; returns ``(keys to re-send, keys to delete)``."""
    want = row_hashes(view, lake_rows)
    have = row_hashes(view, store_rows)
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    different = [k for k, h in want.items() if k in have and have[k] != h]
    diff.checked += len(want.keys() | have.keys())
    diff.add("missing", missing)
    diff.add("extra", extra)
    diff.add("different", different)
    return missing + different, extra
