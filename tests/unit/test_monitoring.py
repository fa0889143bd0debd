"""cluster/monitoring: the alert rules and the Grafana dashboard parse and query only names Ray
exports for rayapp's metrics; the README documents exactly those names."""

from __future__ import annotations

import json
import re

import promql_parser
import yaml

from rayapp.metrics import METRICS, exported_name, exported_series
from tests.conftest import REPO

MONITORING = REPO / "cluster" / "monitoring"
EXPORTED = {series for name in METRICS for series in exported_series(name)}


def _names(expr: str) -> set[str]:
    return set(re.findall(r"\bray_rayapp_[a-z_]+", expr))


def test_exported_names_follow_ray() -> None:
    # Ray prefixes `ray_` and ends a counter in `_total` (checked against a live endpoint in tests/e2e/test_job_submit.py).
    assert exported_name("rayapp_rows_total") == "ray_rayapp_rows_total"
    assert exported_name("rayapp_dlq_rows") == "ray_rayapp_dlq_rows"
    assert exported_series("rayapp_run_seconds") == ["ray_rayapp_run_seconds_bucket", "ray_rayapp_run_seconds_count", "ray_rayapp_run_seconds_sum"]
    assert all(m.kind != "counter" or m.name.endswith("_total") for m in METRICS.values())
    assert all("job" in m.labels for m in METRICS.values() if m.name.startswith(("rayapp_run", "rayapp_rows", "rayapp_files")))


def test_alert_rules_parse_and_use_exported_names() -> None:
    doc = yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    for name, rule in rules.items():
        promql_parser.parse(rule["expr"])  # raises on a syntax error
        used = _names(rule["expr"])
        assert used and used <= EXPORTED, (name, used - EXPORTED)
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"], name
    # The conditions operators asked for.
    assert 'status=~"failed|abandoned"' in rules["RayappRunFailed"]["expr"]
    assert 'status="partial"' in rules["RayappPartialPublish"]["expr"]
    assert "ray_rayapp_dlq_rows" in rules["RayappDeadLetters"]["expr"] and rules["RayappDeadLetters"]["for"] == "15m"
    assert 'job="ingest"' in rules["RayappNoSuccessfulIngest"]["expr"]


def test_grafana_dashboard_queries_exported_names() -> None:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["templating"]["list"][0]["type"] == "datasource"
    titles = [p["title"] for p in dash["panels"]]
    for wanted in ("Rows written per second", "Quarantine share", "dead-letter queue", "latency p95", "Run outcomes"):
        assert any(wanted in t for t in titles), wanted
    ids = set()
    for panel in dash["panels"]:
        ids.add(panel["id"])
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            promql_parser.parse(target["expr"])
            used = _names(target["expr"])
            assert used and used <= EXPORTED, (panel["title"], used - EXPORTED)
    assert len(ids) == len(dash["panels"])


def test_readme_documents_the_exported_names() -> None:
    readme = (REPO / "README.md").read_text()
    for name in METRICS:
        assert f"`{exported_name(name)}" in readme, exported_name(name)
    assert not re.search(r"(?<![_a-z])rayapp_rows_total", readme)  # only the exported spelling
