"""Run folders for the nightly job: one lock per runs directory, atomic publication.

A run for date D is built in a hidden sibling folder (``runs/.D.partial-<pid>``) and published by
renaming it to ``runs/D`` only when every stage has finished, so a crashed or killed run never
leaves a half-written ``runs/D``: the previous good state stays in place. A lock file held with
``fcntl.flock`` makes a second run on the same runs directory fail at once instead of colliding
(``ecomrl run`` exits with :data:`EXIT_LOCKED`, 75, which schedulers treat as "try again later").

A run killed before publication leaves its scratch folder behind; the next run, once it holds the
lock, removes the scratch folders of processes that are no longer alive
(:func:`remove_stale_scratch`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

EXIT_LOCKED = 75
"""Exit code of ``ecomrl run`` when another run holds the lock (``EX_TEMPFAIL`` of sysexits.h:
a temporary failure, retried later by schedulers)."""

_LEFTOVER = re.compile(r"^\.(?P<final>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)$")


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
            remove_stale_scratch(runs_dir)
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


def published_path(path: Path, scratch: Path, final: Path) -> Path:
    """Where ``path``, inside the scratch folder, will be once ``scratch`` is published as
    ``final``; paths outside ``scratch`` are returned unchanged."""
    try:
        return final / path.relative_to(scratch)
    except ValueError:
        return path


def publish_directory(scratch: Path, final: Path) -> None:
    """Replace ``final`` by ``scratch`` with renames only (each rename is atomic on POSIX)."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(scratch, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_scratch(runs_dir: Path) -> list[Path]:
    """Clean what killed runs left in ``runs_dir``; call it while holding the lock.

    A scratch folder ``.D.partial-<pid>`` of a process that is no longer alive is removed. A
    ``.D.old-<pid>`` folder (a run killed between the two renames of :func:`publish_directory`)
    holds the previous good run: it is renamed back to ``D`` when ``D`` is missing, else removed.
    Returns the folders removed or restored.
    """
    cleaned: list[Path] = []
    for path in sorted(runs_dir.iterdir()):
        match = _LEFTOVER.match(path.name)
        if match is None or not path.is_dir() or _alive(int(match["pid"])):
            continue
        final = runs_dir / match["final"]
        if match["kind"] == "old" and not final.exists():
            os.replace(path, final)
            log.warning("restored the previous run", folder=str(final), from_folder=path.name)
        else:
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed a dead run's scratch folder", folder=path.name)
        cleaned.append(path)
    return cleaned
