"""Exit-code semantics of rayapp.tools.ray_jobs (what the Airflow DAG relies on), on a scripted Jobs API client."""

from __future__ import annotations

from typing import Any

import pytest

from rayapp.tools.ray_jobs import JobFailed, JobOutcome, judge, submit_and_wait


@pytest.mark.parametrize(
    ("status", "code", "allow_partial", "retryable"),
    [("SUCCEEDED", 0, False, None), ("FAILED", 3, True, None), ("FAILED", 3, False, False), ("FAILED", 2, False, False),
     ("FAILED", 4, False, False), ("FAILED", 75, False, True), ("FAILED", 1, False, True), ("STOPPED", None, False, True)],
)  # fmt: skip
def test_exit_codes_map_to_retry_or_fail(status: str, code: int | None, allow_partial: bool, retryable: bool | None) -> None:
    outcome = JobOutcome("raysubmit_1", status, code, 1.0)
    if retryable is None:
        judge(outcome, allow_partial)
        return
    with pytest.raises(JobFailed) as err:
        judge(outcome, allow_partial)
    assert err.value.retryable is retryable and f"exited {code}" in str(err.value)


class ScriptedClient:
    """The JobSubmissionClient methods submit_and_wait uses, answering from a script."""

    def __init__(self, address: str, headers: dict[str, str] | None = None) -> None:
        self.headers = headers
        self.polls = 0
        self.submits = 0
        self.stopped: list[str] = []

    def submit_job(self, **kw: Any) -> str:
        self.submits += 1
        if self.submits == 1:
            raise RuntimeError("No available agent to submit job, please try again later.")
        self.entrypoint = kw["entrypoint"]
        return "raysubmit_7"

    def get_job_info(self, job_id: str) -> Any:
        self.polls += 1
        status = "RUNNING" if self.polls < 3 else "FAILED"
        return type("Info", (), {"status": status, "driver_exit_code": 75 if status == "FAILED" else None})()

    def stop_job(self, job_id: str) -> None:
        self.stopped.append(job_id)


def test_submit_waits_and_retries_an_agent_that_is_not_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    made: list[ScriptedClient] = []

    def factory(address: str, headers: dict[str, str] | None = None) -> ScriptedClient:
        made.append(ScriptedClient(address, headers))
        return made[-1]

    with pytest.raises(JobFailed) as err:
        submit_and_wait("http://head:8265", "python -m jobs.publish", headers={"Authorization": "Bearer t"}, client_factory=factory, poll_s=0)
    assert err.value.retryable and err.value.outcome.exit_code == 75 and err.value.outcome.job_id == "raysubmit_7"
    assert made[0].submits == 2 and made[0].polls == 3 and made[0].headers == {"Authorization": "Bearer t"}
