"""Fraud model training, the Serve application over HTTP, and batch scoring through it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

import pytest

from jobs import bronze_to_silver as b2s_job
from jobs import generate as generate_job
from jobs import ingest as ingest_job
from jobs import score_transactions as score_job
from jobs import train_fraud_model as train_job
from rayapp.lake import Lake
from rayapp.ledger import Ledger
from rayapp.catalog import PREDICTIONS
from rayapp.serving import APP_NAME
from rayapp.catalog import SILVER
from rayapp.catalog import CONTRACT_COLUMNS
from rayapp.settings import Settings, load_settings
from rayapp.consumer.keys import KeyStore, Scope
from tests.conftest import on_a_free_port
from tests.http import get_json, post_json

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]
KEY: dict[str, str] = {}


@pytest.fixture(scope="module")
def lake_with_model(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> Settings:
    data = tmp_path_factory.mktemp("models") / "data"
    args = ["--data-dir", str(data)]
    assert generate_job.entrypoint(args + ["--rows", "60000", "--files", "3", "--seed", "5"]) == 0
    assert ingest_job.entrypoint(args) == 0
    assert b2s_job.entrypoint(args) == 0
    assert train_job.entrypoint(args) == 0
    assert train_job.entrypoint(args) == 0  # a second version for the hot swap: the lake is complete before any test
    settings = load_settings(overrides={"data_dir": str(data)})
    KEY["all"] = KeyStore(Lake(settings)).create("tests", tuple(Scope))[1]  # the routes need a key
    return settings


def _args(s: Settings, *extra: str) -> list[str]:
    return ["--data-dir", str(s.data_dir), *extra]


def test_training_learns_fraud(lake_with_model: Settings) -> None:
    run = Ledger(Lake(lake_with_model)).last_run("train_fraud_model")
    assert run is not None
    metrics = run.details["metrics"]
    assert metrics["roc_auc"] >= 0.85, metrics
    assert 0 < metrics["threshold"] < 1
    folder = Path(run.details["path"])
    assert {p.name for p in folder.iterdir()} == {"model.txt", "features.json", "metrics.json"}
    assert (folder.parent / "latest").read_text() == run.details["model_version"]
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["rows"]["eval"] > 0 and saved["pr_auc"] > 0
    assert not {"status", "is_fraud", "updated_at"} & set(saved["features"])  # known only after the payment


def test_features_in_one_task_equal_the_staged_passes(lake_with_model: Settings) -> None:
    """A small silver table is featured in one task; the key-partitioned plan must give the same rows."""
    import os

    import pyarrow as pa

    from rayapp.models.features import FEATURES
    from rayapp.pipelines.features import build_features, categories_of

    lake = Lake(lake_with_model)
    assert lake.rows(SILVER) <= lake_with_model.features_one_task_rows
    categories = categories_of(lake)

    def rows(run: Any) -> pa.Table:
        try:
            return pa.concat_tables(list(run.dataset.iter_batches(batch_format="pyarrow", batch_size=None))).sort_by("transaction_id")
        finally:
            run.cleanup()

    one = build_features(lake, "t-one-task", categories)
    staged = build_features(lake, "t-staged", categories, partitions=3)
    assert os.path.isdir(staged.staging) and not os.path.exists(one.staging)  # the plans differ
    a, b = rows(one), rows(staged)
    assert a.num_rows == b.num_rows == lake.open(SILVER).count()
    assert a.column_names == b.column_names == ["transaction_id", "event_time", "is_fraud", *FEATURES]
    for name in a.column_names:
        assert a[name].equals(b[name]), name


def test_serve_on_a_taken_port_says_so(lake_with_model: Settings) -> None:
    import socket

    from rayapp.errors import PortInUseError
    from rayapp.serving import serve_app_running
    from serve.app import deploy

    assert not serve_app_running()
    with socket.socket() as held:  # another process's server on the port
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}: another process holds the port"):
            deploy(lake_with_model.model_copy(update={"serve_port": port}))
    assert not serve_app_running()  # nothing half-started is left behind


@pytest.fixture(scope="module")
def served(lake_with_model: Settings) -> Iterator[str]:
    """Batch-score through the Serve app, then hand the HTTP base URL to the tests."""
    from ray import serve

    from serve.app import deploy

    def start(port: int) -> int:
        deploy(lake_with_model.model_copy(update={"serve_port": port}))
        return port

    port = on_a_free_port(start)  # the app on a port no other process holds; score_transactions then uses it
    assert score_job.entrypoint(_args(lake_with_model)) == 0
    yield f"http://127.0.0.1:{port}"
    serve.delete(APP_NAME)
    serve.shutdown()


def _post(url: str, body: Any, raw: bytes | None = None) -> tuple[int, Any]:
    return post_json(url, body, KEY["all"], raw)


def _get(url: str) -> Any:
    status, body = get_json(url, KEY["all"])
    assert status == 200, body
    return body


def test_health_and_models(served: str, lake_with_model: Settings) -> None:
    assert _get(f"{served}/healthz") == {"status": "ok"}
    models = _get(f"{served}/models")
    latest = (Path(lake_with_model.data_dir) / "models" / "fraud" / "latest").read_text()
    assert models["fraud"]["model_version"] == latest
    assert models["embedder"]["dim"] == 384


def _silver_sample(s: Settings, n: int) -> list[dict[str, Any]]:
    rows = Lake(s).open(SILVER).to_pyarrow_table(columns=list(CONTRACT_COLUMNS)).slice(100, n).to_pylist()
    return [{k: (str(v) if v is not None else None) for k, v in r.items()} for r in rows]


def test_online_scores_equal_batch_scores(served: str, lake_with_model: Settings) -> None:
    sample = _silver_sample(lake_with_model, 40)
    status, body = _post(f"{served}/fraud/score", sample)
    assert status == 200, body
    online = {r["transaction_id"]: r for r in body["scores"]}
    assert [r["transaction_id"] for r in body["scores"]] == [r["transaction_id"] for r in sample]
    preds = {r["transaction_id"]: r for r in Lake(lake_with_model).open(PREDICTIONS).to_pyarrow_table().to_pylist()}
    for tid, r in online.items():
        assert 0.0 <= r["fraud_score"] <= 1.0
        assert math.isclose(r["fraud_score"], preds[tid]["fraud_score"], abs_tol=1e-6), tid
        assert r["is_fraud_pred"] == preds[tid]["is_fraud_pred"] and r["model_version"] == preds[tid]["model_version"]


def test_bad_requests_get_4xx(served: str, lake_with_model: Settings) -> None:
    assert _post(f"{served}/fraud/score", None, raw=b"{not json")[0] == 400
    assert _post(f"{served}/fraud/score", {"transactions": []})[0] == 422
    assert _post(f"{served}/fraud/score", [1, 2])[0] == 422
    bad = _silver_sample(lake_with_model, 2)
    bad[1]["amount"] = "lots"
    status, body = _post(f"{served}/fraud/score", bad)
    assert status == 422 and body["details"][0]["index"] == 1 and body["details"][0]["reasons"] == ["invalid_amount"]
    assert _post(f"{served}/embed", {"texts": [1]})[0] == 422
    assert _post(f"{served}/embed", {"texts": []})[0] == 422


def test_embed(served: str) -> None:
    status, body = _post(f"{served}/embed", {"texts": ["card purchase at Blue Market", "ATM withdrawal", "card purchase at Blue Market"]})
    assert status == 200 and body["dim"] == 384
    v = body["vectors"]
    norm = lambda x: math.sqrt(sum(a * a for a in x))  # noqa: E731
    assert all(abs(norm(x) - 1) < 1e-4 for x in v)
    assert v[0] == pytest.approx(v[2], abs=1e-5) and v[0] != pytest.approx(v[1], abs=1e-3)


def test_online_embed_is_answered_while_a_batch_is_embedded(served: str) -> None:
    """A publish's long batch chunk must not hold up an HTTP /embed: the model runs off the event loop."""
    import threading
    import time

    from ray import serve

    from rayapp.serving import EMBEDDER

    texts = [f"payment {i} of {i * 7} at merchant number {i % 97} in the evening, card present, online order" for i in range(1500)]
    finished: dict[str, float] = {}
    batch = serve.get_deployment_handle(EMBEDDER, app_name=APP_NAME).embed_many.remote(texts)

    def wait_for_batch() -> None:
        finished["rows"] = len(batch.result(timeout_s=600))
        finished["batch"] = time.monotonic()

    waiter = threading.Thread(target=wait_for_batch)
    waiter.start()
    time.sleep(1.0)  # the batch chunk is being embedded now (it takes several seconds)
    assert "batch" not in finished, "the batch finished too soon to tell anything: give it more texts"
    status, body = _post(f"{served}/embed", {"texts": ["ATM withdrawal"]})
    finished["online"] = time.monotonic()
    assert status == 200 and len(body["vectors"]) == 1
    waiter.join(600)
    assert finished["rows"] == len(texts)
    assert finished["online"] < finished["batch"]  # answered during the batch, not after it


def test_batch_embedding_through_serve_equals_http(served: str) -> None:
    import ray
    from ray.data import ActorPoolStrategy

    from rayapp.serving import ServeEmbedder

    texts = ["Online order at Golden Gadgets", "ATM withdrawal near Blue Market", ""]
    ds = ray.data.from_items([{"text": t} for t in texts]).map_batches(
        ServeEmbedder, batch_format="pyarrow", compute=ActorPoolStrategy(size=1), num_cpus=0.1
    )
    rows = {r["text"]: r["vector"] for r in ds.take_all()}
    status, body = _post(f"{served}/embed", {"texts": texts[:2]})
    assert status == 200
    for text, vec in zip(texts[:2], body["vectors"]):
        assert list(rows[text]) == pytest.approx(vec, abs=1e-5)
    assert len(rows[""]) == 384


def test_batch_scoring_is_idempotent(served: str, lake_with_model: Settings) -> None:
    version = Lake(lake_with_model).open(PREDICTIONS).version()
    silver_rows = Lake(lake_with_model).open(SILVER).count()
    preds = Lake(lake_with_model).open(PREDICTIONS).to_pyarrow_table()
    assert preds.num_rows == silver_rows  # one prediction per silver row and model version
    assert score_job.entrypoint(_args(lake_with_model)) == 0  # nothing changed in silver
    assert score_job.entrypoint(_args(lake_with_model, "--full", "--mode", "inline")) == 0  # same scores inline
    assert Lake(lake_with_model).open(PREDICTIONS).version() == version
    run = Ledger(Lake(lake_with_model)).last_run("score_transactions")
    assert run is not None and run.counts["rows_scored"] == silver_rows and run.counts["unchanged"] == silver_rows


def test_model_hot_swap_via_user_config(served: str, lake_with_model: Settings) -> None:
    from ray import serve

    from serve.app import build_app

    first = _get(f"{served}/models")["fraud"]["model_version"]  # the latest of the two trained versions
    versions = sorted(p.name for p in (Path(lake_with_model.data_dir) / "models" / "fraud").iterdir() if p.is_dir())
    assert len(versions) == 2 and first == (Path(lake_with_model.data_dir) / "models" / "fraud" / "latest").read_text()
    second = next(v for v in versions if v != first)
    args = {"data_dir": str(lake_with_model.data_dir), "model_version": second}
    serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
    assert _get(f"{served}/models")["fraud"]["model_version"] == second
    status, body = _post(f"{served}/fraud/score", _silver_sample(lake_with_model, 3))
    assert status == 200 and {r["model_version"] for r in body["scores"]} == {second}
    serve.run(build_app(args | {"model_version": first}), name=APP_NAME, route_prefix="/", blocking=False)
    assert _get(f"{served}/models")["fraud"]["model_version"] == first  # swapped back: the module's app as it was


def test_overrides_given_to_rayapp_serve_reach_the_replica(served: str, lake_with_model: Settings) -> None:
    """`rayapp serve` builds Settings once and deploy() hands the replicas all of it."""
    from ray import serve

    from rayapp.cli import main
    from rayapp.serving import SCORER, deployment

    serve.delete(APP_NAME)  # deploy afresh, from the CLI
    elsewhere = lake_with_model.data_dir / "clickhouse-elsewhere"
    code = main([*_args(lake_with_model), "--set", f"serve_port={served.rsplit(':', 1)[1]}", "--set", f"clickhouse_url=chdb://{elsewhere}", "--set", "s3_endpoint_url=http://127.0.0.1:9",
                 "--set", "pinecone_api_key=pc-secret", "serve", "--detach"])  # fmt: skip
    assert code == 0
    seen = deployment(SCORER).settings_view.remote().result()  # type: ignore[attr-defined]
    assert seen["clickhouse_url"] == f"chdb://{elsewhere}"
    assert seen["s3_endpoint_url"] == "http://127.0.0.1:9"
    assert seen["data_dir"] == str(lake_with_model.data_dir)
    assert seen["pinecone_api_key"] == "**********"  # still a secret on the replica
    assert _get(f"{served}/healthz") == {"status": "ok"}

