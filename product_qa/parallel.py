"""Blocks of lines processed in worker processes, results in file order, with a bounded number in flight so
memory stays flat (Pool.imap would read the whole file ahead). The preparation and analysis stages use it."""
from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class BlockRunner:
    """Runs `work(index, task)` over tasks in worker processes set up by `initializer(*init_args)`, yielding the
    results in task order. Tasks are drawn lazily, just before they are sent, so a task generator can hand
    workers values the results so far have updated. `workers` 0 means one per CPU core; 1 runs in-process."""

    def __init__(self, work: Callable[[int, Any], Any], workers: int, initializer: Callable[..., None],
                 init_args: tuple):
        self.work = work
        self.workers = workers or os.cpu_count() or 1
        self.initializer = initializer
        self.init_args = init_args

    def map(self, tasks: Iterable) -> Iterator:
        if self.workers == 1:
            self.initializer(*self.init_args)
            yield from (self.work(index, task) for index, task in enumerate(tasks))
            return
        with multiprocessing.get_context().Pool(self.workers, self.initializer, self.init_args) as pool:
            pending = deque()
            for index, task in enumerate(tasks):
                pending.append(pool.apply_async(self.work, (index, task)))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()
