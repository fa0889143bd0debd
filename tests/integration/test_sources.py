"""REST API sources: `ingest_api` against a local paged API serving the generator's rows, with
faults injected; every row lands once, the cursor moves only after its page is written, and a
killed-and-resumed run ends exactly where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.compute as pc
import pytest

from jobs import bronze_to_silver as b2s_job
from jobs import ingest as ingest_job
from jobs import ingest_api as ingest_api_job
from rayapp.catalog import BRONZE, LEDGER_API_CURSORS, SILVER
from rayapp.lake import Lake
from rayapp.pipelines.ingest_api import positions
from rayapp.settings import Settings, load_settings
from tests.conftest import REPO
from tests.fakes.paged_api import generated_rows, tenant_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]

TENANTS = ["t1", "t2"]


@pytest.fixture
def paged_api() -> Iterator[Callable[..., str]]:
    """Start paged API servers: ``start(rows=…, pagination=…)`` → base URL; all stopped after the test."""
    from tests.servers import start_reporting_port, stop

    procs = []

    def start(rows: int = 1200, pagination: str = "cursor", seed: int = 3) -> str:
        proc, port = start_reporting_port("tests.fakes.paged_api", "--rows", str(rows), "--seed", str(seed), "--tenants", ",".join(TENANTS),
                                          "--pagination", pagination, "--token", "tok", "--max-page-size", "200")  # fmt: skip
        procs.append(proc)
        return f"http://127.0.0.1:{port}"

    yield start
    for p in procs:
        stop(p)


def _source(base: str, **extra: Any) -> dict[str, Any]:
    return {"url": f"{base}/transactions", "items": "data", "pagination": "cursor", "page_size": 100, "page_size_param": "limit",
            "since_param": "updated_since", "tenants": TENANTS, "auth_value": "Bearer tok", "requests_per_second": 200,
            "timeout_s": 5, **extra}  # fmt: skip


def _settings(tmp: Path, **sources: dict[str, Any]) -> tuple[Settings, list[str]]:
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "data"
    toml = tmp / "rayapp.toml"
    lines = []
    for name, src in sources.items():
        lines.append(f"[sources.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in src.items()]
    toml.write_text("\n".join(lines) + "\n")
    return load_settings(toml, {"data_dir": str(data)}), ["--data-dir", str(data), "--config", str(toml)]


def _inject(base: str, **fault: Any) -> None:
    req = urllib.request.Request(f"{base}/_fake/inject", data=json.dumps(fault).encode(), method="POST")
    urllib.request.urlopen(req, timeout=10).read()


def _landed_ids(settings: Settings) -> Counter[str]:
    """transaction_id of every row in every API landing file (a row twice counts twice)."""
    out: Counter[str] = Counter()
    for f in sorted((Path(settings.landing) / "api").rglob("*.jsonl")):
        out.update(json.loads(line)["transaction_id"] for line in f.read_text().splitlines())
    return out


def test_every_row_lands_once_then_ingests_with_the_source_name(tmp_path: Path, paged_api: Callable[..., str]) -> None:
    base = paged_api(rows=1200)
    settings, args = _settings(tmp_path, shop=_source(base))
    assert ingest_api_job.entrypoint(args) == 0
    rows = generated_rows(1200, 3)
    assert _landed_ids(settings) == Counter(r["transaction_id"] for r in rows)
    assert ingest_job.entrypoint(args) == 0
    bronze = Lake(settings).read(BRONZE)
    assert bronze.num_rows == 1200 and set(bronze["_source_system"].to_pylist()) == {"shop"}
    tenant = {(r["transaction_id"], r["account_id"]): tenant_of(r["account_id"], TENANTS) for r in rows}
    for tid, acct, extra in zip(bronze["transaction_id"].to_pylist(), bronze["account_id"].to_pylist(), bronze["_extra"].to_pylist()):
        assert json.loads(extra)["_tenant"] == tenant[(tid, acct)]  # the tenant is kept

    import hashlib

    ledger = Lake(settings).read(LEDGER_API_CURSORS).to_pylist()
    written = [r for r in ledger if r["file"]]
    assert len(written) == len(list((Path(settings.landing) / "api").rglob("*.jsonl"))) > 1 and all(hashlib.sha256(Path(r["file"]).read_bytes()).hexdigest() == r["checksum"] for r in written)

    # The next run starts a new traversal from the highest updated_at seen: only rows at that mark come again.
    pos = positions(Lake(settings), "shop")
    assert all(p.done for p in pos.values())
    before = _landed_ids(settings)
    assert ingest_api_job.entrypoint(args) == 0
    again = _landed_ids(settings) - before
    expected = Counter(r["transaction_id"] for r in rows if r["updated_at"] == pos[tenant_of(r["account_id"], TENANTS)].high)
    assert again == expected
    assert ingest_job.entrypoint(args) == 0 and b2s_job.entrypoint(args) == 0
    silver = Lake(settings).read(SILVER)
    assert sorted(silver["transaction_id"].to_pylist()) == sorted(set(silver["transaction_id"].to_pylist()))  # no duplicates downstream


@pytest.mark.parametrize("pagination", ["page", "next_link"])
def test_page_and_next_link_pagination(tmp_path: Path, paged_api: Callable[..., str], pagination: str) -> None:
    base = paged_api(rows=700, pagination=pagination)
    extra = {"pagination": pagination, "page_size": 64}
    if pagination == "next_link":
        extra["next_link"] = "next"
    settings, args = _settings(tmp_path, shop=_source(base, **extra))
    assert ingest_api_job.entrypoint(args) == 0
    assert _landed_ids(settings) == Counter(r["transaction_id"] for r in generated_rows(700, 3))


def test_429_5xx_and_slow_pages_are_retried(tmp_path: Path, paged_api: Callable[..., str]) -> None:
    base = paged_api(rows=600)
    settings, args = _settings(tmp_path, shop=_source(base, timeout_s=1, tenants=["t1"]))
    _inject(base, status=429, times=2, retry_after=1)
    _inject(base, status=503, times=1)
    _inject(base, slow=2.5, times=1)  # longer than timeout_s: the client gives up and asks again
    t0 = time.monotonic()
    assert ingest_api_job.entrypoint(args) == 0
    assert time.monotonic() - t0 >= 2.0  # Retry-After was honoured (1 s, twice)
    expected = Counter(r["transaction_id"] for r in generated_rows(600, 3) if tenant_of(r["account_id"], TENANTS) == "t1")
    assert _landed_ids(settings) == expected
    stats = json.loads(urllib.request.urlopen(f"{base}/_fake/stats").read())
    assert stats["faults_served"] == 3


def test_a_4xx_fails_the_run_with_the_apis_message(tmp_path: Path, paged_api: Callable[..., str], capsys: pytest.CaptureFixture[str]) -> None:
    base = paged_api(rows=300)
    _, args = _settings(tmp_path, shop=_source(base, auth_value="Bearer wrong"))
    assert ingest_api_job.entrypoint(args) == 1
    assert "answered 401: invalid or missing token" in capsys.readouterr().err
    _, args = _settings(tmp_path, shop=_source(base, page_size=500))
    assert ingest_api_job.entrypoint(args) == 1
    err = capsys.readouterr().err
    assert "answered 400: limit must be between 1 and 200" in err and "Bearer" not in err  # the credential is in no message
    assert ingest_api_job.entrypoint(args[:2] + ["--source", "nope"]) == 2  # a usage error: nothing starts
    assert "unknown API source 'nope'" in capsys.readouterr().err


def test_a_malformed_page_stops_the_run_and_the_cursor_stays(tmp_path: Path, paged_api: Callable[..., str]) -> None:
    base = paged_api(rows=800)
    settings, args = _settings(tmp_path, shop=_source(base, tenants=["t1"]))
    assert ingest_api_job.entrypoint(args + ["--max-pages", "2"]) == 0
    before = positions(Lake(settings), "shop")["t1"]
    assert before.seq == 2 and not before.done
    _inject(base, truncated=True)
    assert ingest_api_job.entrypoint(args) == 1
    assert positions(Lake(settings), "shop")["t1"] == before  # nothing past the page it could not read
    _inject(base, repeat=True)  # and then the page before, served again
    assert ingest_api_job.entrypoint(args) == 0
    expected = Counter(r["transaction_id"] for r in generated_rows(800, 3) if tenant_of(r["account_id"], TENANTS) == "t1")
    assert _landed_ids(settings) == expected  # every row once: the repeated page was not written again


def test_killed_mid_pagination_then_resumed_equals_an_uninterrupted_run(tmp_path: Path, paged_api: Callable[..., str]) -> None:
    import ray

    rows = 1500
    slow = paged_api(rows=rows)
    fast = paged_api(rows=rows)
    urllib.request.urlopen(urllib.request.Request(f"{slow}/_fake/slow_all", data=b'{"seconds": 0.15}', method="POST"), timeout=10).read()
    killed, killed_args = _settings(tmp_path / "killed", shop=_source(slow, page_size=50))
    clean, clean_args = _settings(tmp_path / "clean", shop=_source(fast, page_size=50))

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.ingest_api", *killed_args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    lake = Lake(killed)
    deadline = time.monotonic() + 120
    while not (lake.exists(LEDGER_API_CURSORS) and lake.read(LEDGER_API_CURSORS).num_rows >= 6):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and what it started here; its Ray tasks die with their owner
    proc.wait()
    done = positions(lake, "shop")
    assert not all(p.done for p in done.values())

    urllib.request.urlopen(urllib.request.Request(f"{slow}/_fake/slow_all", data=b'{"seconds": 0}', method="POST"), timeout=10).read()
    assert ingest_api_job.entrypoint(killed_args + ["--force"]) == 0  # the killed run's lease is taken over
    assert ingest_api_job.entrypoint(clean_args) == 0
    assert _landed_ids(killed) == _landed_ids(clean) == Counter(r["transaction_id"] for r in generated_rows(rows, 3))
    for args in (killed_args, clean_args):
        assert ingest_job.entrypoint(args) == 0 and b2s_job.entrypoint(args) == 0
    business = [c for c in Lake(clean).read(BRONZE).column_names if not c.startswith("_")]

    def bronze(s: Settings) -> list[tuple[Any, ...]]:
        t = Lake(s).read(BRONZE, columns=business)
        return sorted(zip(*(t[c].to_pylist() for c in business)), key=repr)

    assert bronze(killed) == bronze(clean)
    cols = [c for c in Lake(clean).read(SILVER).column_names if not c.startswith("_")]  # run metadata (times, run ids) aside
    k, c = Lake(killed).read(SILVER, columns=cols), Lake(clean).read(SILVER, columns=cols)
    k, c = k.sort_by("transaction_id"), c.sort_by("transaction_id")
    assert [n for n in cols if not k[n].equals(c[n])] == []
    assert pc.count_distinct(k["transaction_id"]).as_py() == k.num_rows


def test_pipeline_runs_ingest_api_first_when_sources_are_configured(tmp_path: Path, paged_api: Callable[..., str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from jobs import pipeline as pipeline_job

    base = paged_api(rows=200)
    _, args = _settings(tmp_path, shop=_source(base))
    assert pipeline_job.entrypoint(args + ["--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert plan.index("ingest_api") < plan.index("ingest ") if "ingest " in plan else "ingest_api" in plan
    assert "no API sources configured" not in plan
    assert pipeline_job.entrypoint(["--data-dir", str(tmp_path / "none"), "--dry-run"]) == 0
    assert "no API sources configured" in capsys.readouterr().out
