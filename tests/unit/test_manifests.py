"""Smoke: every job and the Serve app import; every KubeRay manifest validates against the v1.7 CRDs."""

from __future__ import annotations

import importlib
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

CRDS = REPO / "kuberay" / "crds"  # vendored KubeRay v1.7 CRDs: every clone validates the manifests
MANIFESTS = sorted((REPO / "kuberay").glob("*.yaml"))
RAY_VERSION = importlib.import_module("ray").__version__


def _crd_schema(kind: str, version: str) -> dict[str, Any]:
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"no CRD for {kind} {version} in {CRDS}")


def _ray_docs() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith("ray.io/"):
                docs.append((path, doc))
    return docs


def test_expected_manifests_exist() -> None:
    assert {p.name for p in MANIFESTS} >= {
        "ray-job.pipeline.yaml", "ray-cronjob.pipeline.yaml", "ray-cronjob.cadences.yaml", "ray-service.models.yaml", "ray-cluster.dev.yaml",
        "secret.example.yaml",
    }  # fmt: skip


@pytest.mark.parametrize(("path", "doc"), _ray_docs(), ids=lambda x: getattr(x, "name", ""))
def test_manifest_validates_against_crd(path: Path, doc: dict[str, Any]) -> None:
    schema = _crd_schema(doc["kind"], doc["apiVersion"].split("/", 1)[1])
    jsonschema.validate(doc["spec"], schema["properties"]["spec"])


def _cluster_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]
    return [s for s in (spec, spec.get("rayClusterSpec"), spec.get("rayClusterConfig"),
                        spec.get("jobTemplate", {}).get("rayClusterSpec")) if s and "headGroupSpec" in s]  # fmt: skip


@pytest.mark.parametrize(("path", "doc"), _ray_docs(), ids=lambda x: getattr(x, "name", ""))
def test_versions_auth_and_entrypoints(path: Path, doc: dict[str, Any]) -> None:
    for cluster in _cluster_specs(doc):
        assert cluster["rayVersion"] == RAY_VERSION
        assert cluster.get("authOptions", {}).get("mode") == "token"
        pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster.get("workerGroupSpecs", [])]
        for pod in pods:
            for c in pod["spec"]["containers"]:
                assert c["image"].startswith("rayapp:"), c["image"]
                assert c["resources"]["requests"] and c["resources"]["limits"]
    job = doc["spec"].get("jobTemplate", doc["spec"])
    if "entrypoint" in job:
        argv = shlex.split(job["entrypoint"])
        assert argv[:2] == ["python", "-m"]
        module = importlib.import_module(argv[2])
        module.SPEC.parser().parse_args(argv[3:])  # every argument is one the job accepts (a bad one exits 2)
        with pytest.raises(SystemExit) as bad:
            module.SPEC.parser().parse_args([*argv[3:], "--no-such-flag"])
        assert bad.value.code == 2  # …and the check can fail
    if "serveConfigV2" in doc["spec"]:
        config = yaml.safe_load(doc["spec"]["serveConfigV2"])
        for app in config["applications"]:
            mod, attr = app["import_path"].split(":")
            assert callable(getattr(importlib.import_module(mod), attr))
            names = {d["name"] for d in app["deployments"]}
            assert names == {"FraudScorer", "Embedder", "Api"}


def test_serve_config_yaml_points_at_the_app() -> None:
    config = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    mod, attr = config["applications"][0]["import_path"].split(":")
    assert callable(getattr(importlib.import_module(mod), attr))


def test_every_job_imports_without_side_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for path in sorted((REPO / "jobs").glob("[!_]*.py")):
        module = importlib.import_module(f"jobs.{path.stem}")
        assert callable(module.JOB[0]) and module.JOB[1]
    importlib.import_module("serve.app")
    assert list(tmp_path.iterdir()) == []  # nothing created at import


def test_dockerfile_pins_ray_image() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{RAY_VERSION}-py311-cpu" in text
    assert "torch==2.13.0" in text


def test_compose_file_has_the_servers_the_opt_in_tests_use() -> None:
    import yaml

    from tests.conftest import REPO

    text = (REPO / "cluster" / "compose.yaml").read_text()
    services = yaml.safe_load(text)["services"]
    assert {"postgres", "clickhouse", "neo4j", "minio"} <= set(services)
    assert all("healthcheck" in services[s] for s in ("postgres", "clickhouse", "neo4j", "minio"))
    assert services["postgres"]["image"] == "postgres:16" and services["neo4j"]["image"] == "neo4j:5"
    tests = (REPO / "tests" / "integration" / "test_publish.py").read_text() + (REPO / "tests" / "conftest.py").read_text()
    for var in ("RAYAPP_IT_POSTGRES_URL", "RAYAPP_IT_CLICKHOUSE_URL", "RAYAPP_IT_NEO4J_URL", "RAYAPP_IT_S3_ENDPOINT",
                "RAYAPP_IT_S3_BUCKET", "RAYAPP_IT_PINECONE_API_KEY"):  # fmt: skip
        assert var in text and var in tests, var  # documented where the servers start, read where the tests run


def test_no_manifest_but_the_example_holds_a_secret() -> None:
    """`kubectl apply` of a job or service manifest must never reset credentials to placeholders."""
    kinds = {p.name: [d["kind"] for d in yaml.safe_load_all(p.read_text()) if d] for p in MANIFESTS}
    assert kinds["secret.example.yaml"] == ["Secret"]
    assert all("Secret" not in k for name, k in kinds.items() if name != "secret.example.yaml")
    secret = yaml.safe_load((REPO / "kuberay" / "secret.example.yaml").read_text())
    names = {ref["secretRef"]["name"] for _, doc in _ray_docs() for c in _containers(doc) for ref in c.get("envFrom", [])}
    assert names == {secret["metadata"]["name"]}  # every manifest reads the example's Secret


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for cluster in _cluster_specs(doc)
            for pod in [cluster["headGroupSpec"]["template"], *[g["template"] for g in cluster.get("workerGroupSpecs", [])]]
            for c in pod["spec"]["containers"]]  # fmt: skip


@pytest.mark.parametrize(("path", "doc"), [(p, d) for p, d in _ray_docs() if d["kind"] in ("RayJob", "RayCronJob")],
                         ids=lambda x: getattr(x, "name", ""))  # fmt: skip
def test_jobs_keep_a_failed_cluster_for_debugging(path: Path, doc: dict[str, Any]) -> None:
    job = doc["spec"].get("jobTemplate", doc["spec"])
    strategy = job["deletionStrategy"]
    # The CRD's CEL rules (jsonschema does not check them): rules or legacy policies, one status per condition.
    assert "deletionRules" in strategy and not {"onSuccess", "onFailure"} & set(strategy)
    for rule in strategy["deletionRules"]:
        assert ("jobStatus" in rule["condition"]) != ("jobDeploymentStatus" in rule["condition"])
    assert not job.get("shutdownAfterJobFinishes") and "ttlSecondsAfterFinished" not in job  # the rules decide
    failed = sorted((r["condition"].get("ttlSeconds", 0), r["policy"]) for r in strategy["deletionRules"] if r["condition"].get("jobStatus") == "FAILED")
    assert failed[0] == (0, "DeleteWorkers") and failed[-1][0] >= 3600 and failed[-1][1] == "DeleteCluster"  # the head stays a while
    assert any(r["condition"].get("jobStatus") == "SUCCEEDED" and r["policy"] == "DeleteCluster" for r in strategy["deletionRules"])


def test_rayservice_serves_what_serve_config_yaml_serves() -> None:
    from ray.serve.schema import ServeDeploySchema

    local = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    service = yaml.safe_load((REPO / "kuberay" / "ray-service.models.yaml").read_text())
    remote = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert remote["applications"] == local["applications"]  # one application, not two that drift apart
    for config in (local, remote):
        ServeDeploySchema.model_validate(config)  # Ray's own schema of a Serve config file
        for d in config["applications"][0]["deployments"]:
            auto = d["autoscaling_config"]
            assert "num_replicas" not in d and 1 <= auto["min_replicas"] <= auto["max_replicas"], d["name"]
    assert local["http_options"]["host"] == "127.0.0.1" and remote["http_options"]["host"] == "0.0.0.0"


def test_the_embedder_asks_for_a_gpu_only_where_the_cluster_has_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from serve.app import _embedder_gpus

    args = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())["applications"][0]["args"]
    assert args["embedder_gpus"] == "auto"
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    assert _embedder_gpus(args["embedder_gpus"]) == 0.0 and _embedder_gpus(None) == 0.0  # a CPU cluster: the model on the CPU
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    assert _embedder_gpus("auto") == 1.0  # Ray hides GPUs from an actor that asks for none
    assert _embedder_gpus(0) == 0.0 and _embedder_gpus("0.5") == 0.5  # as asked
