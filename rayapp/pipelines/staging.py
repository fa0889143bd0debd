"""Staging files for key-partitioned plans: Arrow IPC under ``<lake>/_staging/<run id>/``.

A stage writes its rows split by ``hash(key) % P``; the next stage reads one partition per
task. The files live on the lake's storage, so every node sees them; they are removed when
the run ends.
"""

from __future__ import annotations

import logging
import posixpath
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from rayapp.lake import Lake
from rayapp.urls import is_remote

logger = logging.getLogger(__name__)


def partition_ids(keys: pa.Array, partitions: int) -> np.ndarray:
    import polars as pl

    return (pl.Series(keys).hash(seed=7) % partitions).to_numpy().astype(np.int64)


def write_ipc(lake: Lake, path_uri: str, table: pa.Table) -> None:
    """Staging files are Arrow IPC (compressed per the ``staging_compression`` setting): written and read
    back at memory speed, never kept."""
    fs, path = lake.arrow_fs(path_uri)
    if not is_remote(path_uri):
        fs.create_dir(posixpath.dirname(path), recursive=True)
    codec = lake.settings.staging_compression
    options = pa.ipc.IpcWriteOptions(compression=None if codec == "none" else codec)
    with fs.open_output_stream(path) as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)


def _ipc_files(lake: Lake, dir_uri: str) -> tuple[Any, list[str]]:
    from pyarrow.fs import FileSelector

    fs, path = lake.arrow_fs(dir_uri)
    try:
        infos = fs.get_file_info(FileSelector(path, allow_not_found=True))
    except FileNotFoundError:
        return fs, []
    return fs, sorted(info.path for info in infos if info.path.endswith(".arrow"))


def read_ipc_dir(lake: Lake, dir_uri: str, schema: pa.Schema | None = None) -> pa.Table:
    """Every staging file under ``dir_uri`` as one table (cast to ``schema`` when given)."""
    fs, paths = _ipc_files(lake, dir_uri)
    tables = []
    for path in paths:
        with fs.open_input_file(path) as fh:
            tables.append(pa.ipc.open_file(fh).read_all())
    if not tables:
        return schema.empty_table() if schema is not None else pa.table({})
    table = pa.concat_tables(tables)
    return table.cast(schema) if schema is not None else table


def stream_ipc_dir(lake: Lake, dir_uri: str, schema: pa.Schema) -> pa.RecordBatchReader:
    """The staging files under ``dir_uri`` as one stream of ``schema`` batches, a file at a time (memory
    bounded by the largest file, not their sum)."""
    fs, paths = _ipc_files(lake, dir_uri)

    def batches() -> Iterator[pa.RecordBatch]:
        for path in paths:
            with fs.open_input_file(path) as fh:
                reader = pa.ipc.open_file(fh)
                for i in range(reader.num_record_batches):
                    yield from pa.Table.from_batches([reader.get_batch(i)]).cast(schema).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())


def split_write(lake: Lake, table: pa.Table, key: str, partitions: int, dir_uri: str, name: str) -> None:
    """Write ``table`` as ``<dir_uri>/p=NNNN/<name>`` files, one per key partition present."""
    if table.num_rows == 0:
        return
    pids = partition_ids(table[key], partitions)
    order = np.argsort(pids, kind="stable")
    table = table.take(pa.array(order))
    bounds = np.searchsorted(pids[order], np.arange(partitions + 1))
    for p in range(partitions):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        if hi > lo:
            write_ipc(lake, f"{dir_uri}/p={p:04d}/{name}", table.slice(lo, hi - lo))
