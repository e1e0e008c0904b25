"""Reading a source stream ahead on a thread: order, errors, early stop, bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from backupflows.errors import SourceError
from backupflows.source.prefetch import prefetched


def test_every_item_in_order_across_chunks() -> None:
    assert list(prefetched(range(10_007), chunk=100, depth=2)) == list(range(10_007))
    assert list(prefetched([], chunk=3)) == []


def test_an_error_of_the_stream_is_raised_to_the_reader_after_the_items_before_it() -> None:
    def failing() -> Iterator[int]:
        yield from range(5)
        raise SourceError("source gone")

    got: list[int] = []
    with pytest.raises(SourceError, match="source gone"):
        for item in prefetched(failing(), chunk=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_stopping_early_stops_the_thread_and_closes_the_stream() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                produced.append(n)
                yield n
                n += 1
        finally:
            closed.set()

    reader = prefetched(endless(), chunk=10, depth=3)
    assert [next(reader) for _ in range(25)] == list(range(25))
    time.sleep(0.2)
    # read ahead, but bounded: the 3 chunks taken, 3 queued, 1 waiting for room
    assert len(produced) <= 10 * (3 + 3 + 1)
    reader.close()
    assert closed.wait(2)
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())


def test_reading_starts_before_the_first_item_is_asked_for() -> None:
    started = threading.Event()

    def stream() -> Iterator[int]:
        started.set()
        yield from range(3)

    reader = prefetched(stream())
    assert started.wait(2)  # the source is being read while the caller does other work
    assert list(reader) == [0, 1, 2]


def test_closing_before_the_first_item_stops_the_thread_and_closes_the_stream() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    reader = prefetched(endless(), chunk=5, depth=1)
    time.sleep(0.05)
    reader.close()
    assert closed.wait(2)
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())
