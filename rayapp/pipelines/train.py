"""Train the fraud model on silver: features on Ray Data, LightGBM in one task, versioned artifact."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from rayapp.catalog import SILVER
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.ledger import StageResult, utcnow
from rayapp.model_store import save_model
from rayapp.models.fraud import FraudModel, train
from rayapp.pipelines.features import build_features, categories_of

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainResult(StageResult):
    model: FraudModel
    path: Path
    silver_version: int
    rows: int


def train_fraud_model(lake: Lake, run_id: str, eval_fraction: float = 0.2) -> TrainResult:
    """Compute features for labelled silver rows and train, evaluate and save a new model version."""
    import ray

    if not lake.exists(SILVER):
        raise RayappError("no silver table yet: run ingest and bronze_to_silver first")
    categories = categories_of(lake)
    features = build_features(lake, run_id, categories)
    try:
        tables = list(features.dataset.iter_batches(batch_format="pyarrow", batch_size=None))
    finally:
        features.cleanup()
    df = pl.from_arrow(pa.concat_tables(tables)) if tables else pl.DataFrame()
    assert isinstance(df, pl.DataFrame)
    labelled_df = df.filter(pl.col("is_fraud").is_not_null()) if df.height else df
    if labelled_df.height < 100:
        raise RayappError(f"only {labelled_df.height} labelled silver rows: need at least 100 to train")
    version = "v" + utcnow().strftime("%Y%m%dT%H%M%S")

    # LightGBM runs in a Ray task so a cluster schedules it like other work. It asks for one CPU
    # (it may use a second thread): asking for more could wait forever beside Serve replicas.
    fit = ray.remote(num_cpus=1)(train)
    model = ray.get(fit.remote(ray.put(labelled_df), version, categories, eval_fraction))
    path = save_model(lake.settings, model)
    logger.info("saved fraud model %s to %s", model.version, path)
    m = model.metrics
    return TrainResult(
        model=model, path=path, silver_version=features.silver_version, rows=labelled_df.height,
        counts={"rows_read": labelled_df.height, "train_rows": m["rows"]["train"], "eval_rows": m["rows"]["eval"]},
        versions_read={SILVER.name: features.silver_version},
        details={"model_version": model.version, "path": str(path), "metrics": m},
    )  # fmt: skip
