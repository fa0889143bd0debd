"""Batch scoring of silver rows into ``<lake>/silver/predictions``.

Features come from :mod:`rayapp.pipelines.features`; scores from the FraudScorer Serve
deployment (``mode="serve"``: the replicas that also answer HTTP) or from the model loaded
in Ray Data actors (``mode="inline"``). Results are MERGEd by (transaction_id, model_version).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import PREDICTIONS, PREDICTIONS_SCHEMA, SILVER, UTC_US
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.ledger import Ledger, StageResult, utcnow
from rayapp.model_store import LakeModelLoader, ModelNotFoundError
from rayapp.models.fraud import FraudModel
from rayapp.models.scoring import score_table
from rayapp.pipelines.features import build_features
from rayapp.serving import ServeScorer

logger = logging.getLogger(__name__)

STAGE = "score_transactions"


class InlineScorer:
    """Ray Data actor: the model loaded once per actor."""

    def __init__(self, lake: Lake, version: str | None) -> None:
        self.model: FraudModel = LakeModelLoader(lake).load_model(version)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score_table(self.model, batch)


def _keep_ids(batch: pa.Table, ids: pa.Array | None) -> pa.Table:
    if ids is None:
        return batch
    return batch.filter(pc.is_in(batch["transaction_id"].cast(pa.string()), ids))  # polars hands over string_view


@dataclass(kw_only=True)
class ScoreResult(StageResult):
    model_version: str
    silver_version: int
    predictions_version: int | None = None


def score_transactions(
    lake: Lake,
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
    silver_version = lake.version(SILVER)
    if silver_version is None:
        raise RayappError("no silver table yet: run ingest and bronze_to_silver first")
    try:
        model = LakeModelLoader(lake).load_model(model_version)
    except ModelNotFoundError as exc:
        raise RayappError(str(exc)) from None
    since = None if full else ledger.watermark(STAGE, SILVER.name)
    ids, gone = lake.key_changes(SILVER, since, silver_version, ["transaction_id"], [])
    result = ScoreResult(model_version=model.version, silver_version=silver_version, versions_read={SILVER.name: silver_version},
                         details={"model_version": model.version, "mode": mode, "full": full})  # fmt: skip
    withdrawn = _withdraw_predictions(lake, gone, silver_version, run_id)
    if ids is not None and len(ids) == 0:
        result.counts = {"rows_scored": 0, "inserted": 0, "updated": 0, "unchanged": 0, "withdrawn": withdrawn}
        result.predictions_version = lake.version(PREDICTIONS)
        if withdrawn and result.predictions_version is not None:
            result.versions_written = {PREDICTIONS.name: result.predictions_version}
        ledger.advance(STAGE, result.versions_read, run_id)
        return result
    from ray.data import ActorPoolStrategy

    # Feature tasks take half a CPU and the scoring actor a quarter (a 2-CPU machine: 0.8 Serve +
    # 0.25 scoring actor + 2 x 0.5 tasks), so they fit beside Serve replicas and beside each other
    # even on one CPU. Their different CPU asks also keep Ray Data from fusing the features into the
    # scoring actor: as separate operators the features start at once on a warm worker while the
    # actor's process starts and loads the model (fused, they waited ~1.5 s for both).
    features = build_features(lake, run_id, model.categories, silver_version, task_cpus=0.5)
    try:
        ds = features.dataset.map_batches(_keep_ids, fn_kwargs={"ids": ids}, batch_format="pyarrow", num_cpus=features.task_cpus)
        if mode == "inline":
            scored = ds.map_batches(
                InlineScorer, fn_constructor_kwargs={"lake": lake, "version": model.version},
                batch_size=batch_size, batch_format="pyarrow", compute=ActorPoolStrategy(size=concurrency), num_cpus=0.25,
            )  # fmt: skip
        else:
            scored = ds.map_batches(
                ServeScorer, batch_size=batch_size, batch_format="pyarrow", compute=ActorPoolStrategy(size=concurrency),
                num_cpus=0.2,
            )  # fmt: skip
        now = utcnow()
        metrics = _merge_predictions(lake, _with_meta(scored, run_id, now), run_id, model.version)
    finally:
        features.cleanup()
    result.counts = {
        "rows_scored": metrics["num_source_rows"],
        "inserted": metrics["num_target_rows_inserted"],
        "updated": metrics["num_target_rows_updated"],
        "unchanged": metrics["num_source_rows"] - metrics["num_target_rows_inserted"] - metrics["num_target_rows_updated"],
        "rows_written": metrics["num_target_rows_inserted"] + metrics["num_target_rows_updated"],
        "withdrawn": withdrawn,
    }
    result.predictions_version = lake.version(PREDICTIONS)
    if result.predictions_version is not None:
        result.versions_written = {PREDICTIONS.name: result.predictions_version}
    ledger.advance(STAGE, result.versions_read, run_id)
    return result


def _withdraw_predictions(lake: Lake, gone: pa.Table | None, silver_version: int, run_id: str) -> int:
    """Delete the predictions of transactions that left silver (``bronze_to_silver --full-refresh``
    removes keys) in one commit; their deletes reach the stores through the change feed.
    ``gone``: the feed's deletes since the watermark; None (no watermark): every prediction whose
    transaction silver does not hold. Returns the predictions deleted."""
    if not lake.exists(PREDICTIONS):
        return 0
    if gone is None:
        silver_ids = lake.read(SILVER, columns=["transaction_id"], version=silver_version)["transaction_id"]
        held = pc.unique(lake.read(PREDICTIONS, columns=["transaction_id"])["transaction_id"])
        ids = held.filter(pc.invert(pc.is_in(held, silver_ids)))
    else:
        ids = gone["transaction_id"] if gone.num_rows else pa.array([], pa.string())
    if len(ids) == 0:
        return 0
    metrics = (
        lake.merge(PREDICTIONS, pa.table({"transaction_id": ids.cast(pa.string())}), "t.transaction_id = s.transaction_id",
                   {"rayapp.run_id": run_id, "rayapp.operation": "withdraw"})  # fmt: skip
        .when_matched_delete()
        .execute()
    )
    logger.info("withdrew %d predictions of %d transactions no longer in silver", metrics["num_target_rows_deleted"], len(ids))
    return int(metrics["num_target_rows_deleted"])


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


def _merge_predictions(lake: Lake, batches: Iterator[pa.RecordBatch], run_id: str, version: str) -> dict[str, int]:
    metadata = {"rayapp.run_id": run_id, "rayapp.model_version": version}
    if not lake.files(PREDICTIONS):  # nothing scored yet: the MERGE would insert every row, so append them (no join)
        sent = [0]

        def counted() -> Iterator[pa.RecordBatch]:
            for batch in batches:
                sent[0] += batch.num_rows
                yield batch

        lake.append(PREDICTIONS, pa.RecordBatchReader.from_batches(PREDICTIONS_SCHEMA, counted()), metadata)
        logger.info("predictions first load: %d rows appended", sent[0])
        return {"num_source_rows": sent[0], "num_target_rows_inserted": sent[0], "num_target_rows_updated": 0}
    source = pa.RecordBatchReader.from_batches(PREDICTIONS_SCHEMA, batches)
    metrics = (
        lake.merge(
            PREDICTIONS, source, "t.transaction_id = s.transaction_id AND t.model_version = s.model_version", metadata,
        )
        .when_matched_update_all(predicate="s.fraud_score <> t.fraud_score OR s.is_fraud_pred <> t.is_fraud_pred")
        .when_not_matched_insert_all()
        .execute()
    )
    logger.info("predictions MERGE: %s", {k: v for k, v in metrics.items() if k.startswith("num_")})
    return metrics
