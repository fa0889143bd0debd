"""Fraud features for silver rows on Ray Data.

A silver table of up to ``features_one_task_rows`` rows is read and featured in one task (all
passes on one frame: :func:`rayapp.models.features.all_features`), which at a million rows takes
a third of the time of the staged plan. A larger one takes three key-partitioned passes through
staging, so no process holds the whole table:

pass 0 (one task per silver file)  split rows by hash(account_id)
pass 1 (one task per partition)    account features, split by hash(device_id)
pass 2 (one task per partition)    device features, split by hash(merchant_id)
pass 3 (one task per partition)    merchant + row features -> the feature dataset

Each pass sees every row sharing its key, so the features equal those of
:func:`rayapp.models.features.all_features` on the whole table, without any process holding it.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import SILVER
from rayapp.lake import Lake
from rayapp.models import features as fx
from rayapp.pipelines.staging import read_ipc_dir, split_write

logger = logging.getLogger(__name__)

#: (staging dir read, feature pass, key of the next split, staging dir written)
_PASSES = (
    ("account", fx.account_features, "device_id", "device"),
    ("device", fx.device_features, "merchant_id", "merchant"),
)


def _split_silver(batch: pa.Table, *, lake: Lake, staging: str, partitions: int) -> pa.Table:
    import pyarrow.parquet as pq

    n = 0
    for file_uri in batch["path"].to_pylist():
        fs, path = lake.arrow_fs(file_uri)
        t = pq.read_table(path, filesystem=fs, columns=list(fx.INPUT_COLUMNS))
        t = fx.prepare(t).to_arrow()
        split_write(lake, t, "account_id", partitions, f"{staging}/account", f"{uuid.uuid4().hex}.arrow")
        n += t.num_rows
    return pa.table({"rows": [n]})


def _pass(batch: pa.Table, *, lake: Lake, staging: str, partitions: int, stage: int) -> pa.Table:
    import polars as pl

    source, fn, next_key, target = _PASSES[stage]
    n = 0
    for pid in batch["pid"].to_pylist():
        t = _read_partition(lake, f"{staging}/{source}", pid)
        if t is None:
            continue
        out = fn(pl.from_arrow(t)).to_arrow()  # type: ignore[arg-type]
        split_write(lake, out, next_key, partitions, f"{staging}/{target}", f"{uuid.uuid4().hex}.arrow")
        n += out.num_rows
    return pa.table({"rows": [n]})


def _one_task(batch: pa.Table, *, lake: Lake, categories: list[str], slice_rows: int) -> Iterator[pa.Table]:
    """Every silver file of a small table, featured on one frame, handed on in slices."""
    import polars as pl
    import pyarrow.parquet as pq

    frames = []
    for file_uri in batch["path"].to_pylist():
        fs, path = lake.arrow_fs(file_uri)
        frames.append(fx.prepare(pq.read_table(path, filesystem=fs, columns=list(fx.INPUT_COLUMNS))))
    if not frames:
        return
    df = fx.all_features(pl.concat(frames), categories)
    out = df.select(["transaction_id", "event_time", "is_fraud", *fx.FEATURES]).to_arrow()
    for start in range(0, out.num_rows, slice_rows):
        yield out.slice(start, slice_rows)


def _read_partition(lake: Lake, dir_uri: str, pid: int) -> pa.Table | None:
    t = read_ipc_dir(lake, f"{dir_uri}/p={pid:04d}")
    return t if t.num_rows else None


def _last_pass(batch: pa.Table, *, lake: Lake, staging: str, categories: list[str]) -> Iterator[pa.Table]:
    import polars as pl

    for pid in batch["pid"].to_pylist():
        t = _read_partition(lake, f"{staging}/merchant", pid)
        if t is None:
            continue
        df = fx.row_features(fx.merchant_features(pl.from_arrow(t)), categories)  # type: ignore[arg-type]
        yield df.select(["transaction_id", "event_time", "is_fraud", *fx.FEATURES]).to_arrow()


@dataclass
class FeatureRun:
    """A feature dataset backed by staging files; call :meth:`cleanup` when consumed."""

    lake: Lake
    staging: str
    dataset: Any
    rows: int
    silver_version: int
    task_cpus: float = 1.0  # what its tasks ask for: a map on ``dataset`` asking the same fuses into them

    def cleanup(self) -> None:
        self.lake.remove(self.staging)


def categories_of(lake: Lake, version: int | None = None) -> list[str]:
    """Sorted merchant categories present in silver (the category codes a model learns)."""
    cats = pc.unique(pc.drop_null(lake.read(SILVER, columns=["merchant_category"], version=version)["merchant_category"]))
    return sorted(cats.to_pylist())


def build_features(
    lake: Lake,
    run_id: str,
    categories: list[str],
    version: int | None = None,
    partitions: int | None = None,
    task_cpus: float = 1.0,
) -> FeatureRun:
    """Compute features for every silver row (as of ``version``) on Ray Data.

    Args:
        partitions: key partitions of the staged plan (default: one per 400k rows); given, the
            staged plan runs whatever the table's size.
        task_cpus: CPUs each task asks for; less than 1 lets the passes share a small cluster with
            Serve replicas without waiting forever for a whole free CPU.

    Returns:
        A :class:`FeatureRun` whose ``dataset`` yields ``transaction_id, event_time, is_fraud`` and
        ``FEATURES`` columns. Its staging files stay until :meth:`FeatureRun.cleanup`.
    """
    import ray

    dt = lake.open(SILVER, version)
    files = dt.file_uris()
    rows = lake.rows(SILVER, version)
    staging = lake.path("_staging", f"features-{run_id}")
    if partitions is None and rows <= lake.settings.features_one_task_rows:
        ds = ray.data.from_items([{"path": f} for f in files], override_num_blocks=1).map_batches(
            _one_task, batch_size=None, batch_format="pyarrow", num_cpus=task_cpus,
            fn_kwargs={"lake": lake, "categories": categories, "slice_rows": 100_000},
        )  # fmt: skip
        logger.info("features for %d silver rows in one task (%s)", rows, json.dumps({"version": dt.version()}))
        return FeatureRun(lake, staging, ds, rows, dt.version(), task_cpus)
    parts = partitions or max(2, min(64, math.ceil(rows / 400_000)))
    items = [{"pid": p} for p in range(parts)]
    try:
        if files:
            ray.data.from_items([{"path": f} for f in files], override_num_blocks=len(files)).map_batches(
                _split_silver, batch_size=1, batch_format="pyarrow", num_cpus=task_cpus,
                fn_kwargs={"lake": lake, "staging": staging, "partitions": parts},
            ).take_all()  # fmt: skip
            for stage in range(len(_PASSES)):
                ray.data.from_items(items, override_num_blocks=parts).map_batches(
                    _pass, batch_size=1, batch_format="pyarrow", num_cpus=task_cpus,
                    fn_kwargs={"lake": lake, "staging": staging, "partitions": parts, "stage": stage},
                ).take_all()  # fmt: skip
    except BaseException:
        lake.remove(staging)
        raise
    ds = ray.data.from_items(items, override_num_blocks=parts).map_batches(
        _last_pass, batch_size=1, batch_format="pyarrow", num_cpus=task_cpus,
        fn_kwargs={"lake": lake, "staging": staging, "categories": categories},
    )  # fmt: skip
    logger.info("features staged for %d silver rows in %d partitions (%s)", rows, parts, json.dumps({"version": dt.version()}))
    return FeatureRun(lake, staging, ds, rows, dt.version(), task_cpus)
