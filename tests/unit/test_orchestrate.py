"""Stage outcomes in a pipeline are the stages' run outcomes."""

from __future__ import annotations

from rayapp.orchestrate import Stage, run_stages


def test_partial_stage_is_partial_and_later_stages_still_run() -> None:
    ran: list[str] = []

    def stage(name: str, code: int) -> Stage:
        def run(parent: str) -> int:
            assert parent == "pipeline-1"
            ran.append(name)
            return code

        return Stage(name, run)

    out = run_stages([stage("ingest", 0), stage("publish", 3), stage("after", 0)], "pipeline-1")
    assert [(s["stage"], s["status"]) for s in out.stages] == [("ingest", "succeeded"), ("publish", "partial"), ("after", "succeeded")]
    assert out.failed is None and ran == ["ingest", "publish", "after"]

    ran.clear()
    out = run_stages([stage("ingest", 75), stage("bronze_to_silver", 0)], "pipeline-1")
    assert out.failed == "ingest" and ran == ["ingest"]  # busy counts as failed: later stages do not run
    assert [(s["stage"], s["status"]) for s in out.stages] == [("ingest", "failed"), ("bronze_to_silver", "not run")]
