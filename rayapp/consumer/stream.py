"""One Parquet or CSV file written from record batches and handed out piece by piece (bounded memory)."""

from __future__ import annotations

import io
from typing import Any, Iterator

import pyarrow as pa


class _Spool(io.RawIOBase):
    """A write-only file that hands out what was written since the last ``take``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.parts.append(data)
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def stream_file(schema: pa.Schema, batches: Iterator[pa.RecordBatch], fmt: str) -> Iterator[bytes]:
    """One Parquet or CSV file of ``batches``, handed out in pieces as it is written (memory: one batch)."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    spool = _Spool()
    sink = pa.PythonFile(spool, mode="w")
    writer: Any = pq.ParquetWriter(sink, schema) if fmt == "parquet" else pcsv.CSVWriter(sink, schema)
    try:
        for batch in batches:
            if batch.num_rows:
                writer.write_table(pa.Table.from_batches([batch])) if fmt == "parquet" else writer.write_batch(batch)
                chunk = spool.take()
                if chunk:
                    yield chunk
        writer.close()
        writer = None
        yield spool.take()
    finally:
        if writer is not None:
            writer.close()
