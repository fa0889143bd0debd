"""One progress display for a long stage: rows done per target out of the expected total, with
rate and ETA — a bar per target on a terminal, a log line every ``interval_s`` otherwise."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from rayapp import logs

logger = logging.getLogger(__name__)


@dataclass
class _Count:
    total: int = 0
    done: int = 0
    started: float = field(default_factory=time.monotonic)


def _si(n: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


class Progress:
    """``expect(target, rows)`` adds to a target's total, ``advance(target, rows)`` counts rows done.

    A total is what is known up front; rows submitted beyond it raise it (``expect``), so the
    display never shows more done than expected.
    """

    def __init__(self, title: str, targets: list[str], *, interval_s: float = 10.0, terminal: bool | None = None) -> None:
        self.title = title
        self.counts = {t: _Count() for t in targets}
        self.interval_s = interval_s
        self.terminal = logs.is_terminal() if terminal is None else terminal
        self.last_log = time.monotonic()
        self.bars: dict[str, Any] = {}
        if self.terminal and targets:
            from tqdm import tqdm

            width = max(len(t) for t in targets)
            self.bars = {t: tqdm(total=0, desc=f"{title} {t:<{width}}", unit=" rows", unit_scale=True, position=i, leave=True,
                                 dynamic_ncols=True, mininterval=0.5) for i, t in enumerate(targets)}  # fmt: skip

    def expect(self, target: str, rows: int) -> None:
        c = self.counts[target]
        c.total += rows
        if (bar := self.bars.get(target)) is not None:
            bar.total = c.total
            bar.refresh()

    def advance(self, target: str, rows: int) -> None:
        c = self.counts[target]
        c.done += rows
        c.total = max(c.total, c.done)
        if (bar := self.bars.get(target)) is not None:
            bar.total = c.total
            bar.update(rows)
        else:
            self.tick()

    def tick(self) -> None:
        """Log the progress line if ``interval_s`` has passed since the last one (no terminal): a
        caller that waits on something else calls it, so the log keeps its pace."""
        if not self.terminal and time.monotonic() - self.last_log >= self.interval_s:
            self.last_log = time.monotonic()
            logger.info("%s progress: %s", self.title, self.line())

    def line(self) -> str:
        """``postgres 1.2M/2.3M rows (52%) 80.1k rows/s ETA 14s; graph …``"""
        parts = []
        for target, c in self.counts.items():
            rate = c.done / max(time.monotonic() - c.started, 1e-9)
            pct = f" ({100 * c.done / c.total:.0f}%)" if c.total else ""
            eta = f" ETA {(c.total - c.done) / rate:.0f}s" if rate > 0 and c.total > c.done else ""
            parts.append(f"{target} {_si(c.done)}/{_si(c.total)} rows{pct} {_si(rate)} rows/s{eta}")
        return "; ".join(parts)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}
