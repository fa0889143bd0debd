"""Batch scoring of silver rows into ``<lake>/silver/predictions``, and the pieces Serve needs.

Features come from :mod:`rayapp.pipelines.features`; scores from the FraudScorer Serve
deployment (``mode="serve"``: the replicas that also answer HTTP) or from the model loaded
in Ray Data actors (``mode="inline"``). Results are MERGEd by (transaction_id, model_version).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from rayapp import lake
from rayapp.errors import RayappError
from rayapp.ledger import Ledger, utcnow
from rayapp.models import features as fx
from rayapp.models.fraud import FraudModel, ModelNotFoundError
from rayapp.pipelines.features import build_features
from rayapp.pipelines.silver import CDF, SILVER, changed_keys, last_watermark, uri
from rayapp.pipelines.train import model_root
from rayapp.settings import Settings

logger = logging.getLogger(__name__)

PREDICTIONS = "silver/predictions"
APP_NAME = "rayapp"
SCORER = "FraudScorer"
UTC_US = pa.timestamp("us", tz="UTC")
PREDICTIONS_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("fraud_score", pa.float64()),
        pa.field("is_fraud_pred", pa.bool_()),
        pa.field("scored_at", UTC_US),
        pa.field("_run_id", pa.string()),
    ]
)


class LakeModelLoader:
    """Loads model versions and the silver history snapshot for one lake (picklable: holds settings)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def load_model(self, version: str | None = None) -> FraudModel:
        return FraudModel.load(model_root(self.settings), version)

    def load_history(self, version: int | None = None) -> tuple[pl.DataFrame, int | None]:
        silver = uri(self.settings, SILVER)
        if not lake.table_exists(self.settings, silver):
            empty = pl.DataFrame(schema={c: pl.String for c in fx.INPUT_COLUMNS})
            return fx.prepare(empty), None
        dt = lake.open_table(self.settings, silver, version)
        return fx.prepare(dt.to_pyarrow_table(columns=list(fx.INPUT_COLUMNS))), dt.version()


def score_table(model: FraudModel, features: pa.Table) -> pa.Table:
    """Feature rows in, ``transaction_id, fraud_score, is_fraud_pred, model_version`` out."""
    df = pl.from_arrow(features)
    assert isinstance(df, pl.DataFrame)
    return model.predict(df).to_arrow()


class InlineScorer:
    """Ray Data actor: the model loaded once per actor."""

    def __init__(self, settings: Settings, version: str | None) -> None:
        self.model = LakeModelLoader(settings).load_model(version)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score_table(self.model, batch)


class ServeScorer:
    """Ray Data actor: forwards feature batches to the FraudScorer deployment's replicas."""

    def __init__(self, app_name: str = APP_NAME) -> None:
        from ray import serve

        self.handle = serve.get_deployment_handle(SCORER, app_name=app_name)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.handle.score_features.remote(batch).result()


class ServeEmbedder:
    """Ray Data actor: embeds a text column through the Embedder deployment (batch path).

    Use as ``ds.map_batches(ServeEmbedder, fn_constructor_kwargs={"column": "text"}, batch_format="pyarrow",
    compute=ActorPoolStrategy(size=1), num_cpus=0.2)``; adds ``vector`` (list<float32>, 384 values).
    """

    def __init__(self, column: str = "text", app_name: str = APP_NAME) -> None:
        from ray import serve

        self.column = column
        self.handle = serve.get_deployment_handle("Embedder", app_name=app_name)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = [t or "" for t in batch[self.column].to_pylist()]
        vecs = self.handle.embed_many.remote(texts).result()
        flat = pa.array(vecs.reshape(-1), pa.float32())
        return batch.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1]) if len(texts) else pa.array([], pa.list_(pa.float32(), 384)))


def _keep_ids(batch: pa.Table, ids: pa.Array | None) -> pa.Table:
    if ids is None:
        return batch
    return batch.filter(pc.is_in(batch["transaction_id"].cast(pa.string()), ids))  # polars hands over string_view


@dataclass
class ScoreResult:
    model_version: str
    silver_version: int
    counts: dict[str, int] = field(default_factory=dict)
    predictions_version: int | None = None


def serve_app_running(app_name: str = APP_NAME) -> bool:
    """Whether the Serve application is deployed and running on the connected cluster."""
    from ray import serve

    try:
        app = serve.status().applications.get(app_name)
    except Exception:  # noqa: BLE001 - Serve not started on this cluster
        return False
    return app is not None and str(getattr(app.status, "value", app.status)) == "RUNNING"


def score_transactions(
    settings: Settings,
    ledger: Ledger,
    run_id: str,
    *,
    mode: str = "serve",
    full: bool = False,
    model_version: str | None = None,
    concurrency: int = 1,
    batch_size: int = 50_000,
) -> ScoreResult:
    """Score silver rows changed since the last scoring run (all with ``full``) and MERGE the predictions."""
    if mode not in ("serve", "inline"):
        raise RayappError(f"unknown mode {mode!r}: use serve or inline")
    if not lake.table_exists(settings, uri(settings, SILVER)):
        raise RayappError("no silver table yet: run ingest and bronze_to_silver first")
    try:
        model = LakeModelLoader(settings).load_model(model_version)
    except ModelNotFoundError as exc:
        raise RayappError(str(exc)) from None
    silver_version = lake.open_table(settings, uri(settings, SILVER)).version()
    since = None if full else last_watermark(ledger, "score_transactions", SILVER)
    ids = changed_keys(settings, SILVER, since, silver_version)
    result = ScoreResult(model.version, silver_version)
    if ids is not None and len(ids) == 0:
        result.counts = {"rows_scored": 0, "inserted": 0, "updated": 0, "unchanged": 0}
        return result
    from ray.data import ActorPoolStrategy

    # With Serve replicas holding part of the cluster, feature tasks take half a CPU each so they
    # always fit beside them (a 2-CPU machine: 0.8 Serve + 0.25 scoring actor + 2 x 0.5 tasks).
    features = build_features(settings, run_id, model.categories, silver_version, task_cpus=0.5 if mode == "serve" else 1.0)
    try:
        ds = features.dataset.map_batches(_keep_ids, fn_kwargs={"ids": ids}, batch_format="pyarrow")
        if mode == "inline":
            scored = ds.map_batches(
                InlineScorer, fn_constructor_kwargs={"settings": settings, "version": model.version},
                batch_size=batch_size, batch_format="pyarrow", compute=ActorPoolStrategy(size=concurrency), num_cpus=1,
            )  # fmt: skip
        else:
            scored = ds.map_batches(
                ServeScorer, batch_size=batch_size, batch_format="pyarrow", compute=ActorPoolStrategy(size=concurrency),
                num_cpus=0.2,
            )  # fmt: skip
        now = utcnow()
        metrics = _merge_predictions(settings, _with_meta(scored, run_id, now), run_id, model.version)
    finally:
        features.cleanup()
    result.counts = {
        "rows_scored": metrics["num_source_rows"],
        "inserted": metrics["num_target_rows_inserted"],
        "updated": metrics["num_target_rows_updated"],
        "unchanged": metrics["num_source_rows"] - metrics["num_target_rows_inserted"] - metrics["num_target_rows_updated"],
        "rows_written": metrics["num_target_rows_inserted"] + metrics["num_target_rows_updated"],
    }
    result.predictions_version = lake.open_table(settings, uri(settings, PREDICTIONS)).version()
    return result


def _with_meta(scored: Any, run_id: str, now: datetime) -> Iterator[pa.RecordBatch]:
    for t in scored.iter_batches(batch_format="pyarrow", batch_size=None):
        n = t.num_rows
        out = pa.table(
            {
                "transaction_id": t["transaction_id"],
                "model_version": t["model_version"],
                "fraud_score": t["fraud_score"],
                "is_fraud_pred": t["is_fraud_pred"],
                "scored_at": pa.repeat(pa.scalar(now, UTC_US), n),
                "_run_id": pa.repeat(pa.scalar(run_id), n),
            },
            schema=PREDICTIONS_SCHEMA,
        )
        yield from out.to_batches()


def _merge_predictions(settings: Settings, batches: Iterator[pa.RecordBatch], run_id: str, version: str) -> dict[str, int]:
    from deltalake import CommitProperties

    target = uri(settings, PREDICTIONS)
    dt = lake.ensure_table(settings, target, PREDICTIONS_SCHEMA, configuration=CDF)  # publish reads its change feed
    source = pa.RecordBatchReader.from_batches(PREDICTIONS_SCHEMA, batches)
    metrics = (
        dt.merge(
            source, predicate="t.transaction_id = s.transaction_id AND t.model_version = s.model_version",
            source_alias="s", target_alias="t",
            commit_properties=CommitProperties(custom_metadata={"rayapp.run_id": run_id, "rayapp.model_version": version}),
        )
        .when_matched_update_all(predicate="s.fraud_score <> t.fraud_score OR s.is_fraud_pred <> t.is_fraud_pred")
        .when_not_matched_insert_all()
        .execute()
    )  # fmt: skip
    logger.info("predictions MERGE: %s", {k: v for k, v in metrics.items() if k.startswith("num_")})
    return metrics
