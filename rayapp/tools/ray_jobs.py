"""Submit a job to a Ray cluster through the Ray Jobs API and wait for it, with the CLI's exit-code
semantics: what schedulers (the Airflow DAG in ``cluster/airflow``) call.

Exit codes (:data:`rayapp.exitcodes.EXIT_CODES`): 0 succeeded; 3 partial (a failure unless partial is
allowed); 75 another run holds the stage's lease (retry later); 2 bad arguments and 4 a store
differs from the lake (retrying does not help); anything else failed (a retry may help).
Imports only the Ray Jobs SDK and leaf modules, so a scheduler's workers need nothing else of rayapp's dependencies.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from rayapp.exitcodes import EXIT_BUSY, EXIT_MISMATCH, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE

logger = logging.getLogger(__name__)

_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str
    exit_code: int | None
    seconds: float


class JobFailed(RuntimeError):
    """The job did not succeed; ``retryable`` says whether running it again may help."""

    def __init__(self, message: str, outcome: JobOutcome, retryable: bool) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.retryable = retryable


def judge(outcome: JobOutcome, allow_partial: bool = False) -> None:
    """Raise :class:`JobFailed` unless the outcome counts as success.

    Raises:
        JobFailed: with ``retryable`` per the exit-code semantics above.
    """
    code = outcome.exit_code
    if outcome.status == "SUCCEEDED" and code in (None, EXIT_OK):
        return
    if code == EXIT_PARTIAL and allow_partial:
        return
    reasons = {
        EXIT_PARTIAL: ("partial: batches went to the dead-letter queue (replay_dlq after fixing the store)", False),
        EXIT_USAGE: ("bad arguments or settings", False),
        EXIT_MISMATCH: ("a store differs from the lake (run reconcile --repair)", False),
        EXIT_BUSY: ("another run of the stage holds its lease", True),
    }
    why, retryable = reasons.get(code, (f"failed ({outcome.status})", True))  # type: ignore[arg-type]
    raise JobFailed(f"Ray job {outcome.job_id} exited {code}: {why}", outcome, retryable)


def submit_and_wait(
    address: str,
    entrypoint: str,
    *,
    runtime_env: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    submission_id: str | None = None,
    poll_s: float = 5.0,
    timeout_s: float | None = None,
    allow_partial: bool = False,
    client_factory: Callable[..., Any] | None = None,
) -> JobOutcome:
    """Submit ``entrypoint`` (e.g. ``python -m jobs.publish``) to the cluster whose dashboard is at
    ``address`` and wait for it.

    Args:
        headers: e.g. ``{"Authorization": "Bearer <RAY_AUTH_TOKEN>"}`` for a cluster with token auth.
        submission_id: makes a retried submission of the same logical run idempotent (Ray refuses a duplicate id).

    Raises:
        JobFailed: the job did not succeed (see :func:`judge`); a timeout stops the job and is retryable.
    """
    if client_factory is None:
        from ray.job_submission import JobSubmissionClient

        client_factory = JobSubmissionClient
    client = client_factory(address, headers=headers)
    started = time.monotonic()
    while True:  # a fresh head's job agent may not be up yet: "No available agent ... try again later"
        try:
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id)
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() - started > 300:
                raise
            time.sleep(3)
    logger.info("submitted %s as %s", entrypoint, job_id)
    while True:
        info = client.get_job_info(job_id)
        status = str(getattr(info.status, "value", info.status))
        if status in _TERMINAL:
            outcome = JobOutcome(job_id, status, info.driver_exit_code, time.monotonic() - started)
            break
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            client.stop_job(job_id)
            outcome = JobOutcome(job_id, "TIMEOUT", None, time.monotonic() - started)
            raise JobFailed(f"Ray job {job_id} still running after {timeout_s:g}s: stopped", outcome, True)
        time.sleep(poll_s)
    judge(outcome, allow_partial)
    return outcome
