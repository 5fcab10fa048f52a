"""Worker threads of the local engine: a function over items, results in the items' order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_order(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn`` over ``items`` in ``workers`` threads, results in the items' order, with at most
    ``workers + 1`` results waiting (``Executor.map`` would start them all and could hold every
    result in memory). ``items`` is consumed lazily; an exception in ``fn`` is raised here.
    polars and numpy release the GIL for their work, so threads run it in parallel."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class Serial:
    """Jobs run one after another in a background thread, in the order they are submitted
    (appends to the same files stay in order), with at most ``depth`` waiting: the caller
    goes on with its own work meanwhile. An exception in a job is raised by the next
    :meth:`submit` or by :meth:`close`; a context manager (``close`` on exit, waiting for every
    job unless the block failed)."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = max(1, depth)
        self.pool = ThreadPoolExecutor(1)
        self.pending: deque[Future[None]] = deque()

    def submit(self, job: Callable[[], None]) -> None:
        while len(self.pending) >= self.depth:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(job))

    def close(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
            return
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
