"""The prepared examples and their splits: where they are, reading them, and the seeded samples every stage
takes of them (so the training run, the evaluation and the benchmarks agree on which examples they mean)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from product_qa.errors import UserError
from product_qa.hashing import files_digest

if TYPE_CHECKING:
    from config import DataConfig

SPLITS = ("train", "validation", "test")


def output_paths(data: DataConfig) -> dict[str, Path]:
    """train/validation/test.jsonl under data.output_dir."""
    return split_paths(Path(data.output_dir))


def split_paths(folder: Path) -> dict[str, Path]:
    return {split: folder / f"{split}.jsonl" for split in SPLITS}


def prepared_data_fingerprint(data: DataConfig) -> str:
    """A hash of the prepared splits' contents: what a run records of the data it was trained on, and what every
    stage that uses the run checks (about 0.15 s per 100 MB)."""
    paths = list(output_paths(data).values())
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: no prepared data; run `python prepare_data.py` first")
    return files_digest(paths)


def read_examples(path: Path, limit: int | None = None, seed: int = 0) -> list[dict]:
    """The examples of one split; with `limit`, a seeded uniform sample of them in file order."""
    if not path.exists():
        raise UserError(f"{path}: no prepared data; run `python prepare_data.py` first")
    examples = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    if not examples:
        raise UserError(f"{path}: no examples (is the input too small, or are the filters too strict?)")
    return sample_in_order(examples, limit, seed)


def sample_indices(count: int, limit: int | None, seed: int) -> list[int] | None:
    """Sorted indices of a seeded uniform sample of `limit` of `count` items (None: keep them all)."""
    if limit is None or count <= limit:
        return None
    return sorted(random.Random(seed).sample(range(count), limit))


def sample_in_order(items: list, limit: int | None, seed: int) -> list:
    """A seeded uniform sample of `limit` items, in their original order (all of them when limit is None)."""
    keep = sample_indices(len(items), limit, seed)
    return items if keep is None else [items[i] for i in keep]
