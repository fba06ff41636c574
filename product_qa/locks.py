"""Locks between processes, so that two of them never build the same outputs at once: one training per run name
(a second one stops in one line), and one writer at a time per data folder (preparation, and a training while
it reads the data and writes its views beside it: a second one waits). filelock takes the operating system's
lock (flock on POSIX, LockFileEx on Windows), which dies with its process: a killed holder leaves nothing to
clean up. The lock file is a hidden sibling of the folder it guards, since the folder itself is swapped whole."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from product_qa.errors import UserError
from product_qa.io_utils import make_folder


def lock_path(folder: Path) -> Path:
    """`.NAME.lock` beside `folder`: a run name or a folder name never starts with a dot, so it is no one's."""
    return folder.with_name(f".{folder.name}.lock")


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Held while the run `run_dir` is trained (built in its work directory, then swapped in): a second training
    under the same name would clear that work directory from under the first one."""
    make_folder(run_dir.parent, "output directory")
    lock = FileLock(lock_path(run_dir))  # a new lock each time: a second training in this process is refused too
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise UserError(f"{run_dir}: another training of run {run_dir.name!r} is in progress; wait for it to end, "
                        "or train under another --run-name") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def data_lock(folder: Path) -> Iterator[None]:
    """Held while `folder` (data.output_dir) is prepared, or read by a training that writes its views there: one
    such process at a time, the others wait (said once on stderr). Re-entrant in one process: a training that
    holds it prepares the data under it."""
    make_folder(folder.parent, "output directory")
    lock = FileLock(lock_path(folder), is_singleton=True)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        print(f"waiting for another process that prepares or reads {folder} ...", file=sys.stderr, flush=True)
        lock.acquire()
    except OSError:  # no lock file can be made there (a read-only mount): no one can prepare that data either
        yield
        return
    try:
        yield
    finally:
        lock.release()
