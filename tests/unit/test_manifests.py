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
        "ray-job.pipeline.yaml", "ray-cronjob.pipeline.yaml", "ray-service.models.yaml", "ray-cluster.dev.yaml"
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
