"""Run folders for the nightly job: one lock per runs directory, atomic publication.

A run for date D is built in a hidden sibling folder (``runs/.D.partial-<pid>``) and published by
renaming it to ``runs/D`` only when every stage has finished, so a crashed or killed run never
leaves a half-written ``runs/D``: the previous good state stays in place. A lock file held with
``fcntl.flock`` makes a second run on the same runs directory fail at once instead of colliding.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


class RunLockedError(RuntimeError):
    """Another ``ecomrl run`` holds the lock on this runs directory."""


@contextlib.contextmanager
def run_lock(runs_dir: Path) -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on ``runs_dir/.lock`` for the duration of the block."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    lock_path = runs_dir / ".lock"
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RunLockedError(
                f"another ecomrl run holds {lock_path}; wait for it to finish"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield lock_path
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Yield a scratch folder that replaces ``final`` atomically when the block succeeds.

    On an exception the scratch folder is removed and ``final`` is left exactly as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = final.parent / f".{final.name}.partial-{os.getpid()}"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    publish_directory(scratch, final)


def publish_directory(scratch: Path, final: Path) -> None:
    """Replace ``final`` by ``scratch`` with renames only (each rename is atomic on POSIX)."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(scratch, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
