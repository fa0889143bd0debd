"""The lake: one :class:`Lake` per process, built from Settings, holding the storage options.

Every Delta table of :mod:`rayapp.catalog` is opened, read, appended to, merged into, and
partition-replaced through it; local paths and ``s3://`` URIs go through the same methods.
A ``Lake`` pickles (it holds only Settings), so Ray tasks get it as an argument.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import pyarrow as pa

from rayapp.catalog import TableDef
from rayapp.errors import RayappError
from rayapp.storage import Storage, delta_storage_options
from rayapp.urls import is_remote, join_uri

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from deltalake import DeltaTable

    from rayapp.settings import Settings

logger = logging.getLogger(__name__)

TableLike = TableDef | str


class Lake(Storage):
    """Storage options and Delta operations for the lake rooted at ``settings.lake_root``."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.root = settings.lake_root
        self.storage_options = delta_storage_options(settings)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Lake, (self.settings,))

    # ---- locations ----------------------------------------------------------------------

    def uri(self, table: TableLike) -> str:
        """URI of a catalog table (or a ``"a/b"`` name) under the lake root."""
        name = table.name if isinstance(table, TableDef) else table
        return join_uri(self.root, *name.split("/"))

    def path(self, *parts: str) -> str:
        """URI of any location under the lake root (staging, dead-letter files)."""
        return join_uri(self.root, *parts)

    # ---- Delta tables -----------------------------------------------------------------------

    def exists(self, table: TableLike) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.uri(table), storage_options=self.storage_options)

    def open(self, table: TableLike, version: int | None = None) -> "DeltaTable":
        from deltalake import DeltaTable

        return DeltaTable(self.uri(table), version=version, storage_options=self.storage_options)

    def version(self, table: TableLike) -> int | None:
        """The table's current version, None when it does not exist."""
        return self.open(table).version() if self.exists(table) else None

    def rows(self, table: TableLike, version: int | None = None) -> int:
        """Rows in the table (0 when it does not exist), from the log's file statistics: no data read."""
        if not self.exists(table):
            return 0
        import pyarrow.compute as pc

        actions = pa.table(self.open(table, version).get_add_actions(flatten=True))
        return int(pc.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0

    def ensure(self, table: TableDef) -> "DeltaTable":
        """Create ``table`` from its catalog definition if it does not exist (idempotent) and open it."""
        from deltalake import DeltaTable

        uri = self.uri(table)
        if not DeltaTable.is_deltatable(uri, storage_options=self.storage_options):
            if not is_remote(uri):
                os.makedirs(uri, exist_ok=True)
            DeltaTable.create(
                uri, table.schema, mode="ignore", partition_by=list(table.partition_by) or None,
                configuration=dict(table.properties) or None, storage_options=self.storage_options,
            )  # fmt: skip
        return DeltaTable(uri, storage_options=self.storage_options)

    def table_fs(self, table: TableLike) -> "pafs.FileSystem":
        """A pyarrow filesystem rooted at the table's folder, for reading its data files.

        delta-rs reads through its own Python filesystem handler unless given one; that handler's
        threads can still be running at interpreter exit, which aborts the process
        ("terminate called without an active exception", delta-io/delta-rs#2184).
        """
        import pyarrow.fs as pafs

        fs, path = self.arrow_fs(self.uri(table))
        return pafs.SubTreeFileSystem(path, fs)

    def dataset(self, table: TableLike, version: int | None = None, partitions: list[tuple[str, str, Any]] | None = None) -> Any:
        """A snapshot of ``table`` as a ``pyarrow.dataset.Dataset`` (filters and column pruning push down)."""
        return self.open(table, version).to_pyarrow_dataset(partitions=partitions, filesystem=self.table_fs(table))

    def read(self, table: TableLike, columns: list[str] | None = None, version: int | None = None,
             partitions: list[tuple[str, str, Any]] | None = None) -> pa.Table:  # fmt: skip
        """Read a (small) table, or some of its columns, into Arrow; an empty table when it does not exist."""
        if not self.exists(table):
            return pa.table({})
        return self.dataset(table, version, partitions).to_table(columns=columns)

    def files(self, table: TableLike, version: int | None = None) -> list[str]:
        """URIs of the data files of a snapshot (none when the table does not exist)."""
        if version is None and not self.exists(table):
            return []
        return list(self.open(table, version).file_uris())

    def append(self, table: TableDef, data: pa.Table | pa.RecordBatchReader, metadata: Mapping[str, str] | None = None) -> int:
        """Append ``data`` (a table, or a stream of the table's schema) in one commit (creating the
        table if needed); returns the new version."""
        from deltalake import CommitProperties, write_deltalake

        self.ensure(table)
        write_deltalake(
            self.uri(table), data if isinstance(data, pa.RecordBatchReader) else data.select(table.schema.names).cast(table.schema),
            mode="append",
            storage_options=self.storage_options,
            commit_properties=CommitProperties(custom_metadata=dict(metadata)) if metadata else None,
        )  # fmt: skip
        return self.open(table).version()

    def commit(
        self,
        table: TableDef,
        actions: list[Any],
        metadata: Mapping[str, str],
        *,
        replace_partitions: Iterable[str] | None = None,
    ) -> int:
        """Commit Parquet files already written under the table (``AddAction``s) in one transaction.

        Args:
            replace_partitions: values of the table's (single) partition column whose current
                files the commit removes: the gold tables swap whole dates this way.

        Returns:
            The new table version.
        """
        from deltalake import CommitProperties

        dt = self.open(table)
        kwargs: dict[str, Any] = {"mode": "append"}
        if replace_partitions is not None:
            if len(table.partition_by) != 1:
                raise RayappError(f"{table.name} is not partitioned by one column")
            kwargs = {"mode": "overwrite", "partition_by": list(table.partition_by),
                      "partition_filters": [(table.partition_by[0], "in", sorted(replace_partitions))]}  # fmt: skip
        dt.create_write_transaction(
            actions=actions, schema=table.schema, commit_properties=CommitProperties(custom_metadata=dict(metadata)), **kwargs
        )
        dt.update_incremental()
        return dt.version()

    @staticmethod
    def add_action(path: str, size: int, rows: int, partition_values: dict[str, str] | None = None) -> Any:
        """The Delta ``AddAction`` of a Parquet file written under a table (``path`` relative to its root)."""
        import json
        import time

        from deltalake.transaction import AddAction

        return AddAction(path=path, size=size, partition_values=partition_values or {}, modification_time=int(time.time() * 1000),
                         data_change=True, stats=json.dumps({"numRecords": rows}))  # fmt: skip

    def merge(self, table: TableDef, source: Any, predicate: str, metadata: Mapping[str, str]) -> Any:
        """A delta-rs ``TableMerger`` (``s`` source, ``t`` target) on ``table``, created if missing."""
        from deltalake import CommitProperties

        return self.ensure(table).merge(
            source, predicate=predicate, source_alias="s", target_alias="t",
            commit_properties=CommitProperties(custom_metadata=dict(metadata)),
        )  # fmt: skip

    def changes(self, table: TableLike, since: int, until: int, columns: list[str]) -> pa.Table | None:
        """Rows of the change data feed for versions ``(since, until]`` (with ``_change_type``,
        ``_commit_version`` and ``_commit_timestamp``; strings as ``string``); None when the table
        is written without the feed."""
        dt = self.open(table, until)
        if dt.metadata().configuration.get("delta.enableChangeDataFeed") != "true":
            return None
        cdf = pa.table(dt.load_cdf(starting_version=since + 1, ending_version=until,
                                   columns=[*columns, "_change_type", "_commit_version", "_commit_timestamp"]))  # fmt: skip
        # delta-rs hands the feed over as string_view, which few Arrow kernels take.
        return cdf.cast(pa.schema([pa.field(f.name, pa.string()) if pa.types.is_string_view(f.type) else f for f in cdf.schema]))

    def changed_keys(self, table: TableLike, since: int | None, until: int, column: str = "transaction_id") -> pa.Array | None:
        """Keys inserted or updated after version ``since`` up to ``until``. None means "every row":
        no ``since``, or a table written without the change feed."""
        return self.key_changes(table, since, until, [column], [])[0]

    def deleted_rows(self, table: TableLike, since: int | None, until: int, keys: list[str], columns: list[str]) -> pa.Table | None:
        """Rows deleted after version ``since`` up to ``until`` and not inserted again since: their
        ``keys`` and ``columns`` as they were, and ``_deleted_at`` (the deleting commit's time).
        None when deletes cannot be known (no ``since``, or no change feed)."""
        return self.key_changes(table, since, until, keys, columns)[1]

    def key_changes(self, table: TableLike, since: int | None, until: int, keys: list[str],
                    columns: list[str]) -> tuple[pa.Array | None, pa.Table | None]:  # fmt: skip
        """``changed_keys`` (of the first key column) and ``deleted_rows`` from one read of the change feed."""
        import pyarrow.compute as pc

        if since is None:
            return None, None
        if since >= until:
            return pa.array([], pa.string()), pa.table({})
        cdf = self.changes(table, since, until, list(dict.fromkeys([*keys, *columns])))
        if cdf is None:
            return None, None
        changed = pc.unique(cdf[keys[0]].cast(pa.string()).filter(pc.is_in(cdf["_change_type"], pa.array(["insert", "update_postimage"]))))
        cdf = cdf.filter(pc.is_in(cdf["_change_type"], pa.array(["insert", "update_postimage", "delete"])))
        # The last change of each key in the range decides: a delete then a re-insert is a live row.
        order = [(k, "ascending") for k in keys] + [("_commit_version", "descending"), ("_change_type", "ascending")]
        ranked = cdf.sort_by(order)
        key = pc.binary_join_element_wise(*[pc.cast(ranked[k], pa.string()) for k in keys], "\x1f") if len(keys) > 1 else ranked[keys[0]]
        from rayapp.transforms.serving import first_of_runs

        last = ranked.filter(first_of_runs(key))
        gone = last.filter(pc.equal(last["_change_type"], "delete"))
        stamp = pc.cast(pc.cast(gone["_commit_timestamp"], pa.timestamp("us")), pa.timestamp("us", tz="UTC"))
        return changed, gone.select(list(dict.fromkeys([*keys, *columns]))).append_column("_deleted_at", stamp)
