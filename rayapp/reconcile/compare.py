"""Comparing one key range of a view: rows matched by key, contents column by column after
normalising both sides the same way: cast to the view's schema (timestamps to UTC, decimals to its
scale), sorted by key, one row per key (the last). Floats are equal within 1e-9 (relative above 1):
stores hand doubles back through text or other float widths. Pure: pyarrow only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.sinks.views import View

EXAMPLES = 5
FLOAT_TOLERANCE = 1e-9
_STORE = "\x00store"  # suffix of the store side's columns in the join
_SIDE = "\x00side"


def normalised(view: View, rows: pa.Table) -> pa.Table:
    """The view's columns of ``rows`` as compared: cast to the view's schema, sorted by key, a key
    held twice counted once (its last row)."""
    rows = rows.select(view.schema.names).cast(view.schema)
    if rows.num_rows < 2:
        return rows
    rows = rows.take(pc.sort_indices(rows, sort_keys=[(k, "ascending") for k in view.key]))  # stable: repeats keep their order
    repeated = None  # row i has the key of row i + 1
    for k in view.key:
        col = rows[k].combine_chunks()
        same = pc.fill_null(pc.equal(col.slice(0, len(col) - 1), col.slice(1)), False)
        repeated = same if repeated is None else pc.and_(repeated, same)
    if not pc.any(repeated).as_py():
        return rows
    return rows.filter(pa.concat_arrays([pc.invert(repeated), pa.array([True])]))


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.ChunkedArray:
    """Null-aware equality: two nulls are equal, and so are two NaNs; floats within ``FLOAT_TOLERANCE``."""
    if pa.types.is_floating(a.type):
        scale = pc.max_element_wise(pc.abs(a), pa.scalar(1.0, a.type))
        close = pc.less_equal(pc.abs(pc.subtract(a, b)), pc.multiply(scale, FLOAT_TOLERANCE))
        same = pc.fill_null(pc.or_(pc.or_(pc.equal(a, b), close), pc.and_(pc.is_nan(a), pc.is_nan(b))), False)  # equal: infinities
    else:
        same = pc.fill_null(pc.equal(a, b), False)
    return pc.or_(same, pc.and_(pc.is_null(a), pc.is_null(b)))


def _aligned(view: View, want: pa.Table, have: pa.Table) -> bool:
    """Whether both sorted sides hold exactly the same (non-null) keys, the usual case: then rows
    compare position by position and no join is needed."""
    if want.num_rows != have.num_rows or any(t[k].null_count for t in (want, have) for k in view.key):
        return False
    return all(want[k].equals(have[k]) for k in view.key)


def _keys(view: View, rows: pa.Table) -> list[tuple[Any, ...]]:
    return list(zip(*(rows[k].to_pylist() for k in view.key)))


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
    want, have = normalised(view, lake_rows), normalised(view, store_rows)
    if _aligned(view, want, have):
        both = want
        for c in view.compared:
            both = both.append_column(c + _STORE, have[c])
        in_lake = in_store = pa.repeat(True, both.num_rows)
    else:
        want = want.append_column(_SIDE, pa.repeat(True, want.num_rows))
        have = have.rename_columns([n if n in view.key else n + _STORE for n in have.column_names])
        have = have.append_column(_SIDE + _STORE, pa.repeat(True, have.num_rows))
        both = want.join(have, list(view.key), join_type="full outer", use_threads=False)
        in_lake, in_store = pc.is_valid(both[_SIDE]), pc.is_valid(both[_SIDE + _STORE])
    same = pa.repeat(True, both.num_rows)
    for c in view.compared:
        same = pc.and_(same, _same(both[c], both[c + _STORE]))
    missing = _keys(view, both.filter(pc.invert(in_store)))
    extra = _keys(view, both.filter(pc.invert(in_lake)))
    different = _keys(view, both.filter(pc.and_(pc.and_(in_lake, in_store), pc.invert(same))))
    diff.checked += both.num_rows
    diff.add("missing", missing)
    diff.add("extra", extra)
    diff.add("different", different)
    return missing + different, extra
