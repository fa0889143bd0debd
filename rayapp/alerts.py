"""Alerts: tell someone when a run fails, publishes partially, quarantines or dead-letters too much,
or a source goes stale.

Conditions are checked once when a run ends (:func:`after_run`) and by the ``check_freshness``
job (:func:`stale_sources`); each condition fires at most one alert per run. Notifiers, from
Settings: a generic JSON webhook (``RAYAPP_ALERT_WEBHOOK_URL``), a Slack-compatible incoming
webhook (``RAYAPP_ALERT_SLACK_WEBHOOK_URL``) and e-mail over SMTP (``RAYAPP_ALERT_SMTP_URL`` +
``RAYAPP_ALERT_EMAIL_TO``). A notifier that is down is logged and counted, never fails the run.
Every secret the Settings hold is scrubbed from what an alert carries.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

if TYPE_CHECKING:
    from rayapp.ledger import Ledger, RunRecord
    from rayapp.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Alert:
    condition: str  # run_failed | partial_publish | quarantine_share | dlq_rows | stale_source
    severity: str  # error | warning
    summary: str
    run_id: str | None = None
    stage: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self, settings: Settings) -> dict[str, Any]:
        doc = {"alert": self.condition, "severity": self.severity, "summary": self.summary, "run_id": self.run_id, "stage": self.stage,
               "counts": self.counts, "details": self.details, "lake": settings.lake_root,
               "command": f"rayapp runs --run-id {self.run_id}" if self.run_id else "rayapp runs",
               "at": datetime.now(timezone.utc).isoformat()}  # fmt: skip
        return json.loads(scrub(json.dumps(doc, default=str), settings))


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the Settings hold: SecretStr fields, URL passwords, API source credentials."""
    found: list[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            found.append(raw)
            if "://" in raw:
                password = urlsplit(raw).password
                if password:
                    found.extend([password, unquote(password)])
                found.extend(part for part in raw.split("/") if len(part) >= 16)  # webhook URLs carry their token in the path
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif hasattr(value, "model_fields"):
            for name in type(value).model_fields:
                visit(getattr(value, name))

    visit(settings)
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def scrub(text: str, settings: Settings) -> str:
    for secret in secrets_of(settings):
        text = text.replace(secret, "***")
    return text


def _children(ledger: Ledger, run_id: str) -> list[RunRecord]:
    return [r for r in ledger.runs() if r.parent_run_id == run_id]


#: Jobs whose "partial" means batches in the dead-letter queue.
PUBLISHING = ("publish", "replay_dlq", "pipeline", "clickhouse_to_graph", "clickhouse_to_vectors")


def conditions(ledger: Ledger, record: RunRecord) -> list[Alert]:
    """What is wrong with a run that just ended (at most one alert per condition)."""
    s = ledger.lake.settings
    out: list[Alert] = []
    base = {"run_id": record.run_id, "stage": record.job, "counts": record.counts}
    children = _children(ledger, record.run_id) if record.job == "pipeline" else []
    if record.status == "failed" and not any(c.status == "failed" for c in children):  # a failed stage alerted already
        out.append(Alert("run_failed", "error", f"{record.job} failed: {record.error or 'no reason recorded'}", **base,
                         details={"error": record.error, "parent_run_id": record.parent_run_id}))  # fmt: skip
    if record.status == "partial" and record.job in PUBLISHING and not any(c.status == "partial" for c in children):
        out.append(Alert("partial_publish", "warning", f"{record.job} was partial: batches went to the dead-letter queue", **base,
                         details={"dead_letters": record.details.get("dead_letters")}))  # fmt: skip
    rows_in, quarantined = int(record.counts.get("rows_in", 0) or 0), int(record.counts.get("quarantined", 0) or 0)
    if record.job == "bronze_to_silver" and rows_in and quarantined / rows_in > s.alert_quarantine_share:
        share = quarantined / rows_in
        out.append(Alert("quarantine_share", "warning", f"bronze_to_silver quarantined {share:.1%} of {rows_in} rows "
                         f"(threshold {s.alert_quarantine_share:.1%})", **base,
                         details={"share": round(share, 4), "rules": record.details.get("rules", {})}))  # fmt: skip
    if record.job in ("publish", "replay_dlq", "pipeline") and record.status != "failed":
        pending = ledger.dead_letters()
        rows = sum(d.rows for d in pending)
        if rows > s.alert_dlq_rows:
            by_store: dict[str, int] = {}
            for d in pending:
                by_store[d.store] = by_store.get(d.store, 0) + d.rows
            already = record.job == "pipeline" and any(c.job in ("publish", "replay_dlq") for c in children)
            if not already:
                out.append(Alert("dlq_rows", "warning", f"{rows} rows wait in the dead-letter queue (threshold {s.alert_dlq_rows}): "
                                 "fix the store, then `rayapp run replay_dlq`", **base, details={"rows_by_store": by_store}))  # fmt: skip
    return out


def after_run(ledger: Ledger, record: RunRecord) -> list[Alert]:
    """Check a run that just ended and send its alerts; never raises."""
    try:
        s = ledger.lake.settings
        if not notifiers_configured(s):
            return []
        alerts = conditions(ledger, record)
        for alert in alerts:
            send(alert, s)
        return alerts
    except Exception as exc:  # noqa: BLE001 - alerting never fails a run
        logger.warning("could not check alerts for run %s: %s", record.run_id, exc)
        return []


def notifiers_configured(settings: Settings) -> bool:
    return any(v is not None for v in (settings.alert_webhook_url, settings.alert_slack_webhook_url, settings.alert_smtp_url))


def send(alert: Alert, settings: Settings) -> dict[str, bool]:
    """Deliver ``alert`` to every configured notifier; returns which succeeded (failures logged and counted)."""
    from rayapp.metrics import record_alert

    payload = alert.payload(settings)
    outcome: dict[str, bool] = {}
    targets = [("webhook", settings.alert_webhook_url, lambda: payload),
               ("slack", settings.alert_slack_webhook_url, lambda: slack_payload(payload))]  # fmt: skip
    for name, url, body in targets:
        if url is None:
            continue
        outcome[name] = _post(name, url.get_secret_value(), body(), settings)
    if settings.alert_smtp_url is not None and settings.alert_email_to:
        outcome["email"] = _email(payload, settings)
    for name, ok in outcome.items():
        record_alert(alert.condition, name, ok)
    logger.info("alert %s for run %s: %s", alert.condition, alert.run_id, ", ".join(f"{k} {'sent' if v else 'FAILED'}" for k, v in outcome.items()))
    return outcome


def slack_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message (``text`` for notifications, ``blocks`` for the layout)."""
    icon = ":red_circle:" if payload["severity"] == "error" else ":warning:"
    facts = [f"*stage* {payload['stage'] or '-'}", f"*run* `{payload['run_id'] or '-'}`"]
    counts = ", ".join(f"{k}={v}" for k, v in (payload.get("counts") or {}).items() if v)
    text = f"{icon} rayapp {payload['alert']}: {payload['summary']}"
    return {"text": text, "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(facts + ([f"*counts* {counts}"] if counts else []))}]},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"`{payload['command']}`"}},
    ]}  # fmt: skip


def _post(name: str, url: str, body: dict[str, Any], settings: Settings) -> bool:
    import httpx

    for attempt in range(2):
        try:
            resp = httpx.post(url, json=body, timeout=settings.alert_timeout_s)
            if resp.status_code < 300:
                return True
            problem = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        if attempt == 1:
            logger.warning("alert notifier %s failed: %s (the run goes on)", name, problem)  # the URL holds a token: not logged
    return False


def _email(payload: dict[str, Any], settings: Settings) -> bool:
    import smtplib
    from email.message import EmailMessage

    assert settings.alert_smtp_url is not None
    url = urlsplit(settings.alert_smtp_url.get_secret_value())
    msg = EmailMessage()
    msg["Subject"] = f"[rayapp] {payload['alert']}: {payload['summary'][:120]}"
    msg["From"] = settings.alert_email_from
    msg["To"] = ", ".join(settings.alert_email_to)
    msg.set_content(json.dumps(payload, indent=2))
    try:
        cls = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
        with cls(url.hostname or "localhost", url.port or (465 if url.scheme == "smtps" else 25), timeout=settings.alert_timeout_s) as smtp:
            if url.scheme == "smtp+starttls":
                smtp.starttls()
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(msg)
        return True
    except (OSError, smtplib.SMTPException) as exc:
        logger.warning("alert notifier email failed: %s (the run goes on)", type(exc).__name__)
        return False


def stale_sources(ledger: Ledger, now: datetime | None = None, hours: float | None = None) -> tuple[list[dict[str, Any]], Alert | None]:
    """Every source (the landing zone's own and each API source) with its last successful ingest;
    one ``stale_source`` alert naming those silent for longer than ``hours`` (default ``RAYAPP_ALERT_FRESHNESS_HOURS``)."""
    from rayapp.catalog import LEDGER_FILES
    from rayapp.pipelines.ingest import source_system_of

    s = ledger.lake.settings
    now = now or datetime.now(timezone.utc)
    limit = s.alert_freshness_hours if hours is None else hours
    last: dict[str, datetime] = {}
    files = ledger.lake.read(LEDGER_FILES, columns=["path", "status", "recorded_at"])
    for path, status, at in zip(*(files[c].to_pylist() for c in ("path", "status", "recorded_at"))) if files.num_rows else ():
        if status == "ingested":
            src = source_system_of(path, s.landing, s.source_system)
            last[src] = max(last.get(src, at), at)
    names = sorted({s.source_system, *s.sources, *last})
    report = []
    for name in names:
        seen = last.get(name)
        age = (now - seen).total_seconds() / 3600 if seen else None
        report.append({"source": name, "last_ingest": seen.isoformat() if seen else None, "hours": None if age is None else round(age, 2),
                       "stale": age is None or age > limit})  # fmt: skip
    stale = [r for r in report if r["stale"]]
    if not stale:
        return report, None
    listed = ", ".join(f"{r['source']} ({_age(r['hours'])})" for r in stale)
    return report, Alert("stale_source", "warning", f"no successful ingest for over {limit:g} h: {listed}",
                         counts={"stale_sources": len(stale)}, details={"sources": stale})  # fmt: skip


def _age(hours: float | None) -> str:
    return "never" if hours is None else f"{hours:.1f} h ago"
