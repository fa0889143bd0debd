"""The fraud model: LightGBM on :mod:`rayapp.models.features`; train, evaluate, predict.

Pure: no files, no environment. A model turns into its artifact texts (``model.txt``,
``features.json``, ``metrics.json``) and back; :mod:`rayapp.model_store` keeps them on disk.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import polars as pl

from rayapp.models.features import FEATURES, feature_matrix

logger = logging.getLogger(__name__)

PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "seed": 7,
    "deterministic": True,
    "num_threads": 2,
    "verbose": -1,
}
ROUNDS = 150
PREDICT_THREADS = 2


class ModelNotFoundError(FileNotFoundError):
    """No model artifact where one was expected."""


@dataclass
class FraudModel:
    """A trained booster plus what it needs to turn transactions into scores."""

    version: str
    booster: Any
    categories: list[str]
    threshold: float
    metrics: dict[str, Any]

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, num_threads=PREDICT_THREADS), dtype=np.float64)

    def predict(self, features: pl.DataFrame) -> pl.DataFrame:
        """``transaction_id``, ``fraud_score`` in [0, 1], ``is_fraud_pred`` and ``model_version`` per row."""
        scores = self.predict_matrix(feature_matrix(features)) if features.height else np.zeros(0)
        return pl.DataFrame(
            {
                "transaction_id": features["transaction_id"],
                "fraud_score": scores,
                "is_fraud_pred": scores >= self.threshold,
                "model_version": [self.version] * features.height,
            },
            schema={"transaction_id": pl.String, "fraud_score": pl.Float64, "is_fraud_pred": pl.Boolean, "model_version": pl.String},
        )

    # -- artifact texts --
    def to_artifact(self) -> dict[str, str]:
        """The artifact's files by name, as text."""
        return {
            "model.txt": self.booster.model_to_string(),
            "features.json": json.dumps({"features": list(FEATURES), "categories": self.categories, "threshold": self.threshold}, indent=2),
            "metrics.json": json.dumps(self.metrics, indent=2),
        }

    @classmethod
    def from_artifact(cls, version: str, files: Mapping[str, str]) -> "FraudModel":
        """A model from its artifact texts.

        Raises:
            ModelNotFoundError: the artifact was trained on other features.
        """
        import lightgbm as lgb

        meta = json.loads(files["features.json"])
        if tuple(meta["features"]) != FEATURES:
            raise ModelNotFoundError(f"model {version} was trained on other features: retrain it")
        booster = lgb.Booster(model_str=files["model.txt"])
        return cls(version, booster, list(meta["categories"]), float(meta["threshold"]), json.loads(files["metrics.json"]))


def _auc_pr(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """ROC-AUC (Mann-Whitney, ties averaged) and PR-AUC (average precision)."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan"), float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    roc = (ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg)
    desc = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(y[desc])
    precision = tp / np.arange(1, len(y) + 1)
    ap = float((precision * y[desc]).sum() / pos)
    return float(roc), ap


def evaluation_curves(y: np.ndarray, s: np.ndarray, points: int = 200, bins: int = 20) -> dict[str, Any]:
    """ROC and precision-recall curves (at most ``points`` thresholds each, from the highest score
    down) and the score histogram per label: what the run report plots."""
    hist_edges = np.linspace(0.0, 1.0, bins + 1)
    out: dict[str, Any] = {"score_bins": [round(float(e), 4) for e in hist_edges],
                           "scores_fraud": np.histogram(s[y == 1], hist_edges)[0].tolist(),
                           "scores_legit": np.histogram(s[y == 0], hist_edges)[0].tolist()}  # fmt: skip
    pos, neg = int(y.sum()), len(y) - int(y.sum())
    if pos == 0 or neg == 0:
        return out
    desc = np.argsort(-s, kind="mergesort")
    ys, ss = y[desc], s[desc]
    last_of_score = np.r_[np.nonzero(np.diff(ss))[0], len(ss) - 1]  # one point per distinct threshold
    tp, fp = np.cumsum(ys)[last_of_score], np.cumsum(1 - ys)[last_of_score]
    pick = np.unique(np.linspace(0, len(tp) - 1, min(points, len(tp))).astype(int))
    tp, fp = tp[pick], fp[pick]
    r4 = lambda a: [round(float(v), 5) for v in a]  # noqa: E731
    out["roc"] = {"fpr": [0.0, *r4(fp / neg)], "tpr": [0.0, *r4(tp / pos)]}
    out["pr"] = {"recall": r4(tp / pos), "precision": r4(tp / np.maximum(tp + fp, 1))}
    return out


def _best_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The score cut that maximises F1 on ``(y, s)``."""
    order = np.argsort(-s)
    ys, ss = y[order], s[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(1 - ys)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(int(ys.sum()), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    i = int(np.argmax(f1))
    return float(ss[i])


def train(features: pl.DataFrame, version: str, categories: list[str], eval_fraction: float = 0.2) -> FraudModel:
    """Train on the earlier part of ``features`` (by event time) and evaluate on the later part.

    Args:
        features: labelled rows (``is_fraud`` not null) with every column of ``FEATURES`` and ``event_time``.
        eval_fraction: share of the time range held out for evaluation.
    """
    import lightgbm as lgb

    df = features.filter(pl.col("is_fraud").is_not_null()).sort(["event_time", "transaction_id"])
    if df.height < 100:
        raise ValueError(f"only {df.height} labelled transactions: need at least 100 to train")
    t_min, t_max = df["event_time"].min(), df["event_time"].max()
    cut = t_min + (t_max - t_min) * (1 - eval_fraction)  # type: ignore[operator]
    train_df, eval_df = df.filter(pl.col("event_time") < cut), df.filter(pl.col("event_time") >= cut)
    # The last slice of the training period picks the threshold (never the evaluation period).
    val_cut = t_min + (cut - t_min) * 0.85  # type: ignore[operator]
    fit_df, val_df = train_df.filter(pl.col("event_time") < val_cut), train_df.filter(pl.col("event_time") >= val_cut)
    y = lambda d: d["is_fraud"].cast(pl.Int64).to_numpy()  # noqa: E731
    booster = lgb.train(PARAMS, lgb.Dataset(feature_matrix(fit_df), y(fit_df), feature_name=list(FEATURES)), ROUNDS)
    model = FraudModel(version, booster, categories, 0.5, {})
    threshold = _best_threshold(y(val_df), model.predict_matrix(feature_matrix(val_df))) if val_df.height else 0.5
    # Refit on the whole training period with the same settings.
    model.booster = lgb.train(PARAMS, lgb.Dataset(feature_matrix(train_df), y(train_df), feature_name=list(FEATURES)), ROUNDS)
    model.threshold = threshold
    ye, se = y(eval_df), model.predict_matrix(feature_matrix(eval_df))
    roc, pr = _auc_pr(ye, se)
    pred = se >= threshold
    tp = int((pred & (ye == 1)).sum())
    model.metrics = {
        "version": version,
        "roc_auc": roc,
        "pr_auc": pr,
        "threshold": threshold,
        "precision": tp / max(int(pred.sum()), 1),
        "recall": tp / max(int(ye.sum()), 1),
        "rows": {"train": train_df.height, "eval": eval_df.height, "train_fraud": int(y(train_df).sum()), "eval_fraud": int(ye.sum())},
        "split_time": str(cut),
        "features": list(FEATURES),
        "importance": dict(zip(FEATURES, (int(v) for v in model.booster.feature_importance("gain")))),
        "curves": evaluation_curves(ye, se),
    }
    logger.info("trained fraud model %s: ROC-AUC %.4f, PR-AUC %.4f on %d held-out rows", version, roc, pr, eval_df.height)
    return model
