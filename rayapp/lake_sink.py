"""A Ray ``Datasink`` appending to a Delta table of the catalog in exactly one commit.

Write tasks write Parquet files under the table root and return ``AddAction``s; the driver
commits them through :meth:`rayapp.lake.Lake.commit` with the run's metadata, so a run is
either entirely in the table or not at all.
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pyarrow as pa
from ray.data import Datasink

from rayapp.catalog import TableDef
from rayapp.lake import Lake
from rayapp.urls import is_remote

logger = logging.getLogger(__name__)


@dataclass
class DeltaWriteResult:
    """What one write task returns to the driver: file actions plus per-task side results."""

    add_actions: list[Any] = field(default_factory=list)
    extra: list[Any] = field(default_factory=list)


class DeltaAppendSink(Datasink):
    """Append to ``table`` in one commit.

    Subclasses may override ``split_block`` to pull side results (e.g. rejection markers) out of
    blocks before they are written; those arrive in ``self.side_results`` on the driver.
    """

    def __init__(self, lake: Lake, table: TableDef, metadata: Mapping[str, str]) -> None:
        self.lake = lake
        self.table = table
        self.metadata = dict(metadata)
        self.write_uuid = uuid.uuid4().hex
        self.side_results: list[Any] = []
        self.committed_version: int | None = None
        self.files_written = 0
        self.rows_written = 0

    # -- hooks for subclasses --
    def split_block(self, table: pa.Table) -> tuple[pa.Table, list[Any]]:
        return table, []

    def commit_metadata(self) -> dict[str, str]:
        return self.metadata

    # -- Datasink protocol --
    def on_write_start(self, schema: Any = None) -> None:
        self.lake.ensure(self.table)

    def write(self, blocks: Iterable[Any], ctx: Any) -> DeltaWriteResult:
        import pyarrow.dataset as pds
        from ray.data.block import BlockAccessor

        uri = self.lake.uri(self.table)
        fs, root = self.lake.arrow_fs(uri)
        schema = self.table.schema
        result = DeltaWriteResult()
        task_idx = getattr(ctx, "task_idx", 0)
        for block_idx, block in enumerate(blocks):
            data, extra = self.split_block(BlockAccessor.for_block(block).to_arrow())
            result.extra.extend(extra)
            if data.num_rows == 0:
                continue
            data = data.select(schema.names).cast(schema)
            written: list[Any] = []

            def _visit(wf: Any, _written: list[Any] = written) -> None:
                rel = posixpath.relpath(wf.path.lstrip("/"), root.lstrip("/"))
                _written.append(Lake.add_action(rel, wf.size, wf.metadata.num_rows))

            pds.write_dataset(
                data, base_dir=root, filesystem=fs, format="parquet",
                basename_template=f"part-{self.write_uuid}-{task_idx:05d}-{block_idx:05d}-{{i}}.parquet",
                existing_data_behavior="overwrite_or_ignore", file_visitor=_visit, create_dir=not is_remote(uri),
                max_rows_per_file=1_000_000, max_rows_per_group=128 * 1024,
            )  # fmt: skip
            result.add_actions.extend(written)
        return result

    def on_write_complete(self, write_result: Any) -> None:
        actions: list[Any] = []
        self.rows_written = int(getattr(write_result, "num_rows", 0) or 0)
        for r in write_result.write_returns:
            if r is None:
                continue
            actions.extend(r.add_actions)
            self.side_results.extend(r.extra)
        self.files_written = len(actions)
        if not actions:
            logger.info("nothing to commit to %s", self.table.name)
            return
        self.committed_version = self.lake.commit(self.table, actions, self.commit_metadata())
        logger.info("committed %d file(s) to %s as version %d", len(actions), self.table.name, self.committed_version)

    def on_write_failed(self, error: Exception) -> None:
        logger.error("write to %s failed, nothing committed: %s", self.table.name, error)

    def get_name(self) -> str:
        return "DeltaAppend"
