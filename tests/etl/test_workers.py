"""The local engine's worker threads: order, bounded look-ahead, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial

import pytest

from etl.workers import Serial, in_order


def test_in_order_keeps_order_and_bounds_waiting_results() -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def slow(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002 * (i % 3))
        with lock:
            running -= 1
        return i * i

    pulled: list[int] = []

    def items() -> Iterator[int]:
        for i in range(40):
            pulled.append(i)
            yield i

    got = []
    for i, value in enumerate(in_order(slow, items(), 3)):
        got.append(value)
        assert len(pulled) <= i + 1 + 3 + 1  # never more than workers + 1 ahead
    assert got == [i * i for i in range(40)]
    assert most <= 3

    def boom(i: int) -> int:
        if i == 5:
            raise ValueError("bucket 5 failed")
        return i

    with pytest.raises(ValueError, match="bucket 5 failed"):
        list(in_order(boom, range(10), 2))


def test_serial_runs_jobs_in_order_in_the_background() -> None:
    done: list[int] = []
    waiting: list[int] = []

    def job(i: int) -> None:
        time.sleep(0.001 * (i % 2))
        done.append(i)

    with Serial(depth=2) as background:
        for i in range(30):
            background.submit(partial(job, i))
            waiting.append(len(background.pending))
    assert done == list(range(30))
    assert max(waiting) <= 2

    background = Serial(depth=1)

    def fails() -> None:
        raise OSError("disk full")

    background.submit(fails)
    with pytest.raises(OSError, match="disk full"):
        background.submit(lambda: None)
        background.close()
