"""Which of the records that passed the filters become examples: dedupe, sampling and the split by product.

Workers note a few numbers per surviving record (SurvivorColumns); dedupe and sampling are array operations on
them in the main process (select). The preparation stage writes the records selected; the analysis stage runs
the same selection to report the funnel preparation would give.
"""
from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from product_qa.data.examples import SPLITS
from product_qa.data.filtering import normalize_title
from product_qa.hashing import key_hash, mix64, mix64_array

if TYPE_CHECKING:
    from config import DataConfig


def dedupe_keys(title: str, content: str) -> tuple[int, int]:
    """The hashes dedupe works on, for a cleaned record that passed the filters: of its normalized title (which
    also picks its split and phrasing) and of the exact (title, content)."""
    return key_hash(normalize_title(title)), key_hash(f"{title}\x00{content}")


def split_code(title_key: int, data: DataConfig) -> int:
    """The split of a product, from its normalized title alone: a product and its near-identical titles share a
    side, and the test products stay the same whatever the seed or sample size. 0 train, 1 validation, 2 test."""
    position = (mix64(title_key) >> 11) / float(1 << 53)
    if position < data.test_fraction:
        return 2
    return 1 if position < data.test_fraction + data.validation_fraction else 0


@dataclass
class SurvivorColumns:
    """The numbers select() needs of each record of one block that passed the filters, in block order (line
    numbers count from the block's start). Arrays, not lists: they cross from the workers cheaply."""

    lines: array = field(default_factory=lambda: array("Q"))
    title_keys: array = field(default_factory=lambda: array("Q"))  # hash of the normalized title
    exact_keys: array = field(default_factory=lambda: array("Q"))  # hash of the cleaned (title, content)
    richness: array = field(default_factory=lambda: array("Q"))  # description length: dedupe keeps the longest
    splits: array = field(default_factory=lambda: array("B"))  # index into SPLITS

    def add(self, line: int, title: str, content: str, data: DataConfig) -> tuple[int, int]:
        """Note a cleaned record that passed the filters; returns its title key and split code."""
        title_key, exact_key = dedupe_keys(title, content)
        split = split_code(title_key, data)
        self.lines.append(line)
        self.title_keys.append(title_key)
        self.exact_keys.append(exact_key)
        self.richness.append(len(content))
        self.splits.append(split)
        return title_key, split


@dataclass
class Survivors:
    """Per-record numbers of every record that passed the filters, in file order (index = spool line)."""

    lines: np.ndarray
    title_keys: np.ndarray
    exact_keys: np.ndarray
    richness: np.ndarray
    splits: np.ndarray

    @classmethod
    def of_blocks(cls, blocks: Iterable[tuple[SurvivorColumns, int]]) -> Survivors:
        """The columns of each block in file order, given with the offset of its line numbers in the file."""
        blocks = list(blocks)
        columns = {}
        for column in fields(SurvivorColumns):
            dtype = np.uint8 if column.name == "splits" else np.uint64
            parts = [np.frombuffer(getattr(part, column.name), dtype=dtype) for part, _ in blocks]
            if column.name == "lines":
                parts = [part + np.uint64(offset) for part, (_, offset) in zip(parts, blocks, strict=True)]
            columns[column.name] = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
        return cls(**columns)

    def split_counts(self, selected: np.ndarray) -> dict[str, int]:
        counts = np.bincount(self.splits[selected], minlength=len(SPLITS))
        return {split: int(count) for split, count in zip(SPLITS, counts, strict=True)}


def first_of_each(keys: np.ndarray, candidates: np.ndarray, prefer: np.ndarray | None = None) -> np.ndarray:
    """Indices (among `candidates`) of one record per key: the largest `prefer`, then the earliest."""
    sub_keys = keys[candidates]
    order = np.lexsort((candidates, -prefer[candidates].astype(np.int64)) if prefer is not None else (candidates,))
    order = order[np.argsort(sub_keys[order], kind="stable")]
    sorted_keys = sub_keys[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return np.sort(candidates[order[first]])


def duplicate_examples(keys: np.ndarray, lines: np.ndarray, before: np.ndarray, after: np.ndarray,
                       limit: int) -> list[dict]:
    """Line numbers of the first few dropped duplicates and of the record kept in their place."""
    examples = []
    survived = np.zeros(len(keys), dtype=bool)
    survived[after] = True
    for index in before[~survived[before]][:limit]:
        kept = after[np.flatnonzero(keys[after] == keys[index])[0]]
        examples.append({"line": int(lines[index]), "kept_line": int(lines[kept])})
    return examples


@dataclass
class Selection:
    indices: np.ndarray  # of the selected records among the survivors, in file order
    steps: dict[str, int]  # records left after each step
    duplicate_examples: dict[str, list[dict]]  # per dedupe reason

    def duplicates_dropped(self) -> dict[str, dict]:
        """The duplicates each dedupe dropped: how many, and examples."""
        steps = self.steps
        return {"exact_duplicate": {"count": steps["after_filters"] - steps["after_exact_dedupe"],
                                    "examples": self.duplicate_examples.get("exact_duplicate", [])},
                "duplicate_title": {"count": steps["after_exact_dedupe"] - steps["after_title_dedupe"],
                                    "examples": self.duplicate_examples.get("duplicate_title", [])}}


def select(survivors: Survivors, data: DataConfig) -> Selection:
    """Dedupe and sample."""
    kept = np.arange(len(survivors.lines))
    steps = {"after_filters": len(kept)}
    examples = {}
    for reason, step, enabled, keys, prefer in (
        ("exact_duplicate", "after_exact_dedupe", data.dedupe_exact, survivors.exact_keys, None),
        ("duplicate_title", "after_title_dedupe", data.dedupe_titles, survivors.title_keys, survivors.richness),
    ):
        if enabled:
            deduped = first_of_each(keys, kept, prefer)
            examples[reason] = duplicate_examples(keys, survivors.lines, kept, deduped, data.examples_per_reason)
            kept = deduped
        steps[step] = len(kept)
    if data.max_records is not None and len(kept) > data.max_records:
        # A uniform sample from the whole file: the records with the smallest seeded hash rank.
        rank = mix64_array(survivors.title_keys[kept] ^ np.uint64(mix64(data.seed)) ^ survivors.exact_keys[kept])
        kept = np.sort(kept[np.lexsort((kept, rank))[: data.max_records]])
    steps["after_sampling"] = len(kept)
    return Selection(kept, steps, examples)


def funnel_steps(records: int, bad_lines: int, steps: dict[str, int], split_counts: dict[str, int]) -> dict:
    """The records left at each step, from the lines of the file to each split's examples."""
    return {"lines_with_data": records + bad_lines, "bad_input": bad_lines, "records_parsed": records, **steps,
            **{f"{split}_examples": split_counts[split] for split in SPLITS}}
