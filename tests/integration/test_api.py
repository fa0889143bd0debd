"""The consumer API (/v1) over real HTTP, on Serve on the test cluster, against a lake the pipeline
filled and published to the embedded stores. Every answer is checked against the lake itself."""

from __future__ import annotations

import io
import json
import time
from collections import defaultdict
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from jobs import generate as generate_job
from jobs import pipeline as pipeline_job
from rayapp.catalog import GOLD_ACCOUNT, GOLD_MERCHANT, PREDICTIONS, SILVER
from rayapp.consumer import signing
from rayapp.consumer.keys import KeyStore, Scope
from rayapp.lake import Lake
from rayapp.ledger import Ledger
from rayapp.serving import APP_NAME
from rayapp.settings import Settings, load_settings
from tests.conftest import on_a_free_port
from tests.http import call, get_json, post_json

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]

KEYS: dict[str, str] = {}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> Iterator[tuple[str, Settings]]:
    """The pipeline run end to end (scoring and embedding through Serve), the app left serving it."""
    from ray import serve

    from serve.app import deploy

    data = tmp_path_factory.mktemp("api") / "data"
    args = ["--data-dir", str(data)]
    assert generate_job.entrypoint(args + ["--rows", "12000", "--files", "2", "--seed", "21"]) == 0
    assert pipeline_job.entrypoint(args + ["--skip", "score_transactions", "--skip", "publish"]) == 0  # the app needs a model
    settings = load_settings(overrides={"data_dir": str(data)})

    def start(port: int) -> Settings:
        s = settings.model_copy(update={"serve_port": port})
        deploy(s)
        return s

    settings = on_a_free_port(start)
    assert pipeline_job.entrypoint(args + ["--only", "score_transactions", "--only", "publish", "--set", f"serve_port={settings.serve_port}"]) == 0
    store = KeyStore(Lake(settings))
    KEYS["all"] = store.create("all", tuple(Scope))[1]
    for scope in Scope:
        KEYS[scope.value] = store.create(f"only-{scope.value}", (scope,))[1]
    yield f"http://127.0.0.1:{settings.serve_port}", settings
    serve.delete(APP_NAME)
    serve.shutdown()


def _get(url: str, key: str | None = None) -> Any:
    status, body = get_json(url, key if key is not None else KEYS["all"])
    assert status == 200, body
    return body


def _norm(t: pa.Table) -> list[dict[str, Any]]:
    return sorted(t.to_pylist(), key=lambda r: json.dumps(r, default=str, sort_keys=True))


# ---- access control -----------------------------------------------------------------------------

ROUTES = [
    ("GET", "/v1/datasets", None, Scope.DATASETS_READ),
    ("GET", "/v1/datasets/transactions", None, Scope.DATASETS_READ),
    ("GET", "/v1/datasets/transactions/files", None, Scope.DATASETS_READ),
    ("GET", "/v1/datasets/transactions/download?format=csv&date=2025-01-01", None, Scope.DATASETS_READ),
    ("POST", "/v1/search", {"query": "fuel", "kind": "merchants", "k": 2}, Scope.SEARCH),
    ("GET", "/v1/transactions/TX0", None, Scope.LOOKUP),
    ("GET", "/v1/accounts/ACC0/network", None, Scope.LOOKUP),
    ("POST", "/embed", {"texts": ["a"]}, Scope.SCORE),
    ("POST", "/fraud/score", [{"transaction_id": "T"}], Scope.SCORE),
]


def test_every_route_but_healthz_needs_a_key_with_its_scope(app: tuple[str, Settings]) -> None:
    base, _ = app
    assert get_json(f"{base}/healthz", None) == (200, {"status": "ok"})
    for method, path, body, scope in ROUTES:
        status, headers, _ = call(method, base + path, None, body)
        assert status == 401 and headers.get("www-authenticate") == "Bearer", path
        assert call(method, base + path, "rayapp_000000000000_forged", body)[0] == 401, path
        assert call(method, base + path, KEYS["all"], body, headers={"authorization": "Basic " + KEYS["all"]})[0] == 401, path
        for other in Scope:
            status = call(method, base + path, KEYS[other.value], body)[0]
            assert (status == 403) == (other != scope), (path, other, status)
    assert call("GET", f"{base}/models", KEYS["lookup"])[0] == 200  # any live key
    assert call("GET", f"{base}/models")[0] == 401
    schema = _get(f"{base}/openapi.json")
    assert {"SearchRequest", "SearchResponse", "DatasetList", "DatasetDetail", "FileList", "Transaction", "Network", "Error"} <= set(
        schema["components"]["schemas"]
    )
    assert "/v1/datasets/{name}/files" in schema["paths"]


def test_a_revoked_key_stops_working(app: tuple[str, Settings]) -> None:
    from rayapp.cli import main

    base, settings = app
    key = KeyStore(Lake(settings)).create("short-lived", (Scope.DATASETS_READ,))[1]
    assert call("GET", f"{base}/v1/datasets", key)[0] == 200
    assert main(["--data-dir", str(settings.data_dir), "keys", "revoke", "short-lived"]) == 0
    deadline = time.monotonic() + 15  # replicas re-read the key table every few seconds
    while call("GET", f"{base}/v1/datasets", key)[0] != 401:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.5)
    assert call("GET", f"{base}/v1/datasets", KEYS["all"])[0] == 200  # the others still do


# ---- datasets -----------------------------------------------------------------------------------


def test_dataset_list_and_detail_describe_the_lake(app: tuple[str, Settings]) -> None:
    base, settings = app
    lake = Lake(settings)
    listed = {d["name"]: d for d in _get(f"{base}/v1/datasets")["datasets"]}
    tables = {"transactions": SILVER, "predictions": PREDICTIONS, "daily_account_activity": GOLD_ACCOUNT, "merchant_daily_stats": GOLD_MERCHANT}
    assert set(listed) == set(tables)
    for name, table in tables.items():
        assert listed[name]["version"] == lake.version(table)
        assert listed[name]["rows"] == lake.read(table).num_rows > 0
    detail = _get(f"{base}/v1/datasets/daily_account_activity")
    assert [c["name"] for c in detail["schema"]] == GOLD_ACCOUNT.schema.names
    days = sorted({d.isoformat() for d in lake.read(GOLD_ACCOUNT, columns=["activity_date"])["activity_date"].to_pylist()})
    assert detail["partition_columns"] == ["activity_date"] and detail["dates"] == days
    runs = {r.run_id: r for r in Ledger(lake).runs()}
    written = [v for v in detail["versions"] if v["run_id"]]
    assert written and all(runs[v["run_id"]].job == v["job"] == "silver_to_gold" for v in written)
    assert detail["versions"][0]["version"] == lake.version(GOLD_ACCOUNT)
    status, body = get_json(f"{base}/v1/datasets/nope", KEYS["all"])
    assert status == 404 and "unknown dataset" in body["error"]


def test_files_of_a_pinned_snapshot_download_through_their_signed_urls(app: tuple[str, Settings]) -> None:
    base, settings = app
    lake = Lake(settings)
    version = lake.version(GOLD_MERCHANT)
    listing = _get(f"{base}/v1/datasets/merchant_daily_stats/files?version={version}")
    assert listing["version"] == version and listing["files"]
    parts = []
    for f in listing["files"]:
        status, headers, data = call("GET", f["url"])  # no API key: the URL is the credential
        assert status == 200 and len(data) == f["size_bytes"]
        t = pq.read_table(io.BytesIO(data))
        assert t.num_rows == f["rows"]
        day = date.fromisoformat(f["partition_values"]["activity_date"])
        parts.append(t.append_column("activity_date", pa.array([day] * t.num_rows, pa.date32())).select(GOLD_MERCHANT.schema.names))
    assert _norm(pa.concat_tables(parts)) == _norm(lake.read(GOLD_MERCHANT, version=version).select(GOLD_MERCHANT.schema.names))
    one_day = listing["files"][0]["partition_values"]["activity_date"]
    only = _get(f"{base}/v1/datasets/merchant_daily_stats/files?date={one_day}")["files"]
    assert only and {f["partition_values"]["activity_date"] for f in only} == {one_day}
    assert get_json(f"{base}/v1/datasets/merchant_daily_stats/files?version={version + 50}", KEYS["all"])[0] == 404
    assert get_json(f"{base}/v1/datasets/merchant_daily_stats/files?version=-1", KEYS["all"])[0] == 422
    assert get_json(f"{base}/v1/datasets/merchant_daily_stats/files?date=yesterday", KEYS["all"])[0] == 422

    url = listing["files"][0]["url"]
    tampered = url.replace("signature=", "signature=0")
    assert call("GET", tampered)[0] == 403
    other = url.replace(quote(listing["files"][0]["path"]), quote(listing["files"][-1]["path"]))
    assert len(listing["files"]) == 1 or call("GET", other)[0] == 403  # a signature names one file
    key = signing.signing_key(settings)
    path = listing["files"][0]["path"]
    expires, sig = signing.sign(key, f"merchant_daily_stats/{path}", -5)  # the server's own key, expired 5 s ago
    status, _, body = call("GET", f"{base}/v1/blobs/merchant_daily_stats/{quote(path)}?expires={expires}&signature={sig}")
    assert status == 403 and b"expired" in body
    escape = "../../_system/signing.key"  # validly signed, but outside the table
    expires, sig = signing.sign(key, f"merchant_daily_stats/{escape}", 60)
    assert call("GET", f"{base}/v1/blobs/merchant_daily_stats/{quote(escape)}?expires={expires}&signature={sig}")[0] in (403, 404)


def test_download_streams_one_file_of_exactly_the_rows_asked_for(app: tuple[str, Settings]) -> None:
    base, settings = app
    lake = Lake(settings)
    silver = lake.read(SILVER)
    day = sorted({t.date() for t in silver["event_time"].to_pylist()})[1]
    status, headers, data = call("GET", f"{base}/v1/datasets/transactions/download?format=csv&date={day}", KEYS["all"])
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert f"transactions_v{lake.version(SILVER)}_{day}.csv" in headers["content-disposition"]
    got = pcsv.read_csv(io.BytesIO(data), convert_options=pcsv.ConvertOptions(column_types={"transaction_id": pa.string()}))
    days = pc.strftime(silver["event_time"], "%Y-%m-%d")
    expected = silver.filter(pc.equal(days, day.isoformat()))["transaction_id"].to_pylist()
    assert got.num_rows == len(expected) > 0 and sorted(got["transaction_id"].to_pylist()) == sorted(expected)
    status, headers, data = call("GET", f"{base}/v1/datasets/daily_account_activity/download", KEYS["all"])
    assert status == 200
    assert _norm(pq.read_table(io.BytesIO(data)).select(GOLD_ACCOUNT.schema.names)) == _norm(lake.read(GOLD_ACCOUNT).select(GOLD_ACCOUNT.schema.names))
    assert get_json(f"{base}/v1/datasets/transactions/download?format=xlsx", KEYS["all"])[0] == 422


# ---- search and lookups ---------------------------------------------------------------------------


def test_search_finds_a_merchant_by_its_own_profile_text(app: tuple[str, Settings]) -> None:
    import lancedb

    base, settings = app
    merchants = lancedb.connect(str(settings.data_dir / "vectors")).open_table("merchants").to_arrow().to_pylist()
    assert len(merchants) >= 5
    for m in merchants[:5]:
        status, body = post_json(f"{base}/v1/search", {"query": m["text"], "kind": "merchants", "k": 3}, KEYS["search"])
        assert status == 200 and body["hits"][0]["id"] == m["id"], (m["id"], body)
        assert body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3) and body["hits"][0]["metadata"]["name"] == m["name"]
    category = merchants[0]["category"]
    body = post_json(f"{base}/v1/search", {"query": "a shop", "k": 50, "filter": {"category": category}}, KEYS["search"])[1]
    assert {h["metadata"]["category"] for h in body["hits"]} == {category}
    assert len(body["hits"]) == sum(m["category"] == category for m in merchants)
    body = post_json(f"{base}/v1/search", {"query": "card fraud", "kind": "transactions", "k": 5,
                                           "filter": {"fraud_score": {"$gte": 0.9}}}, KEYS["search"])[1]  # fmt: skip
    assert body["hits"] and all(h["metadata"]["fraud_score"] >= 0.9 for h in body["hits"])
    for bad in ({"query": "x", "k": 101}, {"query": "x", "k": "many"}, {"query": "", "k": 1}, {"query": "x", "kind": "people"},
                {"query": "x", "filter": {"owner": "me"}}, {"query": "x", "filter": {"category": {"$gt": "a"}}}, {"query": "x", "extra": 1}):
        status, body = post_json(f"{base}/v1/search", bad, KEYS["search"])
        assert status == 422 and body["error"], (bad, status, body)


def test_transaction_lookup_is_the_lake_row_with_its_latest_prediction(app: tuple[str, Settings]) -> None:
    base, settings = app
    lake = Lake(settings)
    silver = lake.read(SILVER).to_pylist()
    preds = defaultdict(list)
    for p in lake.read(PREDICTIONS).to_pylist():
        preds[p["transaction_id"]].append(p)
    for row in silver[:: max(1, len(silver) // 5)][:5]:
        got = _get(f"{base}/v1/transactions/{row['transaction_id']}", KEYS["lookup"])
        assert got["account_id"] == row["account_id"] and got["status"] == row["status"]
        assert got["amount"] == str(row["amount"]) and datetime.fromisoformat(got["event_time"].replace("Z", "+00:00")) == row["event_time"]
        latest = max(preds[row["transaction_id"]], key=lambda p: p["scored_at"])
        assert got["prediction"]["model_version"] == latest["model_version"]
        assert got["prediction"]["fraud_score"] == pytest.approx(latest["fraud_score"], abs=1e-9)
    status, body = get_json(f"{base}/v1/transactions/TX-NOT-THERE", KEYS["lookup"])
    assert status == 404 and "TX-NOT-THERE" in body["error"]
    assert get_json(f"{base}/v1/transactions/{'x' * 65}", KEYS["lookup"])[0] == 422


def test_account_network_is_the_accounts_sharing_devices_and_merchants(app: tuple[str, Settings]) -> None:
    base, settings = app
    lake = Lake(settings)
    silver = lake.read(SILVER, columns=["transaction_id", "account_id", "device_id", "merchant_id"]).to_pylist()
    by_device = defaultdict(set)
    for r in silver:
        if r["device_id"]:
            by_device[r["device_id"]].add(r["account_id"])
    shared = sorted((d, a) for d, a in by_device.items() if len(a) > 1)
    assert shared, "the generator shares devices between accounts"
    device, accounts = shared[0]
    me = sorted(accounts)[0]
    expected = {(b, d) for d, accts in by_device.items() if me in accts for b in accts if b != me}
    got = _get(f"{base}/v1/accounts/{me}/network?depth=1&limit=1000", KEYS["lookup"])
    device_links = {(link["target"], link["via"]) for link in got["links"] if link["kind"] == "device"}
    assert device_links == expected
    scores = {p["transaction_id"]: p["fraud_score"] for p in lake.read(PREDICTIONS).to_pylist()}
    mine = [scores[r["transaction_id"]] for r in silver if r["account_id"] == me]
    node = next(a for a in got["accounts"] if a["account_id"] == me)
    assert node["depth"] == 0 and node["payments"] == len(mine) and node["max_fraud_score"] == pytest.approx(max(mine), abs=1e-9)
    merchant_peers = {link["target"] for link in got["links"] if link["kind"] == "merchant"}
    my_merchants = {r["merchant_id"] for r in silver if r["account_id"] == me}
    assert merchant_peers <= {r["account_id"] for r in silver if r["merchant_id"] in my_merchants} - {me}
    small = _get(f"{base}/v1/accounts/{me}/network?depth=2&limit=5", KEYS["lookup"])
    assert len(small["links"]) == 5 and small["truncated"] is True
    assert get_json(f"{base}/v1/accounts/{me}/network?depth=3", KEYS["lookup"])[0] == 422
    assert get_json(f"{base}/v1/accounts/ACC-NOBODY/network", KEYS["lookup"])[0] == 404


# ---- hardening --------------------------------------------------------------------------------------


def test_oversized_and_hostile_bodies_get_4xx_not_500(app: tuple[str, Settings]) -> None:
    base, _ = app
    key = KEYS["all"]
    status, body = post_json(f"{base}/fraud/score", None, key, raw=b"[" * 10_000 + b"]" * 10_000)
    assert status == 400 and "nested too deep" in body["error"]
    status, body = post_json(f"{base}/fraud/score", [{"transaction_id": "x" * 5_000_000}], key)
    assert status == 413 and "over" in body["error"]
    status, body = post_json(f"{base}/fraud/score", [{"transaction_id": "x" * 20_000}], key)
    assert status == 413 and "longer than" in body["error"]
    assert post_json(f"{base}/embed", {"texts": ["word"] * 257}, key)[0] == 413
    assert post_json(f"{base}/embed", {"texts": ["x" * 2001]}, key)[0] == 413
    assert post_json(f"{base}/v1/search", None, key, raw=b'{"query": ')[0] == 422
    assert post_json(f"{base}/v1/search", None, key, raw=b"[1, 2]")[0] == 422
    status, _, _ = call("POST", f"{base}/v1/search", key, raw=b"x" * 100, headers={"content-length": "99999999"})
    assert status == 413


def test_keys_and_signed_urls_never_reach_the_logs(app: tuple[str, Settings]) -> None:
    import ray

    base, _ = app
    url = _get(f"{base}/v1/datasets/merchant_daily_stats/files")["files"][0]["url"]
    assert call("GET", url)[0] == 200
    signature = url.rsplit("signature=", 1)[1]
    time.sleep(2)  # let the replicas' log lines reach their files
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # this test cluster's logs only
    secrets = [k.split("_", 2)[2] for k in KEYS.values()] + [signature]
    leaked = [(p.name, s[:8]) for p in logs.rglob("*") if p.is_file() for s in secrets if s.encode() in p.read_bytes()]
    assert leaked == []


def test_slow_requests_answer_504_and_keys_can_be_switched_off_locally(app: tuple[str, Settings]) -> None:
    """With a time limit shorter than any lake read, the API answers 504 and keeps serving; with
    RAYAPP_API_AUTH=false (loopback only) no key is asked for."""
    from ray import serve

    from serve.app import build_app

    base, settings = app
    relaxed = settings.model_copy(update={"api_timeout_s": 0.001, "api_auth": False})
    serve.run(build_app({"settings": relaxed}), name=APP_NAME, route_prefix="/", blocking=False)
    try:
        status, body = get_json(f"{base}/v1/datasets/transactions", None)  # no key: not 401
        assert status == 504 and "longer than" in body["error"]
        assert get_json(f"{base}/healthz")[0] == 200
    finally:
        serve.run(build_app({"settings": settings}), name=APP_NAME, route_prefix="/", blocking=False)
    assert get_json(f"{base}/v1/datasets/transactions", KEYS["all"])[0] == 200
    assert get_json(f"{base}/v1/datasets/transactions", None)[0] == 401  # keys are back on


def test_s3_lake_files_get_real_presigned_urls(s3_server: dict[str, str], s3_bucket: str, tmp_path: Path) -> None:
    """On an s3:// lake the file URLs are S3's own presigned GETs: they download, and S3 refuses them altered or expired."""
    from rayapp.consumer.datasets import Delivery

    settings = load_settings(overrides={"data_dir": str(tmp_path), "lake_uri": f"s3://{s3_bucket}/lake", **s3_server})
    lake = Lake(settings)
    rows = pa.Table.from_pylist(
        [{"merchant_id": f"M{i}", "activity_date": date(2025, 1, 1 + i % 2), "txn_count": i, "total_amount": None, "distinct_accounts": 1,
          "fraud_count": 0, "fraud_rate": 0.0} for i in range(10)], schema=GOLD_MERCHANT.schema)  # fmt: skip
    lake.append(GOLD_MERCHANT, rows)
    listing = Delivery(lake, url_ttl_s=3).files("merchant_daily_stats", None, [date(2025, 1, 2)], "http://unused")
    assert [f["partition_values"] for f in listing["files"]] == [{"activity_date": "2025-01-02"}]
    url = listing["files"][0]["url"]
    assert url.startswith(s3_server["s3_endpoint_url"] + f"/{s3_bucket}/lake/gold/merchant_daily_stats/") and "X-Amz-Expires=3" in url
    status, _, data = call("GET", url)
    assert status == 200 and pq.read_table(io.BytesIO(data))["txn_count"].to_pylist() == [1, 3, 5, 7, 9]
    assert call("GET", url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))[0] == 403
    time.sleep(4.5)
    status, _, body = call("GET", url)
    assert status == 403 and b"Request has expired" in body
    assert datetime.fromisoformat(listing["expires_at"]) < datetime.now(timezone.utc)


def test_docs_page_renders_every_route_offline_in_a_browser(app: tuple[str, Settings], tmp_path: Path) -> None:
    """/docs (Swagger UI from local assets) in headless Chromium: loads with no network, no console
    errors, shows the v1 routes; the screenshot stays in the test's tmp dir."""
    import os
    import shutil
    import subprocess

    base, _ = app
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("RAYAPP_REQUIRE_SERVERS"):
            pytest.fail("chromium is required here (.ci/run installs it)")
        pytest.skip("no chromium installed (apt-get install chromium)")
    assert call("GET", f"{base}/docs/assets/swagger-ui-bundle.js")[0] == 200
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", f"{base}/docs"], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for path in ("/v1/datasets", "/v1/datasets/{name}/files", "/v1/search", "/v1/transactions/{transaction_id}", "/v1/accounts/{account_id}/network"):
        assert f'data-path="{path}"' in dom.stdout, path
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    assert console == []
    shot = tmp_path / "docs.png"
    subprocess.run([*flags, "--window-size=1280,1600", f"--screenshot={shot}", f"{base}/docs"], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000


def _chromium(tmp_path: Path) -> list[str]:
    import os
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("RAYAPP_REQUIRE_SERVERS"):
            pytest.fail("chromium is required here (.ci/run installs it)")
        pytest.skip("no chromium installed (apt-get install chromium)")
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", "--enable-logging=stderr", "--v=0"]  # fmt: skip


def test_run_report_file_and_ui(app: tuple[str, Settings], tmp_path: Path) -> None:
    import base64
    import re
    import subprocess

    from rayapp.report import _stage_figs, build_report, write_report

    base, settings = app
    lake = Lake(settings)
    # /ui: the API key as a bearer token, or as the password of the browser's login prompt.
    status, headers, _ = call("GET", f"{base}/ui")
    assert status == 401 and headers.get("www-authenticate", "").startswith("Basic realm=")
    basic = lambda key: {"authorization": "Basic " + base64.b64encode(f"me:{key}".encode()).decode()}  # noqa: E731
    assert call("GET", f"{base}/ui", headers=basic("rayapp_nope_nope"))[0] == 401
    assert call("GET", f"{base}/ui", headers=basic(KEYS["search"]))[0] == 403
    status, _, page = call("GET", f"{base}/ui", headers=basic(KEYS["datasets:read"]))
    assert status == 200 and b"rayapp run report: pipeline-" in page
    assert call("GET", f"{base}/ui?run_id=nope", KEYS["all"])[0] == 404

    # The figures hold what the lake says: quarantined rows per expectation of the last load equal
    # the reasons recorded in the quarantine table.
    ledger = Ledger(lake)
    b2s = [r for r in ledger.runs(job="bronze_to_silver") if r.status == "succeeded"]
    rules_fig = _stage_figs(b2s[:1])[0]
    plotted = dict(zip(rules_fig.data[0].y, rules_fig.data[0].x))
    reasons = lake.read("quarantine/transactions", columns=["_reasons"])["_reasons"]
    counted: dict[str, int] = defaultdict(int)
    for row in reasons.to_pylist():
        for reason in row or []:
            counted[str(reason).split(":")[0]] += 1
    assert counted and all(plotted[rule] == n for rule, n in counted.items()), (plotted, dict(counted))

    # The page works with no network in a real browser: no console errors, every plot drawn.
    path = write_report(lake, str(tmp_path / "out" / "report.html"))
    html_text = Path(path).read_text()
    assert not re.search(r"<(script|link|img)\b[^>]*\b(src|href)=", html_text)  # nothing fetched: plotly.js is inlined
    n_plots = len(re.findall(r'<div class="plot">', html_text))
    assert n_plots == 9 and "recorded no curves" not in html_text and "no runs yet" not in html_text
    assert build_report(lake).count('<div class="plot">') == n_plots
    flags = _chromium(tmp_path)
    dom = subprocess.run([*flags, "--dump-dom", f"file://{path}"], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    drawn = re.findall(r'<div id="plot-(\d+)" class="[^"]*js-plotly-plot[^"]*"', dom.stdout)
    assert sorted(int(i) for i in drawn) == list(range(n_plots)), drawn
    assert dom.stdout.count('class="main-svg"') >= n_plots
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    assert console == []
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1400,3200", f"--screenshot={shot}", f"file://{path}"], capture_output=True, timeout=180, check=True)
    assert shot.stat().st_size > 50_000
