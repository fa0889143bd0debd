"""Ray Serve application: FraudScorer and Embedder deployments behind one FastAPI ingress.

``serve run serve.config:app`` style entry: ``serve/config.yaml`` points at
``serve.app:build_app``; ``rayapp serve`` and the ``score_transactions`` job deploy it too.

The HTTP routes (models and the ``/v1`` consumer API) are the ``Api`` ingress in ``serve/api.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

import numpy as np
import pyarrow as pa
from ray import serve

from rayapp.errors import PortInUseError
from rayapp.lake import Lake
from rayapp.model_store import LakeModelLoader, load_embedder
from rayapp.models.scoring import InvalidTransactions, OnlineScorer, records_to_rows, score_table
from rayapp.serving import APP_NAME, SCORER, deployment, serve_app_running
from rayapp.settings import Settings, load_settings
from serve.api import Api

logger = logging.getLogger(__name__)

@serve.deployment(name="FraudScorer", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32)
class FraudScorer:
    """Holds one model version and a silver history snapshot; hot-swapped through ``user_config``.

    ``user_config``: ``{"model_version": "latest" | "v…", "history_version": int | null}``.
    """

    def __init__(self, loader: LakeModelLoader) -> None:
        self.loader = loader
        self.scorer: Optional[OnlineScorer] = None
        self.reconfigure({})

    def reconfigure(self, config: dict[str, Any]) -> None:
        version = (config or {}).get("model_version") or "latest"
        model = self.loader.load_model(version)
        history, hv = self.loader.load_history((config or {}).get("history_version"))
        self.scorer = OnlineScorer(model, history, hv)  # one assignment: in-flight requests keep the old one
        logger.info("FraudScorer serving model %s with silver history version %s", model.version, hv)

    def settings_view(self) -> dict[str, Any]:
        """The replica's Settings with secrets masked (what ``deploy()`` handed it)."""
        return self.loader.lake.settings.redacted()

    def describe(self) -> dict[str, Any]:
        assert self.scorer is not None
        m = self.scorer.model
        return {"model_version": m.version, "threshold": m.threshold, "history_version": self.scorer.history_version,
                "roc_auc": m.metrics.get("roc_auc")}  # fmt: skip

    async def score_features(self, batch: pa.Table) -> pa.Table:
        """Batch path: precomputed feature rows in (from the score_transactions job), scores out."""
        assert self.scorer is not None
        return score_table(self.scorer.model, batch)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def score_online(self, requests: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Online path, batched across concurrent requests: one feature computation for all of them."""
        scorer = self.scorer
        assert scorer is not None
        results: list[dict[str, Any]] = [{} for _ in requests]
        valid: list[tuple[int, Any]] = []
        for i, records in enumerate(requests):
            try:
                valid.append((i, records_to_rows(records)))
            except InvalidTransactions as exc:
                results[i] = {"errors": exc.errors}
        import polars as pl

        seen: set[str] = set()
        together: list[tuple[int, Any]] = []
        for i, rows in valid:
            ids = rows["transaction_id"].to_list()
            if len(set(ids)) != len(ids):
                results[i] = {"errors": [{"index": None, "reasons": ["duplicate transaction_id in one request"]}]}
            elif seen & set(ids):  # the same transaction in two concurrent requests: score it apart
                results[i] = {"scores": scorer.model.predict(scorer.features(rows)).to_dicts()}
            else:
                seen |= set(ids)
                together.append((i, rows))
        if together:
            frame = pl.concat([rows for _, rows in together], how="vertical_relaxed")
            scored = {r["transaction_id"]: r for r in scorer.model.predict(scorer.features(frame)).to_dicts()}
            for i, rows in together:
                results[i] = {"scores": [scored[t] for t in rows["transaction_id"].to_list()]}
        return results


@serve.deployment(name="Embedder", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=32)
class EmbedderDeployment:
    """all-MiniLM-L6-v2 (or ``model``) vectors, 384 dims, unit length.

    The model runs off the replica's event loop, on two threads: batch chunks one at a time on
    one, online requests on the other, so an HTTP ``/embed`` is answered while a publish's chunks
    are being embedded instead of queueing behind them.
    """

    def __init__(self, model: Optional[str] = None, threads: Optional[int] = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.embedder = load_embedder(model, threads=threads)
        self._batch = ThreadPoolExecutor(1, thread_name_prefix="embed-batch")
        self._online = ThreadPoolExecutor(1, thread_name_prefix="embed-online")

    def describe(self) -> dict[str, Any]:
        return {"model": self.embedder.name, "dim": self.embedder.dim, "device": self.embedder.device}

    async def embed_many(self, texts: list[str]) -> np.ndarray:
        """Batch path: a list of texts in, a ``len x dim`` array out."""
        return await asyncio.get_running_loop().run_in_executor(self._batch, self.embedder.embed, texts)

    @serve.batch(max_batch_size=128, batch_wait_timeout_s=0.01)
    async def embed_online(self, requests: list[list[str]]) -> list[list[list[float]]]:
        flat = [t for texts in requests for t in texts]
        vecs = await asyncio.get_running_loop().run_in_executor(self._online, self.embedder.embed, flat)
        out, i = [], 0
        for texts in requests:
            out.append(vecs[i : i + len(texts)].tolist())
            i += len(texts)
        return out


def _embedder_gpus(asked: Any) -> float:
    """GPUs for the Embedder replica: as asked, else one when the cluster has a GPU (Ray hides GPUs
    from an actor that asks for none, so the model would stay on the CPU)."""
    if asked is not None and asked != "auto":
        return float(asked)
    import ray

    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def build_app(args: Optional[dict[str, Any]] = None) -> Any:
    """Application builder (``serve.app:build_app``).

    Args (all optional): ``settings`` (a Settings object: what ``deploy()`` hands in; otherwise
    Settings are built here once from ``config`` (TOML), ``data_dir``, ``lake_uri`` and the
    replica's environment), ``model_version``, ``embed_model``, ``embed_threads``,
    ``scorer_replicas``, ``scorer_cpus``, ``embedder_cpus``, ``embedder_gpus`` (default ``auto``: one
    GPU when the cluster has one; the model then runs on CUDA, and on the CPU otherwise).
    """
    args = dict(args or {})
    settings = args.get("settings")
    if not isinstance(settings, Settings):
        overrides = {k: args[k] for k in ("data_dir", "lake_uri") if args.get(k)}
        settings = load_settings(args.get("config"), overrides)
    scorer = FraudScorer.options(
        num_replicas=int(args.get("scorer_replicas", 1)),
        ray_actor_options={"num_cpus": float(args.get("scorer_cpus", 0.25))},
        user_config={"model_version": args.get("model_version", "latest")},
    ).bind(LakeModelLoader(Lake(settings)))
    embedder_actor = {"num_cpus": float(args.get("embedder_cpus", 0.5)), "num_gpus": _embedder_gpus(args.get("embedder_gpus"))}
    embedder = EmbedderDeployment.options(ray_actor_options=embedder_actor).bind(
        # Ray sets OMP_NUM_THREADS=1 for a fractional-CPU actor; torch needs 2 threads for ~570 texts/s.
        args.get("embed_model"), int(args.get("embed_threads") or 2)
    )
    return Api.bind(scorer, embedder, settings)


def _start_proxy(host: str, port: int, timeout_s: float, log_level: str = "INFO") -> None:
    """Start Serve's HTTP proxy on host:port; a port another process holds is a clear error, not a hang."""
    try:
        # The proxy's own limit backs up the API's per-request one (which answers 504 first).
        serve.start(http_options={"host": host, "port": port, "request_timeout_s": timeout_s + 5}, logging_config={"log_level": log_level})
    except Exception as exc:  # noqa: BLE001 - Ray wraps the proxy's bind failure in a RayTaskError
        if "Failed to bind" not in str(exc):
            raise
        serve.shutdown()
        raise PortInUseError(
            f"Serve cannot listen on {host}:{port}: another process holds the port "
            "(choose another with `rayapp serve --port N` or RAYAPP_SERVE_PORT)"
        ) from None


def deploy(settings: Settings, model_version: Optional[str] = None, *, quiet: bool = False) -> str:
    """Run the application on the connected cluster unless it already runs; returns the served model version.

    The replicas get this whole Settings object (secrets stay ``SecretStr``). A ``model_version``
    other than the one served is hot-swapped in through ``user_config``. ``quiet`` (a batch stage
    that starts Serve for itself, watched on a terminal): Serve's controller, proxy and replicas
    log warnings only, no access log lines.
    """
    args = {"settings": settings, "model_version": model_version or "latest"}
    level = "WARNING" if quiet and settings.log_level != "DEBUG" else settings.log_level
    logging_config = {"log_level": level, "enable_access_log": level != "WARNING"}
    if quiet:  # this driver's own Serve lines ("Started Serve", "Application … is ready")
        logging.getLogger("ray.serve").setLevel(level)
    if not serve_app_running():
        _start_proxy(settings.serve_host, settings.serve_port, settings.api_timeout_s, level)
        serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False, logging_config=logging_config)
    handle: Any = deployment(SCORER)
    served = handle.describe.remote().result()["model_version"]
    if model_version and model_version not in ("latest", served):
        serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False, logging_config=logging_config)
        served = handle.describe.remote().result()["model_version"]
    return str(served)


__all__ = ["APP_NAME", "build_app", "deploy", "FraudScorer", "EmbedderDeployment", "Api"]
