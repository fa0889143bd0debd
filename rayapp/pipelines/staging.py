"""Staging files for key-partitioned plans: Arrow IPC under ``<lake>/_staging/<run id>/``.

A stage writes its rows split by ``hash(key) % P``; the next stage reads one partition per
task. The files live on the lake's storage, so every node sees them; they are removed when
the run ends.
"""

from __future__ import annotations

import logging
import posixpath

import numpy as np
import pyarrow as pa

from rayapp.lake import Lake
from rayapp.urls import is_remote

logger = logging.getLogger(__name__)


def partition_ids(keys: pa.Array, partitions: int) -> np.ndarray:
    import polars as pl

    return (pl.Series(keys).hash(seed=7) % partitions).to_numpy().astype(np.int64)


def write_ipc(lake: Lake, path_uri: str, table: pa.Table) -> None:
    """Staging files are Arrow IPC: written and read back at memory speed, never kept."""
    fs, path = lake.arrow_fs(path_uri)
    if not is_remote(path_uri):
        fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_ipc_dir(lake: Lake, dir_uri: str, schema: pa.Schema | None = None) -> pa.Table:
    """Every staging file under ``dir_uri`` as one table (cast to ``schema`` when given)."""
    from pyarrow.fs import FileSelector

    empty = schema.empty_table() if schema is not None else pa.table({})
    fs, path = lake.arrow_fs(dir_uri)
    try:
        infos = fs.get_file_info(FileSelector(path, allow_not_found=True))
    except FileNotFoundError:
        return empty
    tables = []
    for info in infos:
        if info.path.endswith(".arrow"):
            with fs.open_input_file(info.path) as fh:
                tables.append(pa.ipc.open_file(fh).read_all())
    if not tables:
        return empty
    table = pa.concat_tables(tables)
    return table.cast(schema) if schema is not None else table


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
