"""Train the fraud model on silver: features on Ray Data, LightGBM in one task, versioned artifact."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from rayapp import lake
from rayapp.errors import RayappError
from rayapp.ledger import utcnow
from rayapp.models.fraud import FraudModel, train
from rayapp.pipelines.features import build_features, categories_of
from rayapp.pipelines.silver import SILVER, uri
from rayapp.settings import Settings

logger = logging.getLogger(__name__)


def model_root(settings: Settings) -> Path:
    return Path(settings.data_dir) / "models" / "fraud"


@dataclass
class TrainResult:
    model: FraudModel
    path: Path
    silver_version: int
    rows: int


def train_fraud_model(settings: Settings, run_id: str, eval_fraction: float = 0.2) -> TrainResult:
    """Compute features for labelled silver rows and train, evaluate and save a new model version."""
    import ray

    if not lake.table_exists(settings, uri(settings, SILVER)):
        raise RayappError("no silver table yet: run ingest and bronze_to_silver first")
    categories = categories_of(settings)
    features = build_features(settings, run_id, categories)
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
    path = model.save(model_root(settings))
    logger.info("saved fraud model %s to %s", model.version, path)
    return TrainResult(model, path, features.silver_version, labelled_df.height)
