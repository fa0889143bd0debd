"""Landing bytes -> bronze Arrow: parse CSV / JSON Lines / Parquet faithfully as text.

Pure functions (bytes in, Arrow out): no Ray, no I/O. Bronze never rejects a row; a file that
cannot be parsed at all raises :class:`FileRejectedError` with the parser's reason.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayapp.errors import FileRejectedError
from rayapp.catalog import BRONZE_SCHEMA, CONTRACT_COLUMNS

FORMAT_BY_SUFFIX = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def detect_format(path: str) -> str | None:
    """Landing format from a file name, or None for files that are not landing data."""
    lower = path.lower()
    for suffix, fmt in FORMAT_BY_SUFFIX.items():
        if lower.endswith(suffix):
            return fmt
    return None


@dataclass(frozen=True)
class Parsed:
    """A parsed landing file: contract columns as text, extras as JSON fragments."""

    table: pa.Table  # contract columns present in the file, as pa.string()
    extras: dict[str, pa.Array]  # extra column name -> JSON value text (or null)
    #: A note for the file ledger when rows were kept apart (a truncated last row), else None.
    note: str | None = None


#: The key ``_extra`` carries for a row that could not be parsed whole (the ``malformed_row`` rule).
MALFORMED = "_malformed"


def parse_landing(data: bytes, fmt: str) -> Parsed:
    """Parse a landing file's bytes.

    Raises:
        FileRejectedError: the file cannot be parsed at all (reason in the message).
    """
    broken: dict[int, str] = {}  # row index -> why it is malformed (a truncated last row)
    if fmt == "csv":
        table, broken, json_typed = *_parse_csv(data), False
    elif fmt == "jsonl":
        table, broken, json_typed = *_parse_jsonl(data), True
    elif fmt == "parquet":
        table, json_typed = _parse_parquet(data), True
    else:
        raise FileRejectedError(f"unsupported format {fmt!r}")
    parsed = _split_contract(table, json_typed)
    if not broken:
        return parsed
    marks = pa.array([json.dumps(broken[i]) if i in broken else "null" for i in range(table.num_rows)], pa.string())
    note = "; ".join(broken.values()) + f": kept {table.num_rows - len(broken)} complete row(s), the broken one goes to quarantine (malformed_row)"
    return Parsed(parsed.table, {**parsed.extras, MALFORMED: marks}, note)


def _split_contract(table: pa.Table, json_typed: bool) -> Parsed:
    canonical: dict[str, str] = {}
    for name in table.column_names:
        key = name.strip().lower()
        if key in CONTRACT_COLUMNS:
            if key in canonical.values():
                raise FileRejectedError(f"column {key!r} appears more than once")
            canonical[name] = key
    if not canonical:
        shown = ", ".join(table.column_names[:8]) or "none"
        raise FileRejectedError(f"no contract columns (expected transaction_id, account_id, …); found: {shown}")
    contract = {canonical[n]: _as_text(table[n]) for n in table.column_names if n in canonical}
    n = table.num_rows
    cols = [contract.get(c, pa.nulls(n, pa.string())) for c in CONTRACT_COLUMNS]
    extras = {name: _as_json_value(table[name], json_typed) for name in table.column_names if name not in canonical}
    return Parsed(pa.table(cols, names=list(CONTRACT_COLUMNS)), extras)


# ---- per-format parsers ------------------------------------------------------------------------


def _parse_csv(data: bytes) -> tuple[pa.Table, dict[int, str]]:
    """All-text columns; a truncated last row is kept apart (as a malformed row), a broken row
    elsewhere rejects the file. Reasons name lines and column counts, never row content."""
    import pyarrow.csv as pcsv

    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise FileRejectedError("empty file (no header row)")
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        header = next(csv.reader([first.decode("utf-8")]))
    except UnicodeDecodeError:
        raise FileRejectedError("CSV header is not UTF-8 text") from None
    except (csv.Error, StopIteration) as exc:
        raise FileRejectedError(f"CSV header unreadable: {exc}") from None
    if len(set(header)) != len(header):
        raise FileRejectedError("CSV header has duplicate column names")
    bad: list[Any] = []

    def on_invalid(row: Any) -> str:
        bad.append(row)
        return "skip"

    try:
        table = pcsv.read_csv(
            io.BytesIO(data),
            read_options=pcsv.ReadOptions(column_names=header, skip_rows=1, block_size=1 << 24),
            parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise FileRejectedError(f"CSV parse error: {_without_content(exc)}") from None
    if not bad:
        return table, {}
    last_line = data.rstrip(b"\r\n").rsplit(b"\n", 1)[-1].decode("utf-8", "replace").rstrip("\r")
    row = bad[0]
    where = f"line {row.number}" if row.number is not None else "a row"
    if len(bad) > 1 or row.actual_columns >= row.expected_columns or row.text.rstrip("\r") != last_line:
        raise FileRejectedError(f"CSV parse error at {where}: {row.actual_columns} of {row.expected_columns} columns")
    values = next(csv.reader([row.text]), [])
    tail = pa.table({h: pa.array([values[i] if i < len(values) else None], pa.string()) for i, h in enumerate(header)})
    reason = f"truncated last row ({where}: {row.actual_columns} of {row.expected_columns} columns)"
    return pa.concat_tables([table, tail]), {table.num_rows: reason}


def _parse_jsonl(data: bytes) -> tuple[pa.Table, dict[int, str]]:
    """Typed JSON values; a truncated last line is kept apart (as a malformed row), a broken line
    elsewhere rejects the file. Reasons name the line, never its content."""
    import polars as pl

    if not data.strip():
        return pa.table({"transaction_id": pa.array([], pa.string())}), {}

    def read(payload: bytes) -> pa.Table:
        # Types are inferred over all lines (a column mixing numbers and strings becomes text);
        # typed values are turned back into text by _as_text.
        text = _read_jsonl_text(payload)
        return text if text is not None else pl.read_ndjson(io.BytesIO(payload), infer_schema_length=None).to_arrow()

    try:
        return read(data), {}
    except Exception:  # noqa: BLE001 - polars raises several error types for bad JSON; find the line
        pass
    lines = data.split(b"\n")
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    for k, (number, line) in enumerate(numbered):
        try:
            value = json.loads(line)
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            reason = getattr(exc, "msg", None) or str(exc).split(":")[0]
            if k < len(numbered) - 1:
                raise FileRejectedError(f"JSON Lines parse error at line {number}: {reason}") from None
            body = b"\n".join(ln for _, ln in numbered[:-1])
            try:
                table = read(body) if body else pa.table({"transaction_id": pa.array([], pa.string())})
            except Exception as inner:  # noqa: BLE001
                raise FileRejectedError(f"JSON Lines parse error: {_without_content(inner)}") from None
            tail = pa.table({c: pa.nulls(1, table.schema.field(c).type) for c in table.column_names})
            return pa.concat_tables([table, tail]), {table.num_rows: f"truncated last line (line {number}: {reason})"}
    raise FileRejectedError("JSON Lines parse error (no single line is at fault)")


#: Arrow's JSON reader reads these value types exactly as polars' full inference does.
_AGREED_JSON_TYPES = (pa.string(), pa.null(), pa.bool_(), pa.int64())


def _read_jsonl_text(payload: bytes) -> pa.Table | None:
    """The common case in one pass: Arrow's JSON reader with the contract columns declared as text.

    Returns None, for the full-inference reader to decide, unless every contract value is a string
    and every other column came out as text, boolean, integer or null: a number in a contract
    column, a nested value, a string Arrow would read as a timestamp, a key given twice in a
    record, a contract name in other letter case, or a file with no contract values at all."""
    import pyarrow.json as pjson

    declared = pa.schema([(c, pa.string()) for c in CONTRACT_COLUMNS])
    try:
        table = pjson.read_json(io.BytesIO(payload), parse_options=pjson.ParseOptions(explicit_schema=declared))
    except Exception:  # noqa: BLE001 - Arrow raises several error types; the other reader decides
        return None
    others = table.column_names[len(CONTRACT_COLUMNS) :]
    if any(t not in _AGREED_JSON_TYPES for t in table.schema.types):
        return None
    if any(name.strip().lower() in CONTRACT_COLUMNS for name in others):
        return None
    if all(table[c].null_count == table.num_rows for c in CONTRACT_COLUMNS):
        return None
    return table


def _parse_parquet(data: bytes) -> pa.Table:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileRejectedError(f"Parquet read error: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _without_content(exc: BaseException) -> str:
    """A parser's message without the row text it quotes (reasons land in logs and the ledger)."""
    text = _first_line(exc).removeprefix("CSV parse error: ")
    m = re.search(r"Expected (\d+) columns, got (\d+)", text)
    if m:
        return f"a row has {m.group(2)} of {m.group(1)} columns"
    return text.split(":", 1)[0][:200]


# ---- value conversion --------------------------------------------------------------------------


def _as_text(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column as raw text: strings as they are, typed Parquet/JSON values in ISO / plain form."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if pa.types.is_string(t):
        return arr
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return arr.cast(pa.string())
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_timestamp(t):
        return _timestamp_text(arr)
    if pa.types.is_boolean(t):
        return pc.if_else(arr, "true", "false")
    if pa.types.is_dictionary(t):
        return _as_text(arr.dictionary_decode())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        try:
            return arr.cast(pa.string())
        except pa.ArrowInvalid:
            return pa.array([None if v is None else v.hex() for v in arr.to_pylist()], pa.string())
    if pa.types.is_nested(t):
        return pa.array([None if v is None else json.dumps(v, default=str) for v in arr.to_pylist()], pa.string())
    try:
        return arr.cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string())


def _timestamp_text(arr: pa.Array) -> pa.Array:
    unit = arr.type.unit
    txt = arr.cast(pa.timestamp(unit)).cast(pa.string())  # "YYYY-MM-DD HH:MM:SS[.fff]"
    txt = pc.replace_substring(txt, " ", "T", max_replacements=1)
    if arr.type.tz is not None:
        txt = pc.binary_join_element_wise(txt, "Z", "")  # values are stored as UTC instants
    return txt


def _as_json_value(col: pa.ChunkedArray | pa.Array, json_typed: bool) -> pa.Array:
    """JSON text of each value of an extra column (``null`` for nulls)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if json_typed and (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
        out = arr.cast(pa.string())
    elif json_typed and pa.types.is_boolean(t):
        out = pc.if_else(arr, "true", "false")
    elif pa.types.is_nested(t):
        out = pa.array([None if v is None else json.dumps(v, default=str, separators=(",", ":")) for v in arr.to_pylist()], pa.string())
    else:
        out = _json_quote(_as_text(arr))
    return pc.fill_null(out, "null")


def _json_quote(arr: pa.Array) -> pa.Array:
    if pc.any(pc.match_substring_regex(arr, r"[\x00-\x08\x0b\x0c\x0e-\x1f]")).as_py():
        return pa.array([None if v is None else json.dumps(v) for v in arr.to_pylist()], pa.string())
    s = pc.replace_substring(arr, "\\", "\\\\")
    s = pc.replace_substring(s, '"', '\\"')
    s = pc.replace_substring(s, "\n", "\\n")
    s = pc.replace_substring(s, "\r", "\\r")
    s = pc.replace_substring(s, "\t", "\\t")
    return pc.binary_join_element_wise('"', s, '"', "")


def extra_json(extras: dict[str, pa.Array], n: int) -> pa.Array:
    """The ``_extra`` column: a JSON object of the extra columns per row, null when there are none."""
    if not extras:
        return pa.nulls(n, pa.string())
    parts = [pc.binary_join_element_wise(json.dumps(name) + ":", value, "") for name, value in sorted(extras.items())]
    body = pc.binary_join_element_wise(*parts, ",") if len(parts) > 1 else parts[0]
    return pc.binary_join_element_wise("{", body, "}", "")


def to_bronze(
    parsed: Parsed,
    *,
    batch_id: str,
    ingested_at: datetime,
    source_file: str,
    source_system: str,
) -> pa.Table:
    """Add ingestion metadata to a parsed landing file, giving a table in ``BRONZE_SCHEMA``."""
    n = parsed.table.num_rows
    cols = [parsed.table[c] for c in CONTRACT_COLUMNS]
    cols += [
        extra_json(parsed.extras, n),
        pa.repeat(pa.scalar(batch_id, pa.string()), n),
        pa.repeat(pa.scalar(ingested_at, BRONZE_SCHEMA.field("_ingested_at").type), n),
        pa.repeat(pa.scalar(source_file, pa.string()), n),
        pa.array(np.arange(1, n + 1, dtype=np.int64)),
        pa.repeat(pa.scalar(source_system, pa.string()), n),
    ]
    return pa.Table.from_arrays(cols, schema=BRONZE_SCHEMA)
