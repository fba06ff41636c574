"""One streamed pass over an input file in blocks of lines: the pass the preparation and analysis stages share.

The main process cuts the file into blocks of whole lines (byte ranges that the workers read themselves when
the file is plain JSON Lines: the main process then reads a few bytes per block, not the whole file; blocks of
rows for CSV and Parquet, data/tables.py). Worker processes parse each block and do a stage's work on its
records; their results come back in file order, with a bounded number in flight so memory stays flat (Pool.imap
would read the whole file ahead). A worker numbers lines from its block's start; the scan turns them into the
file's and merges the bad lines and the drops per reason, with a few examples of each. The same input gives the
same results whatever the number of workers.
"""
from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from tqdm import tqdm

from product_qa.data.reading import BadInputLog, BadLine, Fields, Record, SourceInfo, Tally, Task, strict_error
from product_qa.data.sources import open_reader
from product_qa.errors import UserError

if TYPE_CHECKING:
    from config import DataConfig


class BlockJob(NamedTuple):
    index: int  # the block's place in the file: 0, 1, ...
    task: Task
    hint: Any  # what the stage's `hint()` returned when the block was sent (None without one)


@dataclass
class BlockResult:
    """What a worker sends back for a block, whatever the stage (a stage subclasses it to add its own figures).
    Line numbers count from the block's first line."""

    keep: int = 5  # examples kept per reason
    line_count: int = 0
    records: int = 0  # valid records: bad lines aside
    bad: BadInputLog = field(init=False)
    drops: Tally = field(init=False)  # the records a stage drops, per reason

    def __post_init__(self) -> None:
        self.bad = BadInputLog(keep=max(self.keep, 1))  # the first bad line is always kept: --strict names it
        self.drops = Tally(keep=self.keep)

    def read(self, task: Task, fields: Fields) -> Iterator[Record]:
        """The block's valid records, in order; its bad lines are tallied on the way."""
        block = task.load()
        self.line_count = block.line_count
        for item in block.items(fields):
            if isinstance(item, BadLine):
                self.bad.add_line(item)
            else:
                self.records += 1
                yield item


BlockWork = Callable[[Any, BlockJob], BlockResult]  # (the stage's worker state, job) -> result, in a worker

_worker: tuple[BlockWork, Any] | None = None


def _start_worker(work: BlockWork, state: Any) -> None:
    global _worker
    _worker = (work, state)


def _run(job: BlockJob) -> BlockResult:
    work, state = _worker
    return work(state, job)


def in_file_order(jobs: Iterable[BlockJob], work: BlockWork, state: Any, workers: int) -> Iterator[BlockResult]:
    """`work(state, job)` over the jobs in worker processes, results in job order. Jobs are drawn lazily, just
    before they are sent, so a job's hint can reflect the results so far. `workers` 1 runs in this process."""
    if workers == 1:
        _start_worker(work, state)
        yield from map(_run, jobs)
        return
    with multiprocessing.get_context().Pool(workers, _start_worker, (work, state)) as pool:
        pending = deque()
        for job in jobs:
            pending.append(pool.apply_async(_run, (job,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class Scan:
    """One pass over `source`: bad lines, drops and record counts of every block, merged in file order."""

    def __init__(self, source: SourceInfo, data: DataConfig, *, strict: bool = False):
        self.source = source
        self.reader = open_reader(source, Fields.of(data), data.block_mb << 20)
        self.workers = data.workers or os.cpu_count() or 1
        self.strict = strict  # the first bad line raises a UserError naming file:line
        self.bad = BadInputLog(keep=data.examples_per_reason)
        self.drops = Tally(keep=data.examples_per_reason)
        self.records = self.lines = self.blocks = 0

    def results(self, work: BlockWork, state: Any, *, desc: str, progress: bool,
                hint: Callable[[], Any] = lambda: None) -> Iterator[tuple[BlockResult, int]]:
        """Each block's result in file order, with the offset that turns its line numbers into the file's. Its
        bad lines, drops and counts are merged into the scan first. `state` reaches every call of `work`."""
        jobs = (BlockJob(index, task, hint()) for index, task in enumerate(self.reader.tasks()))
        with tqdm(total=self.source.size_bytes, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
            for result in in_file_order(jobs, work, state, self.workers):
                offset = self.lines
                self._merge(result, offset)
                yield result, offset
                bar.update(self.reader.bytes_read - bar.n)

    def _merge(self, result: BlockResult, offset: int) -> None:
        if self.strict and (first := result.bad.first()) is not None:
            raise strict_error(self.source.path, first._replace(line=first.line + offset))
        self.bad.merge(result.bad, offset)
        self.drops.merge(result.drops, offset)
        self.records += result.records
        self.lines += result.line_count
        self.blocks += 1

    def require_records(self) -> None:
        """Raise a UserError when the file held no valid record at all."""
        if self.records == 0:
            raise UserError(f"{self.source.path}: no valid records "
                            f"({self.bad.total} bad lines: {', '.join(self.bad.counts) or 'none'})")
