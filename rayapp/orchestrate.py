"""Running stages in order under one pipeline run: selection, resume, dry run.

The ``pipeline`` job hands in the stages as callables taking the parent run id (the library
never imports ``jobs``); each stage's run is linked to the pipeline's in the ledger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from rayapp.errors import RayappError
from rayapp.jobrun import EXIT_MISMATCH, EXIT_OK, EXIT_PARTIAL
from rayapp.ledger import Ledger

logger = logging.getLogger(__name__)


@dataclass
class Stage:
    name: str
    run: Callable[[str], int]
    options: dict[str, object] = field(default_factory=dict)
    skip_reason: str | None = None


@dataclass
class PipelineOutcome:
    stages: list[dict[str, object]]
    failed: str | None = None


def select(stages: list[Stage], only: list[str], skip: list[str]) -> list[Stage]:
    """Apply ``--only`` / ``--skip`` (names checked against the known stages)."""
    names = [s.name for s in stages]
    for n in [*only, *skip]:
        if n not in names:
            raise RayappError(f"unknown stage {n!r}; stages: {', '.join(names)}")
    for s in stages:
        if only and s.name not in only:
            s.skip_reason = s.skip_reason or "not in --only"
        if s.name in skip:
            s.skip_reason = "--skip"
    return stages


def resume_point(ledger: Ledger, current_run_id: str | None) -> tuple[str | None, set[str]]:
    """The last failed pipeline run before ``current_run_id`` and the stages it completed."""
    earlier = [r for r in ledger.runs(job="pipeline") if r.run_id != current_run_id]
    last = earlier[0] if earlier else None
    if last is None or last.status in ("succeeded", "partial", "mismatch"):
        return None, set()
    done = {str(s["stage"]) for s in last.details.get("stages", []) if s.get("status") in ("succeeded", "partial")}
    if not last.details.get("stages"):  # the pipeline record died before its own end: ask the ledger
        done = {r.job for r in ledger.runs() if r.parent_run_id == last.run_id and r.status == "succeeded"}
    return last.run_id, done


def describe(stages: list[Stage]) -> str:
    lines = []
    for i, s in enumerate(stages, 1):
        opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in s.options.items() if v not in (None, False))
        what = f"skip ({s.skip_reason})" if s.skip_reason else f"run {s.name} {opts}".rstrip()
        lines.append(f"{i}. {s.name:<20} {what}")
    return "\n".join(lines)


def run_stages(stages: list[Stage], pipeline_run_id: str) -> PipelineOutcome:
    """Run the selected stages in order; stop at the first failure (later stages do not run)."""
    out = PipelineOutcome(stages=[])
    n = len(stages)
    for i, s in enumerate(stages, 1):
        if s.skip_reason:
            out.stages.append({"stage": s.name, "status": "skipped", "reason": s.skip_reason})
            print(f"\n==> [{i}/{n}] {s.name}: skipped ({s.skip_reason})", flush=True)
            continue
        logger.info("pipeline %s: stage %s", pipeline_run_id, s.name)
        print(f"\n==> [{i}/{n}] {s.name}", flush=True)
        code = s.run(pipeline_run_id)
        status = {EXIT_OK: "succeeded", EXIT_PARTIAL: "partial", EXIT_MISMATCH: "mismatch"}.get(code, "failed")
        out.stages.append({"stage": s.name, "status": status, "exit_code": code})
        if status == "failed":
            out.failed = s.name
            break
    if out.failed:
        for s in stages[len(out.stages) :]:
            out.stages.append({"stage": s.name, "status": "not run"})
    return out
