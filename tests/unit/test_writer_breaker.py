"""The writer's circuit breaker: open after 3 failed batches, half-open after the cool-down, closed on success."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from rayapp.catalog import Dataset
from rayapp.lake import Lake
from rayapp.publish import writers
from rayapp.publish.writers import StoreWriter
from rayapp.settings import load_settings
from rayapp.sinks.base import SinkError


class Flaky:
    """A sink that refuses writes until told otherwise, counting what it was asked."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def on_write_start(self) -> None:
        pass

    def write(self, dataset: Dataset, block: pa.Table) -> int:
        self.calls += 1
        if self.down:
            raise SinkError("store is down", transient=False)
        return block.num_rows

    def close(self) -> None:
        pass


def test_breaker_opens_then_half_opens_after_the_cool_down(tmp_path: Path, monkeypatch: Any) -> None:
    settings = load_settings(overrides={"data_dir": str(tmp_path), "writer_retries": 1, "writer_breaker_cooldown_s": 60})
    writer = StoreWriter(Lake(settings), "postgres", "postgresql://x@127.0.0.1:9/db", "run-1")
    sink = Flaky()
    writer.sink = sink  # type: ignore[assignment]
    clock = [1000.0]
    monkeypatch.setattr(writers.time, "monotonic", lambda: clock[0])
    block = pa.table({"transaction_id": ["T1", "T2"]})

    outcomes = [writer.write("transactions", block) for _ in range(5)]
    assert [o["attempts"] for o in outcomes] == [1, 1, 1, 0, 0]  # the breaker opened after 3 failures
    assert sink.calls == 3 and all(o["failed"] == 2 and o["dead_letter"] is not None for o in outcomes)
    assert outcomes[3]["error"].startswith("not attempted: 3 batches failed in a row")

    clock[0] += 61  # cool-down over: one batch is tried (half-open); it fails, so the breaker opens again
    assert writer.write("transactions", block)["attempts"] == 1 and sink.calls == 4
    assert writer.write("transactions", block)["attempts"] == 0 and sink.calls == 4

    clock[0] += 61
    sink.down = False  # the store is back: the half-open try succeeds and closes the breaker
    assert writer.write("transactions", block)["written"] == 2
    assert writer.write("transactions", block)["written"] == 2 and sink.calls == 6


class Unfinished(Flaky):
    """A sink whose finish fails ``fails`` times with a transient error."""

    def __init__(self, fails: int) -> None:
        super().__init__()
        self.fails = fails
        self.finished: list[Dataset | None] = []

    def finish(self, dataset: Dataset | None = None) -> None:
        if self.fails:
            self.fails -= 1
            raise SinkError("connection refused", transient=True)
        self.finished.append(dataset)


def test_finish_retries_like_a_write_and_reports_what_it_could_not_end(tmp_path: Path) -> None:
    settings = load_settings(overrides={"data_dir": str(tmp_path), "writer_retries": 2, "writer_backoff_s": 0})
    writer = StoreWriter(Lake(settings), "postgres", "postgresql://x@127.0.0.1:9/db", "run-1")
    writer.sink = sink = Unfinished(fails=1)  # type: ignore[assignment]
    assert writer.finish("predictions") is None and sink.finished == [Dataset.PREDICTIONS]  # the retry ended it
    writer.sink = sink = Unfinished(fails=2)  # type: ignore[assignment]
    error = writer.finish()
    assert sink.finished == [] and error is not None and error.startswith("finishing the writes:") and "connection refused" in error
