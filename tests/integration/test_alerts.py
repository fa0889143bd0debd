"""Alerts to a local webhook receiver (and a local SMTP server): one per condition per run, with the
run id and the command to look, no secrets, and a notifier that is down never fails a run."""

from __future__ import annotations

import dataclasses
import json
import threading
import warnings
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

import jobs.ingest
from jobs import bronze_to_silver as b2s_job
from jobs import check_freshness as freshness_job
from jobs import generate as generate_job
from jobs import ingest as ingest_job
from jobs import pipeline as pipeline_job
from rayapp.alerts import conditions
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.ledger import DeadLetter, FileRecord, Ledger, RunRecord, utcnow
from rayapp.settings import Settings, load_settings

pytestmark = [pytest.mark.integration]

TOKEN = "T0KEN-" + "x" * 24
PASSWORD = "pg-pass-Zq81"


class Receiver:
    """Webhook receiver on 127.0.0.1: keeps every POST (path, raw body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                received.append((self.path, self.rfile.read(int(self.headers.get("Content-Length") or 0))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(b) for p, b in self.posts if p.startswith(prefix)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _settings(tmp_path: Path, receiver: Receiver | None, **extra: Any) -> Settings:
    base = receiver.base if receiver else "http://127.0.0.1:9"  # port 9: nothing listens there
    return load_settings(overrides={
        "data_dir": str(tmp_path / "data"), "alert_webhook_url": f"{base}/hook/{TOKEN}", "alert_slack_webhook_url": f"{base}/slack/{TOKEN}",
        "postgres_url": f"postgresql://rayapp:{PASSWORD}@127.0.0.1:1/db", "pinecone_api_key": "pc-" + "s" * 20, "alert_timeout_s": 2, **extra,
    })  # fmt: skip


def _broken(message: str) -> Any:
    def body(ctx: Any, args: Any) -> Any:
        raise RayappError(message)

    return body


def test_a_failed_run_alerts_once_with_its_run_id_and_no_secret(tmp_path: Path, receiver: Receiver, ray_local: None) -> None:
    settings = _settings(tmp_path, receiver)
    spec = dataclasses.replace(jobs.ingest.SPEC, body=_broken(f"cannot reach postgresql://rayapp:{PASSWORD}@127.0.0.1:1/db"))
    assert spec.execute(settings, spec.options()) == 1
    run = Ledger(Lake(settings)).last_run("ingest", status=("failed",))
    assert run is not None
    [hook] = receiver.bodies("/hook/")
    assert hook["alert"] == "run_failed" and hook["severity"] == "error" and hook["run_id"] == run.run_id and hook["stage"] == "ingest"
    assert hook["command"] == f"rayapp runs --run-id {run.run_id}" and "cannot reach" in hook["summary"]
    [slack] = receiver.bodies("/slack/")
    assert run.run_id in json.dumps(slack["blocks"]) and slack["text"].startswith(":red_circle: rayapp run_failed")
    raw = b"".join(b for _, b in receiver.posts)
    assert PASSWORD.encode() not in raw and TOKEN.encode() not in raw and b"s" * 20 not in raw


def test_quarantine_share_alerts_and_a_notifier_that_is_down_fails_nothing(tmp_path: Path, receiver: Receiver, ray_local: None) -> None:
    settings = _settings(tmp_path, receiver, alert_quarantine_share=0.001)
    args = ["--data-dir", str(settings.data_dir)]
    assert generate_job.entrypoint(args + ["--rows", "3000", "--files", "1", "--seed", "4"]) == 0
    assert ingest_job.SPEC.execute(settings, ingest_job.SPEC.options()) == 0
    assert receiver.posts == []  # nothing wrong yet
    assert b2s_job.SPEC.execute(settings, b2s_job.SPEC.options()) == 0
    run = Ledger(Lake(settings)).last_run("bronze_to_silver")
    assert run is not None and run.counts["quarantined"] > 0
    [hook] = receiver.bodies("/hook/")
    assert hook["alert"] == "quarantine_share" and hook["run_id"] == run.run_id
    assert hook["details"]["share"] == round(run.counts["quarantined"] / run.counts["rows_in"], 4) and hook["details"]["rules"]

    down = _settings(tmp_path / "down", None, alert_quarantine_share=0.001)
    assert generate_job.entrypoint(["--data-dir", str(down.data_dir), "--rows", "3000", "--files", "1", "--seed", "4"]) == 0
    assert ingest_job.SPEC.execute(down, ingest_job.SPEC.options()) == 0
    assert b2s_job.SPEC.execute(down, b2s_job.SPEC.options()) == 0  # the alert could not be delivered; the run succeeded anyway


def test_one_alert_for_a_failed_stage_of_a_pipeline(tmp_path: Path, receiver: Receiver, ray_local: None, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path, receiver)
    monkeypatch.setattr(jobs.ingest, "SPEC", dataclasses.replace(jobs.ingest.SPEC, body=_broken("landing unreadable")))
    assert pipeline_job.SPEC.execute(settings, pipeline_job.SPEC.options(only=["ingest"])) == 1
    [hook] = receiver.bodies("/hook/")  # the stage's alert; the pipeline's own failure is the same news
    assert hook["alert"] == "run_failed" and hook["stage"] == "ingest"


def test_partial_publish_and_dead_letters_are_conditions(tmp_path: Path) -> None:
    settings = _settings(tmp_path, None, alert_dlq_rows=100)
    ledger = Ledger(Lake(settings))
    record = RunRecord(run_id="publish-1", job="publish", started_at=utcnow(), status="partial", counts={"postgres.failed": 250})
    assert [a.condition for a in conditions(ledger, record)] == ["partial_publish"]  # no dead letters recorded yet
    ledger.record_dead_letters([DeadLetter("d1", "postgres", "transactions", "publish-1", "down", 5, 250, "/x.parquet")])
    found = {a.condition: a for a in conditions(ledger, record)}
    assert set(found) == {"partial_publish", "dlq_rows"} and found["dlq_rows"].details == {"rows_by_store": {"postgres": 250}}
    assert conditions(ledger, dataclasses.replace(record, status="succeeded", job="ingest")) == []


def test_check_freshness_alerts_on_silent_sources(tmp_path: Path, receiver: Receiver) -> None:
    settings = _settings(tmp_path, receiver, sources={"shop": {"url": "http://127.0.0.1:9/tx"}})
    ledger = Ledger(Lake(settings))
    landing = settings.landing
    ledger.record_files([FileRecord(f"{landing}/a.csv", "c1", 10, "ingested", 5, None, "ingest-1", 1)])
    args = freshness_job.SPEC.options()
    assert freshness_job.SPEC.execute(settings, args) == 0
    [hook] = receiver.bodies("/hook/")
    assert hook["alert"] == "stale_source" and [s["source"] for s in hook["details"]["sources"]] == ["shop"]  # never ingested
    assert "shop (never)" in hook["summary"]
    receiver.posts.clear()
    ledger.record_files([FileRecord(f"{landing}/api/shop/default/full/page-000001.jsonl", "c2", 10, "ingested", 5, None, "ingest-2", 2)])
    assert freshness_job.SPEC.execute(settings, args) == 0
    assert receiver.posts == []  # both fresh
    later = datetime.now(timezone.utc) + timedelta(hours=30)
    from rayapp.alerts import stale_sources

    report, alert = stale_sources(ledger, now=later)
    assert alert is not None and {r["source"] for r in report if r["stale"]} == {"landing", "shop"}


def test_email_alerts_over_smtp(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asyncore
        import smtpd

    got: list[tuple[str, list[str], bytes]] = []

    class Server(smtpd.SMTPServer):
        def process_message(self, peer: Any, mailfrom: str, rcpttos: list[str], data: bytes, **kw: Any) -> None:
            got.append((mailfrom, rcpttos, data))

    server = Server(("127.0.0.1", 0), None)
    port = server.socket.getsockname()[1]
    loop = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.1, "count": 100}, daemon=True)
    loop.start()
    from rayapp.alerts import Alert, send

    settings = load_settings(overrides={"data_dir": str(tmp_path), "alert_smtp_url": f"smtp://127.0.0.1:{port}", "alert_email_to": ["oncall@example.com"]})
    outcome = send(Alert("run_failed", "error", "ingest failed: boom", run_id="ingest-9", stage="ingest"), settings)
    loop.join(timeout=15)
    server.close()
    assert outcome == {"email": True}
    [(sender, to, data)] = got
    assert to == ["oncall@example.com"] and b"[rayapp] run_failed: ingest failed: boom" in data and b"rayapp runs --run-id ingest-9" in data
