"""Delta tables and object storage: open, check, append, and a Ray Datasink that commits once.

Local paths and ``s3://`` URIs go through the same functions; S3 options come from Settings.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import urlsplit

import pyarrow as pa
from ray.data import Datasink

from rayapp.errors import LakeUnreachableError
from rayapp.settings import Settings, is_remote

if TYPE_CHECKING:
    import fsspec
    import pyarrow.fs as pafs
    from deltalake import DeltaTable

logger = logging.getLogger(__name__)


# ---- filesystems -------------------------------------------------------------------------


def fsspec_fs(settings: Settings, uri: str) -> "tuple[fsspec.AbstractFileSystem, str]":
    """An fsspec filesystem and the path inside it for a local path or ``s3://`` URI."""
    if is_remote(uri):
        import s3fs

        parts = urlsplit(uri)
        return s3fs.S3FileSystem(**settings.s3fs_options()), f"{parts.netloc}{parts.path}".rstrip("/")
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem(), uri.rstrip("/") or "/"


def to_uri(settings: Settings, uri_like: str, fs_path: str) -> str:
    """Turn a path returned by ``fsspec_fs``'s filesystem back into a URI of the same kind."""
    if is_remote(uri_like):
        return f"s3://{fs_path.lstrip('/')}"
    return fs_path


def arrow_fs(settings: Settings, uri: str) -> "tuple[pafs.FileSystem, str]":
    """A pyarrow filesystem and the path inside it (used by Ray write tasks)."""
    import pyarrow.fs as pafs

    if is_remote(uri):
        parts = urlsplit(uri)
        endpoint = settings.s3_endpoint_url
        kwargs: dict[str, Any] = {"region": settings.s3_region}
        if endpoint:
            ep = urlsplit(endpoint)
            kwargs["endpoint_override"] = ep.netloc
            kwargs["scheme"] = ep.scheme
        if settings.s3_access_key_id:
            kwargs["access_key"] = settings.s3_access_key_id
        if settings.s3_secret_access_key is not None:
            kwargs["secret_key"] = settings.s3_secret_access_key.get_secret_value()
        return pafs.S3FileSystem(**kwargs), f"{parts.netloc}{parts.path}".rstrip("/")
    return pafs.LocalFileSystem(), uri


def check_reachable(settings: Settings, uri: str | None = None) -> None:
    """Fail fast with one clear line when the lake (or ``uri``) cannot be reached.

    Local directories are created; for S3 the bucket must exist and answer.
    """
    target = uri or settings.lake
    try:
        fs, path = fsspec_fs(settings, target)
        if is_remote(target):
            bucket = path.split("/", 1)[0]
            try:
                fs.ls(bucket, detail=False)
            except FileNotFoundError:
                raise LakeUnreachableError(f"cannot reach {target}: bucket {bucket!r} does not exist") from None
        else:
            fs.makedirs(path, exist_ok=True)
    except LakeUnreachableError:
        raise
    except Exception as exc:  # noqa: BLE001 - any I/O failure means unreachable here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LakeUnreachableError(f"cannot reach {target}: {reason}") from None


# ---- Delta tables ---------------------------------------------------------------------------


def table_exists(settings: Settings, uri: str) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(uri, storage_options=settings.delta_storage_options())


def open_table(settings: Settings, uri: str, version: int | None = None) -> "DeltaTable":
    from deltalake import DeltaTable

    return DeltaTable(uri, version=version, storage_options=settings.delta_storage_options())


def ensure_table(
    settings: Settings,
    uri: str,
    schema: pa.Schema,
    partition_by: list[str] | None = None,
    configuration: dict[str, str] | None = None,
) -> "DeltaTable":
    """Create the table with ``schema`` if it does not exist (idempotent) and return it."""
    from deltalake import DeltaTable

    opts = settings.delta_storage_options()
    if not DeltaTable.is_deltatable(uri, storage_options=opts):
        if not is_remote(uri):
            import os

            os.makedirs(uri, exist_ok=True)
        DeltaTable.create(
            uri, schema, mode="ignore", partition_by=partition_by, configuration=configuration, storage_options=opts
        )
    return DeltaTable(uri, storage_options=opts)


def append_table(
    settings: Settings, uri: str, table: pa.Table, custom_metadata: dict[str, str] | None = None
) -> int:
    """Append ``table`` in one commit (creating the table if needed); returns the new version."""
    from deltalake import CommitProperties, write_deltalake

    ensure_table(settings, uri, table.schema)
    write_deltalake(
        uri,
        table,
        mode="append",
        storage_options=settings.delta_storage_options(),
        commit_properties=CommitProperties(custom_metadata=custom_metadata) if custom_metadata else None,
    )
    return open_table(settings, uri).version()


def read_table(settings: Settings, uri: str, columns: list[str] | None = None, version: int | None = None) -> pa.Table:
    """Read a whole (small) Delta table into Arrow; empty table with no rows if it does not exist."""
    if not table_exists(settings, uri):
        return pa.table({})
    return open_table(settings, uri, version).to_pyarrow_table(columns=columns)


# ---- Ray Datasink: workers write Parquet, the driver commits once ---------------------------


@dataclass
class DeltaWriteResult:
    """What one write task returns to the driver: file actions plus per-task side results."""

    add_actions: list[Any] = field(default_factory=list)
    extra: list[Any] = field(default_factory=list)


class DeltaAppendSink(Datasink):
    """A Ray ``Datasink`` appending to an existing Delta table in exactly one commit.

    Write tasks write Parquet files under the table root and return ``AddAction``s; the driver
    commits them in one transaction with ``custom_metadata`` (run id, manifest), so a run is
    either entirely in the table or not at all. Subclasses may override ``split_block`` to
    pull side results (e.g. rejection markers) out of blocks before they are written; those
    arrive in ``self.side_results`` on the driver after the write.
    """

    def __init__(self, settings: Settings, uri: str, schema: pa.Schema, custom_metadata: dict[str, str]) -> None:
        self.settings = settings
        self.uri = uri
        self.schema = schema
        self.custom_metadata = dict(custom_metadata)
        self.write_uuid = uuid.uuid4().hex
        self.side_results: list[Any] = []
        self.committed_version: int | None = None
        self.files_written = 0
        self.rows_written = 0

    # -- hooks for subclasses --
    def split_block(self, table: pa.Table) -> tuple[pa.Table, list[Any]]:
        return table, []

    def commit_metadata(self) -> dict[str, str]:
        return self.custom_metadata

    # -- Datasink protocol --
    def on_write_start(self, schema: Any = None) -> None:
        ensure_table(self.settings, self.uri, self.schema)

    def write(self, blocks: Iterable[Any], ctx: Any) -> DeltaWriteResult:
        import pyarrow.dataset as pds
        from deltalake.transaction import AddAction
        from ray.data.block import BlockAccessor

        fs, root = arrow_fs(self.settings, self.uri)
        result = DeltaWriteResult()
        task_idx = getattr(ctx, "task_idx", 0)
        for block_idx, block in enumerate(blocks):
            table = BlockAccessor.for_block(block).to_arrow()
            table, extra = self.split_block(table)
            result.extra.extend(extra)
            if table.num_rows == 0:
                continue
            table = table.select(self.schema.names).cast(self.schema)
            written: list[Any] = []
            mtime = int(time.time() * 1000)

            def _visit(wf: Any, _written: list[Any] = written, _mtime: int = mtime) -> None:
                rel = posixpath.relpath(wf.path.lstrip("/"), root.lstrip("/"))
                _written.append(
                    AddAction(
                        path=rel,
                        size=wf.size,
                        partition_values={},
                        modification_time=_mtime,
                        data_change=True,
                        stats=json.dumps({"numRecords": wf.metadata.num_rows}),
                    )
                )

            pds.write_dataset(
                table,
                base_dir=root,
                filesystem=fs,
                format="parquet",
                basename_template=f"part-{self.write_uuid}-{task_idx:05d}-{block_idx:05d}-{{i}}.parquet",
                existing_data_behavior="overwrite_or_ignore",
                file_visitor=_visit,
                create_dir=not is_remote(self.uri),
                max_rows_per_file=1_000_000,
                max_rows_per_group=128 * 1024,
            )
            result.add_actions.extend(written)
        return result

    def on_write_complete(self, write_result: Any) -> None:
        from deltalake import CommitProperties

        actions: list[Any] = []
        self.rows_written = int(getattr(write_result, "num_rows", 0) or 0)
        for r in write_result.write_returns:
            if r is None:
                continue
            actions.extend(r.add_actions)
            self.side_results.extend(r.extra)
        self.files_written = len(actions)
        if not actions:
            logger.info("nothing to commit to %s", self.uri)
            return
        dt = open_table(self.settings, self.uri)
        dt.create_write_transaction(
            actions=actions,
            mode="append",
            schema=self.schema,
            commit_properties=CommitProperties(custom_metadata=self.commit_metadata()),
        )
        dt.update_incremental()
        self.committed_version = dt.version()
        logger.info("committed %d file(s) to %s as version %d", len(actions), self.uri, self.committed_version)

    def on_write_failed(self, error: Exception) -> None:
        logger.error("write to %s failed, nothing committed: %s", self.uri, error)

    def get_name(self) -> str:
        return "DeltaAppend"
