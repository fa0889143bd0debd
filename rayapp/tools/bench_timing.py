"""A benchmark stage's timing: rows, seconds, rows/s and what else it reports."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

logger = logging.getLogger("rayapp.tools.bench")


@dataclass
class StageTiming:
    stage: str
    rows: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def timed(stage: str, rows: int | Callable[[Any], int], fn: Callable[[], Any]) -> tuple[StageTiming, Any]:
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    n = rows(out) if callable(rows) else rows
    timing = StageTiming(stage, n, dt)
    logger.info("%s: %d rows in %.2fs = %.0f rows/s", stage, n, dt, timing.rows_per_s)
    return timing, out


__all__ = ["StageTiming", "timed"]
