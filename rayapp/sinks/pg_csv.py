"""CSV as PostgreSQL's ``COPY`` reads and writes it, to and from Arrow tables (no Python per row).
Pure: pyarrow only."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv


def csv_ready(table: pa.Table) -> pa.Table:
    """Timestamps as UTC text with an explicit offset: Arrow's CSV writer formats tz-aware
    timestamps ~40x slower than a cast to string, and PostgreSQL reads ``+00`` exactly."""
    cols = []
    for f in table.schema:
        col = table[f.name]
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            naive = pc.cast(pc.cast(col, pa.timestamp(f.type.unit, tz="UTC")), pa.timestamp(f.type.unit))
            col = pc.binary_join_element_wise(pc.cast(naive, pa.string()), "+00", "")
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def csv_bytes(table: pa.Table) -> memoryview:
    """``table`` as ``COPY … FROM STDIN (FORMAT csv)`` reads it. Strings are always quoted, so ""
    stays an empty string and an unquoted empty field is NULL."""
    buf = io.BytesIO()
    pcsv.write_csv(csv_ready(table), buf, pcsv.WriteOptions(include_header=False))
    return buf.getbuffer()


def read_csv(data: bytes, schema: pa.Schema) -> pa.Table:
    """Rows PostgreSQL's ``COPY … TO STDOUT (FORMAT csv)`` wrote (ISO dates, UTC offsets, ``t``/``f``,
    NULL unquoted and empty, "" an empty string) as ``schema``: Arrow's parser, no Python per row."""
    if not data:
        return schema.empty_table()
    return pcsv.read_csv(io.BytesIO(data), pcsv.ReadOptions(column_names=schema.names), pcsv.ParseOptions(newlines_in_values=True),
                         pcsv.ConvertOptions(column_types=schema, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
                                             true_values=["t"], false_values=["f"])).cast(schema)  # fmt: skip
