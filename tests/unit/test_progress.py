"""The progress display of long stages: totals raised by what is submitted, a periodic line off a terminal."""

from __future__ import annotations

import logging

import pytest

from rayapp.progress import Progress


def test_progress_line_counts_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    p = Progress("publish", ["postgres", "graph"], interval_s=0.0, terminal=False)
    p.expect("postgres", 1000)
    p.expect("graph", 400)
    with caplog.at_level(logging.INFO, logger="rayapp.progress"):
        p.advance("postgres", 250)
    line = p.line()
    assert line.startswith("postgres 250/1.0k rows (25%) ") and " ETA " in line.split(";")[0]
    assert "graph 0/400 rows (0%)" in line
    assert any(r.getMessage().startswith("publish progress: postgres 250/1.0k") for r in caplog.records)
    p.advance("graph", 500)  # more than expected (rows no one announced): the total follows
    assert p.counts["graph"].total == 500 and "graph 500/500 rows (100%)" in p.line() and "ETA" not in p.line().split(";")[1]
    p.close()


def test_tick_logs_at_the_interval_while_nothing_advances(caplog: pytest.LogCaptureFixture) -> None:
    p = Progress("publish", ["postgres"], interval_s=3600.0, terminal=False)
    p.expect("postgres", 10)
    with caplog.at_level(logging.INFO, logger="rayapp.progress"):
        p.advance("postgres", 5)
        p.tick()  # within the interval: no line
        assert not caplog.records
        p.interval_s = 0.0
        p.tick()  # a caller waiting on something else keeps the log's pace
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith("publish progress: postgres 5/10 rows (50%) ")
    p.close()
