"""Scoring transactions: features (batch, precomputed) or raw contract records (online) in, scores out.

The online path validates records with the same expectations as bronze -> silver, then
computes history features against a silver snapshot with the same pure functions the batch
job uses, so both paths give the same score for the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import polars as pl
import pyarrow as pa

from rayapp.models import features as fx
from rayapp.models.fraud import FraudModel
from rayapp.quality import Expectations
from rayapp.catalog import BRONZE_SCHEMA, CONTRACT_COLUMNS
from rayapp.transforms.silver import apply_expectations


class InvalidTransactions(ValueError):
    """Some records cannot be scored; ``errors`` says which and why."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid transaction(s)")
        self.errors = errors


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def records_to_rows(records: list[dict[str, Any]]) -> pl.DataFrame:
    """Validate contract-shaped records (values as text or JSON types) into typed feature inputs.

    Raises:
        InvalidTransactions: any record failing a quarantining expectation (all errors listed).
    """
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InvalidTransactions([{"index": None, "reasons": ["body must be a JSON list of transaction objects"]}])
    now = datetime.now(timezone.utc)
    rows = []
    for i, r in enumerate(records):
        row: dict[str, Any] = {c: _text(r.get(c)) for c in CONTRACT_COLUMNS}
        row.update(_extra=None, _batch_id="online", _ingested_at=now, _source_file="online", _source_row=i + 1, _source_system="api")
        rows.append(row)
    bronze = pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA)
    valid, quarantine, _ = apply_expectations(bronze, Expectations(), "online", now)
    if quarantine.num_rows:
        errors = [
            {"index": int(q["_source_row"]) - 1, "transaction_id": q["transaction_id"], "reasons": q["_reasons"]}
            for q in quarantine.to_pylist()
        ]
        raise InvalidTransactions(errors)
    return fx.prepare(valid)


class OnlineScorer:
    """Scores records against a silver snapshot (the history) with a loaded model."""

    def __init__(self, model: FraudModel, history: pl.DataFrame, history_version: int | None) -> None:
        self.model = model
        self.history = history
        self.history_version = history_version

    def features(self, rows: pl.DataFrame) -> pl.DataFrame:
        ids = rows["transaction_id"]
        h = self.history
        related = h.filter(
            ~pl.col("transaction_id").is_in(ids.implode())
            & (
                pl.col("account_id").is_in(rows["account_id"].implode())
                | pl.col("device_id").is_in(rows["device_id"].drop_nulls().implode())
                | pl.col("merchant_id").is_in(rows["merchant_id"].implode())
            )
        )
        frame = pl.concat([related, rows], how="vertical_relaxed")
        out = fx.all_features(frame, self.model.categories)
        return out.filter(pl.col("transaction_id").is_in(ids.implode()))


def score_table(model: FraudModel, features: pa.Table) -> pa.Table:
    """Feature rows in, ``transaction_id, fraud_score, is_fraud_pred, model_version`` out."""
    df = pl.from_arrow(features)
    assert isinstance(df, pl.DataFrame)
    return model.predict(df).to_arrow()
