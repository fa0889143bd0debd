"""ReadAhead: the publish driver's background reader of silver batches."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest

from rayapp.publish.readers import ReadAhead


def test_items_come_in_order_with_what_is_ready_first() -> None:
    gate = threading.Event()

    def source() -> Iterator[int]:
        yield 1
        yield 2
        gate.wait(30)  # the third item is not read until the consumer has taken what was ready
        yield from range(3, 10)

    ahead = ReadAhead(source(), depth=2)
    got: list[int] = []
    while len(got) < 2:
        got.extend(ahead.ready())
    assert got == [1, 2] and list(ahead.ready()) == []  # nothing more without waiting
    gate.set()
    got.extend(ahead)
    assert got == list(range(1, 10))
    assert list(ahead.ready()) == [] and list(ahead) == []  # exhausted stays exhausted
    ahead.close()


def test_an_error_in_the_source_reaches_the_consumer_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise ValueError("silver file unreadable")

    ahead = ReadAhead(source())
    got = []
    with pytest.raises(ValueError, match="silver file unreadable"):
        for item in ahead:
            got.append(item)
    assert got == [1]
    ahead.close()


def test_close_stops_reading_and_closes_the_source() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    ahead = ReadAhead(source(), depth=2)
    assert next(iter(ahead)) == 0
    ahead.close()
    assert closed.wait(10)
    assert len(produced) <= 4  # at most the queue's depth beyond what was taken, never the whole source
