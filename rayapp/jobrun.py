"""One job run: reachability, the stage's lease, the ledger record, Ray, the body, and the exit code.

Order matters: a run that cannot reach the lake, or whose stage another live run holds, stops
before it records anything or starts Ray, with its own exit code (see ``jobkit.EXIT_CODES``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rayapp import logs
from rayapp.exitcodes import EXIT_BUSY, EXIT_CODES, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_MISMATCH, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE  # noqa: F401 (re-exported)
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.lease import Lease, LeaseBusy, acquire
from rayapp.ledger import Ledger, RunRecord, StageResult, new_run_id, utcnow
from rayapp.urls import redact_url

if TYPE_CHECKING:
    from rayapp.jobkit import Job
    from rayapp.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class JobResult(StageResult):
    """What a job body returns: a stage's result plus the line(s) printed for the user."""

    summary: str = ""

    @classmethod
    def of(cls, res: StageResult, summary: str = "") -> "JobResult":
        return cls(counts=res.counts, versions_read=res.versions_read, versions_written=res.versions_written,
                   details=res.details, status=res.status, summary=summary)  # fmt: skip


@dataclass
class JobContext:
    job: str
    run_id: str
    settings: Settings
    lake: Lake
    ledger: Ledger
    parent_run_id: str | None = None


def fail(message: str, code: int = 1) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def run_job(job: Job, settings: Settings, args: argparse.Namespace, *, parent_run_id: str | None, debug: bool) -> int:
    """Run ``job`` once (see the module docstring); returns its exit code."""
    logs.configure(settings.log_format.value, "DEBUG" if debug else settings.log_level)
    run_id = new_run_id(job.name)
    logs.bind(run_id=run_id, stage=job.name)
    lake = Lake(settings)
    ledger = Ledger(lake)
    try:
        lake.check_reachable()
        lake.check_conditional_writes()
    except RayappError as exc:
        return fail(str(exc))
    lease: Lease | None = None
    if job.lease:
        try:
            lease = acquire(lake, job.name, run_id, ttl_s=settings.lease_ttl_s, force=bool(getattr(args, "force", False)))
        except LeaseBusy as exc:
            return fail(str(exc), EXIT_BUSY)
        if lease.replaced is not None:
            _after_takeover(lake, ledger, lease)
    record = RunRecord(run_id=run_id, job=job.name, started_at=utcnow(), parent_run_id=parent_run_id,
                       args={**safe_args(args), "settings": settings.redacted()})  # fmt: skip
    try:
        return _run(job, settings, args, lake, ledger, record, lease, debug)
    finally:
        if lease is not None:
            lease.release()


def _run(job: Job, settings: Settings, args: argparse.Namespace, lake: Lake, ledger: Ledger, record: RunRecord,
         lease: Lease | None, debug: bool) -> int:  # fmt: skip
    run_id = record.run_id
    try:
        ledger.record_run(record)
        if job.needs_ray:
            from rayapp.runtime import ensure_ray

            ensure_ray(settings)
        result: JobResult = job.body(JobContext(job.name, run_id, settings, lake, ledger, record.parent_run_id), args)
    except KeyboardInterrupt:
        finish(ledger, record, "failed", error="interrupted")
        return fail(f"{job.name} interrupted", EXIT_INTERRUPTED)
    except RayappError as exc:
        finish(ledger, record, "failed", error=str(exc))
        return fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line unless --debug
        message = one_line(exc)
        logger.debug("%s failed", job.name, exc_info=True)
        finish(ledger, record, "failed", error=message)
        if debug:
            traceback.print_exc()
        return fail(f"{job.name} failed: {message} (run {run_id}; add --debug for the traceback)")
    record.counts = result.counts
    record.versions_read = result.versions_read
    record.versions_written = result.versions_written
    record.details = result.details
    if lease is not None and lease.lost_to is not None:
        error = f"lost its lease to run {lease.lost_to} (taken with --force) while running"
        finish(ledger, record, "failed", error=error)
        return fail(f"{job.name}: {error}")
    finish(ledger, record, result.status)
    if result.summary:
        print(result.summary)
    print(f"{job.name}: {result.status} in {record.duration_s or 0:.1f}s (run {run_id})")
    if result.status == "partial" and not getattr(args, "allow_partial", False):
        sys.stderr.write(f"error: {job.name} was partial: see `rayapp runs --run-id {run_id}` (--allow-partial exits 0)\n")
        return EXIT_PARTIAL
    if result.status == "mismatch":
        sys.stderr.write(f"error: {job.name}: a store differs from the lake: see `rayapp runs --run-id {run_id}`\n")
        return EXIT_MISMATCH
    return EXIT_OK if result.status in ("succeeded", "partial") else EXIT_FAILED


def _after_takeover(lake: Lake, ledger: Ledger, lease: Lease) -> None:
    """The lease was expired (or forced): say so, mark the dead run abandoned, remove its staging."""
    prev = lease.replaced
    assert prev is not None
    if lease.state.forced and prev.live(lease.state.acquired_at):
        sys.stderr.write(f"warning: --force: took the {prev.stage} lease from run {prev.run_id}, which may still be running\n")
        return
    logger.warning("the %s lease of run %s expired (no heartbeat for %.0fs): taking over", prev.stage, prev.run_id,
                   lease.state.acquired_at - prev.heartbeat_at)  # fmt: skip
    run = ledger.get_run(prev.run_id)
    if run is not None and run.status == "running":
        finish(ledger, run, "abandoned", error=f"stopped heart-beating; its {prev.stage} lease expired and run {lease.state.run_id} took over")
    sweep_staging(lake, ledger)


def sweep_staging(lake: Lake, ledger: Ledger) -> list[str]:
    """Remove ``<lake>/_staging/*`` folders of runs that are no longer running; returns them."""
    names = lake.list_names(lake.path("_staging"))
    if not names:
        return []
    status = {r.run_id: r.status for r in ledger.runs()}
    removed = []
    for name in names:
        owner = name.removeprefix("features-")
        if status.get(owner) != "running":
            lake.remove(lake.path("_staging", name))
            removed.append(name)
    if removed:
        logger.info("removed staging left by runs that ended: %s", ", ".join(removed))
    return removed


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500] if first else type(exc).__name__


def finish(ledger: Ledger, record: RunRecord, status: str, error: str | None = None) -> None:
    record.status = status
    record.error = error
    record.ended_at = utcnow()
    try:
        ledger.record_run(record)
    except Exception as exc:  # noqa: BLE001 - an unreachable lake must not hide the real error
        logger.warning("could not write run record %s: %s", record.run_id, one_line(exc))
    from rayapp.alerts import after_run
    from rayapp.metrics import record_run

    record_run(record.job, status, record.duration_s or 0.0, record.counts, record.ended_at.timestamp())

    after_run(ledger, record)  # never raises: a notifier that is down does not fail the run


def safe_args(args: argparse.Namespace) -> dict[str, Any]:
    """A job's arguments for its run record: secrets and URL passwords masked, settings options left out."""
    out: dict[str, Any] = {}
    for k, v in vars(args).items():
        if k in ("config", "data_dir", "lake_uri", "debug"):
            continue  # the settings they made are recorded whole
        if k == "overrides":
            v = [item.split("=", 1)[0] + "=***" if _secretish(item) else item for item in v]
        elif isinstance(v, str) and "://" in v:
            v = redact_url(v)
        out[k] = v
    return out


def _secretish(item: str) -> bool:
    key = item.split("=", 1)[0].lower()
    return any(s in key for s in ("secret", "password", "key", "token", "url"))
