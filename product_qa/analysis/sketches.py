"""Streaming sketches: summaries of a stream in bounded memory that merge block by block, in any order of blocks.

LengthHistogram (fixed bins: exact counts, quantiles within 1%), HeavyHitters (the most frequent keys, each
count with a bound on its error) and Reservoir (a seeded uniform sample).
"""
from __future__ import annotations

import heapq
from array import array
from collections import Counter
from typing import NamedTuple

import numpy as np

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_NO_THRESHOLD = 1 << 64  # above every 64-bit priority: the reservoir takes every record until it is full


class LengthHistogram:
    """Counts of lengths in fixed bins: one per integer up to 111, then bins 1% wide (log-spaced) up to 2**32.
    Count, min, mean and max are exact; a quantile is the lower edge of its bin: exact up to 111, at most 1% low
    above (the inverted-CDF definition: the smallest length with at least q of the values at or below it)."""

    EDGES = np.concatenate(([0], np.unique(np.floor(1.01 ** np.arange(2232)).astype(np.int64))))

    def __init__(self) -> None:
        self.counts = np.zeros(len(self.EDGES), dtype=np.int64)
        self.total = self.count = 0
        self.min: int | None = None
        self.max: int | None = None

    @classmethod
    def of(cls, values: array) -> LengthHistogram:
        histogram = cls()
        if values:
            lengths = np.frombuffer(values, dtype=np.uint32).astype(np.int64)
            bins = np.searchsorted(cls.EDGES, lengths, side="right") - 1
            histogram.counts = np.bincount(bins, minlength=len(cls.EDGES))
            histogram.total, histogram.count = int(lengths.sum()), len(lengths)
            histogram.min, histogram.max = int(lengths.min()), int(lengths.max())
        return histogram

    def merge(self, other: LengthHistogram) -> None:
        if not other.count:
            return
        self.counts += other.counts
        self.total += other.total
        self.count += other.count
        self.min = other.min if self.min is None else min(self.min, other.min)
        self.max = other.max if self.max is None else max(self.max, other.max)

    def quantile(self, q: float) -> int:
        cumulative = np.cumsum(self.counts)
        edge = int(self.EDGES[np.searchsorted(cumulative, q * self.count, side="left")])
        return min(max(edge, self.min), self.max)

    def summary(self) -> dict:
        if not self.count:
            return {"count": 0}
        return {"count": self.count, "min": self.min,
                **{f"p{round(q * 100)}": self.quantile(q) for q in QUANTILES},
                "mean": round(self.total / self.count, 1), "max": self.max}


def sample_summary(values: np.ndarray) -> dict:
    """The same figures as LengthHistogram.summary, exact over a sample."""
    if not len(values):
        return {"count": 0}
    return {"count": len(values), "min": int(values.min()),
            **{f"p{round(q * 100)}": int(np.quantile(values, q, method="inverted_cdf")) for q in QUANTILES},
            "mean": round(float(values.mean()), 1), "max": int(values.max())}


def keep_largest(keys: list, counts: np.ndarray, capacity: int) -> tuple[dict, int]:
    """The `capacity` keys with the largest counts, and the largest count left out (0 when none is)."""
    if len(keys) <= capacity:
        return {key: int(count) for key, count in zip(keys, counts, strict=True)}, 0
    order = np.argpartition(counts, len(keys) - capacity)
    kept, left_out = order[len(keys) - capacity:], order[:len(keys) - capacity]
    return {keys[i]: int(counts[i]) for i in kept}, int(counts[left_out].max())


class HeavyHitters:
    """The most frequent keys of a stream in bounded memory (periodic pruning): once it holds more than twice
    `capacity` keys it keeps the `capacity` largest. `error` bounds how far any count may be below the truth
    (the sum of the largest counts ever pruned, here and in the blocks before they were added)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.counts: dict = {}
        self.error = 0

    def add(self, counts: dict, error: int = 0) -> None:
        held = self.counts
        for key, count in counts.items():
            held[key] = held.get(key, 0) + count
        self.error += error
        if len(held) > 2 * self.capacity:
            keys = list(held)
            self.counts, left_out = keep_largest(keys, np.fromiter(held.values(), np.int64, len(keys)),
                                                 self.capacity)
            self.error += left_out

    def top(self, k: int) -> list[tuple]:
        return sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:k]


def by_count(counter: Counter) -> dict[str, int]:
    """Most frequent first, ties by name: the report is the same from run to run (a Counter's own order of ties
    follows the order the worker processes happened to merge)."""
    return dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


class Reservoir:
    """A uniform sample of `size` records (NamedTuples with a `line` field): those with the smallest priorities,
    a seeded hash of their content, so the sample is the same whatever the block size or the number of workers."""

    def __init__(self, size: int):
        self.size = size
        self._heap: list[tuple[int, int, NamedTuple]] = []  # (-priority, -line, record): the largest on top

    @property
    def threshold(self) -> int:
        """Only records with a priority at or below this can still enter the sample."""
        return -self._heap[0][0] if len(self._heap) >= self.size else _NO_THRESHOLD

    def offer(self, priority: int, line: int, record: NamedTuple) -> None:
        """Consider a record found at `line` of the file (its own line field may count from its block)."""
        entry = (-priority, -line, record)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        elif entry[0] > self._heap[0][0] or (entry[0] == self._heap[0][0] and entry[1] > self._heap[0][1]):
            heapq.heapreplace(self._heap, entry)

    def records(self) -> list:
        """The sample, smallest priority first: its first n records are a uniform sample of n, each with the
        line it was found at."""
        return [record._replace(line=-line) for _, line, record in sorted(self._heap, reverse=True)]
