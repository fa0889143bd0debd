"""Clients of the Serve application: its names, whether it runs, and Ray Data callables that
score and embed through its deployments' handles (the same replicas that answer HTTP)."""

from __future__ import annotations

import pyarrow as pa

APP_NAME = "rayapp"
SCORER = "FraudScorer"
EMBEDDER = "Embedder"


def serve_app_running(app_name: str = APP_NAME) -> bool:
    """Whether the Serve application is deployed and running on the connected cluster."""
    from ray import serve

    try:
        app = serve.status().applications.get(app_name)
    except Exception:  # noqa: BLE001 - Serve not started on this cluster
        return False
    return app is not None and str(getattr(app.status, "value", app.status)) == "RUNNING"


def deployment(name: str, app_name: str = APP_NAME) -> object:
    """A handle to one deployment of the running application."""
    from ray import serve

    from rayapp import logs

    logs.align_serve_client()
    return serve.get_deployment_handle(name, app_name=app_name)


class ServeScorer:
    """Ray Data actor: forwards feature batches to the FraudScorer deployment's replicas."""

    def __init__(self, app_name: str = APP_NAME) -> None:
        self.handle = deployment(SCORER, app_name)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.handle.score_features.remote(batch).result()  # type: ignore[attr-defined]


class ServeEmbedder:
    """Ray Data actor: embeds a text column through the Embedder deployment (batch path).

    Use as ``ds.map_batches(ServeEmbedder, fn_constructor_kwargs={"column": "text"}, batch_format="pyarrow",
    compute=ActorPoolStrategy(size=1), num_cpus=0.2)``; adds ``vector`` (list<float32>, 384 values).
    """

    def __init__(self, column: str = "text", app_name: str = APP_NAME) -> None:
        self.column = column
        self.handle = deployment(EMBEDDER, app_name)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = [t or "" for t in batch[self.column].to_pylist()]
        vecs = self.handle.embed_many.remote(texts).result()  # type: ignore[attr-defined]
        if not texts:
            return batch.append_column("vector", pa.array([], pa.list_(pa.float32(), 384)))
        flat = pa.array(vecs.reshape(-1), pa.float32())
        return batch.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1]))
