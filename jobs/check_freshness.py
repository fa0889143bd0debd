"""Job `check_freshness`: alert when a source has had no successful ingest for too long."""

from __future__ import annotations

import argparse
import sys

from rayapp.jobkit import Job, JobContext, JobResult


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hours", type=float, help="how long a source may stay silent (default: RAYAPP_ALERT_FRESHNESS_HOURS)")


def _validate(args: argparse.Namespace) -> None:
    from rayapp.errors import ConfigError

    if args.hours is not None and args.hours <= 0:
        raise ConfigError("--hours must be > 0")


def _body(ctx: JobContext, args: argparse.Namespace) -> JobResult:
    from rayapp.alerts import send, stale_sources

    report, alert = stale_sources(ctx.ledger, hours=args.hours)
    lines = [f"  {r['source']:<20} last ingest {r['last_ingest'] or 'never':<34} {'STALE' if r['stale'] else 'fresh'}" for r in report]
    sent: dict[str, bool] = {}
    if alert is not None:
        alert.run_id, alert.stage = ctx.run_id, "check_freshness"
        sent = send(alert, ctx.settings)
        lines.append(alert.summary + (f" (alerted: {', '.join(k for k, ok in sent.items() if ok) or 'no notifier took it'})" if sent
                                      else " (no notifier configured: set RAYAPP_ALERT_WEBHOOK_URL)"))  # fmt: skip
    return JobResult(counts={"sources": len(report), "stale_sources": sum(r["stale"] for r in report)},
                     details={"sources": report, "alerted": sent}, summary="\n".join(["sources:", *lines]))  # fmt: skip


DESCRIPTION = "Alert on sources with no successful ingest for RAYAPP_ALERT_FRESHNESS_HOURS (run it from cron)"
SPEC = Job("check_freshness", DESCRIPTION, _body, _arguments, lease=False, needs_ray=False, validate=_validate)
entrypoint = SPEC.entrypoint
JOB = (entrypoint, DESCRIPTION)

if __name__ == "__main__":
    sys.exit(SPEC.entrypoint(sys.argv[1:]))
