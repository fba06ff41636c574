"""Stable hashes: the same value on every run, process and machine (Python's hash() is salted per process)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

_MASK64 = (1 << 64) - 1


def key_hash(text: str) -> int:
    """A 64-bit hash of a string."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def mix64(value: int) -> int:
    """splitmix64's finalizer: spreads any 64-bit integer evenly over 64 bits."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def mix64_array(values: np.ndarray) -> np.ndarray:
    """mix64 over a uint64 array (wrapping arithmetic, same results as the scalar version)."""
    with np.errstate(over="ignore"):
        values = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return values ^ (values >> np.uint64(31))


def files_digest(paths: list[Path], block_bytes: int = 1 << 20) -> str:
    """The blake2b hex digest of these files' contents, in order (each file's length comes first, so bytes that
    move from one file to the next change it), streamed in large blocks: memory stays flat whatever their size."""
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        with open(path, "rb") as handle:
            digest.update(os.fstat(handle.fileno()).st_size.to_bytes(8, "little"))
            while block := handle.read(block_bytes):
                digest.update(block)
    return digest.hexdigest()
