"""The preparation stage: stream trn.json, clean, filter, dedupe, sample, split by product, build examples.

Pass 1 hands blocks of lines to worker processes, which read them (from the file itself when it is plain
JSON Lines), parse, clean and filter them, and spool each surviving record, already rendered as the example
of its split, to a temp file of their own. The main process keeps only a few numbers per record; dedupe and
sampling are array operations on them. Pass 2 streams the selected examples from the spool files into
train/validation/test.jsonl, written atomically. Memory stays flat whatever the input size, and the same
input and config give identical files whatever the number of workers.
"""
from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from tqdm import tqdm

from product_qa.data.cleaning import clean_text_within
from product_qa.configurator import config_dict, fingerprint
from product_qa.errors import UserError
from product_qa.data.filtering import FILTER_REASONS, drop_reason, normalize_title
from product_qa.hashing import key_hash, mix64, mix64_array
from product_qa.io_utils import TEMP_MARK, atomic_outputs, recover_directory, replaced_directory, write_json_atomic
from product_qa.parallel import BlockRunner
from product_qa.data.examples import SPLITS, output_paths, split_paths
from product_qa.data.prompts import SPLIT_PHRASINGS, build_example, pick_phrasing
from product_qa.data.reading import (BadInputLog, BadLine, Block, BlockReader, ByteRange, Record, describe_source,
                                parse_block, strict_error)

PIPELINE_VERSION = 1  # bump when a change to cleaning, filters or examples changes the outputs
REPORT_NAME = "prep_report.json"
# Settings that change speed, not outputs, stay out of the fingerprint.
_RUNTIME_ONLY = ("workers", "block_mb", "output_dir")


@dataclass
class BlockResult:
    """What a worker sends back for one block: counts and per-record numbers, line numbers counted from the
    block's first line (the main process knows where the block starts). The examples go to a spool file."""

    line_count: int = 0
    lines: array = field(default_factory=lambda: array("Q"))
    title_keys: array = field(default_factory=lambda: array("Q"))  # hash of the normalized title
    exact_keys: array = field(default_factory=lambda: array("Q"))  # hash of the cleaned (title, content)
    richness: array = field(default_factory=lambda: array("Q"))  # description length: dedupe keeps the longest
    splits: array = field(default_factory=lambda: array("B"))  # index into SPLITS
    drops: dict[str, int] = field(default_factory=dict)
    drop_examples: dict[str, list[dict]] = field(default_factory=dict)
    bad: list[BadLine] = field(default_factory=list)  # the first few of each reason, in order
    bad_counts: dict[str, int] = field(default_factory=dict)


_worker_cfg = None
_worker_spool_dir = None


def _init_worker(cfg, spool_dir: Path) -> None:
    global _worker_cfg, _worker_spool_dir
    _worker_cfg, _worker_spool_dir = cfg, spool_dir


def spool_path(spool_dir: Path, index: int) -> Path:
    return spool_dir / f"{index:08d}.jsonl"


def clean_record(record: Record, cfg) -> tuple[str, str]:
    """Clean title and description; an empty one leaves the other as it is, since the record will be dropped.
    A huge field that surely cleans past data.max_title_chars / max_content_chars is cleaned only as far as
    its filter and drop example need (clean_text_within): the record is dropped as too long either way."""
    if not record.title or not record.content:
        return record.title, record.content
    return (clean_text_within(record.title, cfg.max_title_chars),
            clean_text_within(record.content, cfg.max_content_chars))


def dedupe_keys(title: str, content: str) -> tuple[int, int]:
    """The hashes dedupe works on, for a cleaned record that passed the filters: of its normalized title (which
    also picks its split and phrasing) and of the exact (title, content)."""
    return key_hash(normalize_title(title)), key_hash(f"{title}\x00{content}")


def split_code(title_key: int, cfg) -> int:
    """The split of a product, from its normalized title alone: a product and its near-identical titles share a
    side, and the test products stay the same whatever the seed or sample size. 0 train, 1 validation, 2 test."""
    position = (mix64(title_key) >> 11) / float(1 << 53)
    if position < cfg.test_fraction:
        return 2
    return 1 if position < cfg.test_fraction + cfg.validation_fraction else 0


def process_block(index: int, task: Block | ByteRange) -> BlockResult:
    """Parse, clean and filter one block of lines, and spool each kept record rendered as the example of its
    split (runs in a worker process; dedupe and sampling later decide which examples are written)."""
    cfg = _worker_cfg
    keep = cfg.examples_per_reason
    block = task.load() if isinstance(task, ByteRange) else task._replace(first_line=1)
    result = BlockResult(line_count=block.line_count)
    spool = bytearray()  # one growing buffer: thousands of separate bytes objects cost more in allocation
    for item in parse_block(block):
        if isinstance(item, BadLine):
            count = result.bad_counts.get(item.reason, 0)
            if count < keep:
                result.bad.append(item)
            result.bad_counts[item.reason] = count + 1
            continue
        title, content = clean_record(item, cfg)
        reason = drop_reason(title, content, cfg)
        if reason is not None:
            count = result.drops.get(reason, 0)
            if count < keep:
                result.drop_examples.setdefault(reason, []).append(
                    {"line": item.line, "title": clean_text_within(title, cfg.max_title_chars)[:120],
                     "content": clean_text_within(content, cfg.max_content_chars)[:200]})
            result.drops[reason] = count + 1
            continue
        title_key, exact_key = dedupe_keys(title, content)
        split = split_code(title_key, cfg)
        phrasing = pick_phrasing(SPLIT_PHRASINGS[SPLITS[split]], title_key, cfg.seed)
        spool += orjson.dumps(build_example(item.uid, title, content, phrasing))
        spool += b"\n"
        result.lines.append(item.line)
        result.title_keys.append(title_key)
        result.exact_keys.append(exact_key)
        result.richness.append(len(content))
        result.splits.append(split)
    spool_path(_worker_spool_dir, index).write_bytes(spool)
    return result


@dataclass
class Survivors:
    """Per-record numbers of every record that passed the filters, in file order (index = spool line)."""

    lines: np.ndarray
    title_keys: np.ndarray
    exact_keys: np.ndarray
    richness: np.ndarray
    splits: np.ndarray


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


def select(survivors: Survivors, cfg) -> tuple[np.ndarray, dict, dict]:
    """Dedupe and sample. Returns the selected spool indices, the count after each step and examples of the
    duplicates dropped."""
    kept = np.arange(len(survivors.lines))
    steps = {"after_filters": len(kept)}
    examples = {}
    for reason, step, enabled, keys, prefer in (
        ("exact_duplicate", "after_exact_dedupe", cfg.dedupe_exact, survivors.exact_keys, None),
        ("duplicate_title", "after_title_dedupe", cfg.dedupe_titles, survivors.title_keys, survivors.richness),
    ):
        if enabled:
            deduped = first_of_each(keys, kept, prefer)
            examples[reason] = duplicate_examples(keys, survivors.lines, kept, deduped, cfg.examples_per_reason)
            kept = deduped
        steps[step] = len(kept)
    if cfg.max_records is not None and len(kept) > cfg.max_records:
        # A uniform sample from the whole file: the records with the smallest seeded hash rank.
        rank = mix64_array(survivors.title_keys[kept] ^ np.uint64(mix64(cfg.seed)) ^ survivors.exact_keys[kept])
        kept = np.sort(kept[np.lexsort((kept, rank))[: cfg.max_records]])
    steps["after_sampling"] = len(kept)
    return kept, steps, examples


def data_fingerprint(cfg, source) -> str:
    settings = {k: v for k, v in config_dict(cfg).items() if k not in _RUNTIME_ONLY}
    stats = {"path": os.path.abspath(source.path), "size": source.size_bytes, "mtime_ns": source.mtime_ns}
    return fingerprint(PIPELINE_VERSION, settings, stats)


def up_to_date(cfg, fp: str) -> dict | None:
    """The previous report if the outputs were made from the same input and settings, else None."""
    report_path = Path(cfg.output_dir) / REPORT_NAME
    if not report_path.exists() or not all(p.exists() for p in output_paths(cfg).values()):
        return None
    try:
        report = orjson.loads(report_path.read_bytes())
    except orjson.JSONDecodeError:
        return None
    return report if report.get("fingerprint") == fp else None


def _peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports kilobytes


def prepare(cfg, *, strict: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Run the preparation stage; returns its report (also written to output_dir/prep_report.json)."""
    source = describe_source(cfg.raw_path)
    fp = data_fingerprint(cfg, source)
    recover_directory(Path(cfg.output_dir))  # what a killed run left: the old set back, half-built ones gone
    if not force and (previous := up_to_date(cfg, fp)) is not None:
        return {**previous, "skipped": True}
    # the splits and their report are built in a fresh directory that replaces output_dir as a whole
    with replaced_directory(Path(cfg.output_dir), REPORT_NAME) as staging:
        return _prepare_into(staging, cfg, source, fp, strict, progress)


def _prepare_into(out_dir: Path, cfg, source, fp: str, strict: bool, progress: bool) -> dict:
    started = time.perf_counter()
    timings: dict[str, float] = {}

    reader = BlockReader(source, cfg.block_mb << 20)
    tasks = reader.ranges() if source.format == "jsonl" and not source.compressed else iter(reader)
    bad_log = BadInputLog(keep=cfg.examples_per_reason)
    drops = {reason: 0 for reason in FILTER_REASONS}
    drop_examples: dict[str, list[dict]] = {}
    numbers: dict[str, list[np.ndarray]] = {name: [] for name in Survivors.__dataclass_fields__}
    spool_dir = Path(tempfile.mkdtemp(prefix=f"spool{TEMP_MARK}{os.getpid()}-", dir=out_dir))
    parsed, blocks, next_line = 0, 0, 1
    try:
        with tqdm(total=source.size_bytes, unit="B", unit_scale=True, desc="clean+filter",
                  disable=not progress) as bar:
            for result in BlockRunner(process_block, cfg.workers, _init_worker, (cfg, spool_dir)).map(tasks):
                offset = next_line - 1  # workers number lines from their block's start
                next_line += result.line_count
                blocks += 1
                bad = [b._replace(line=b.line + offset) for b in result.bad]
                if strict and bad:
                    raise strict_error(source.path, bad[0])
                bad_log.merge(bad, result.bad_counts)
                for reason, count in result.drops.items():
                    drops[reason] += count
                for reason, examples in result.drop_examples.items():
                    kept = drop_examples.setdefault(reason, [])
                    room = cfg.examples_per_reason - len(kept)
                    kept.extend({**example, "line": example["line"] + offset} for example in examples[:room])
                for name, values in numbers.items():
                    column = np.frombuffer(getattr(result, name), dtype=np.uint8 if name == "splits" else np.uint64)
                    values.append(column + np.uint64(offset) if name == "lines" else column)
                parsed += len(result.lines) + sum(result.drops.values())
                bar.update(reader.bytes_read - bar.n)
        timings["read_clean_filter"] = time.perf_counter() - started
        if parsed == 0:
            raise UserError(f"{source.path}: no valid records "
                            f"({bad_log.total} bad lines: {', '.join(bad_log.counts) or 'none'})")

        t0 = time.perf_counter()
        survivors = Survivors(**{name: np.concatenate(values) for name, values in numbers.items()})
        selected, steps, duplicate_drops = select(survivors, cfg)
        timings["dedupe_sample"] = time.perf_counter() - t0
        if len(selected) == 0:  # an empty set never replaces a good one: the old outputs stay
            dropped = {reason: count for reason, count in drops.items() if count}
            raise UserError(f"{source.path}: no record passed the filters ({parsed:,} parsed; dropped: "
                            f"{', '.join(f'{r} {c:,}' for r, c in dropped.items()) or 'none'}; steps: "
                            f"{', '.join(f'{k} {v:,}' for k, v in steps.items())}); the outputs in "
                            f"{cfg.output_dir} were left as they were")

        t0 = time.perf_counter()
        split_counts = _write_examples(split_paths(out_dir), spool_dir, blocks, survivors, selected, progress)
        timings["write_examples"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)
    timings["total"] = time.perf_counter() - started

    report = {
        "fingerprint": fp,
        "pipeline_version": PIPELINE_VERSION,
        "input": dataclasses.asdict(source),
        "config": config_dict(cfg),
        "steps": {"lines_with_data": parsed + bad_log.total, "bad_input": bad_log.total, "records_parsed": parsed,
                  **steps, **{f"{split}_examples": split_counts[split] for split in SPLITS}},
        "bad_input": bad_log.as_dict(),
        "dropped": {reason: {"count": count, "examples": drop_examples.get(reason, [])}
                    for reason, count in drops.items()},
        "duplicates_dropped": {
            "exact_duplicate": {"count": steps["after_filters"] - steps["after_exact_dedupe"],
                                "examples": duplicate_drops.get("exact_duplicate", [])},
            "duplicate_title": {"count": steps["after_exact_dedupe"] - steps["after_title_dedupe"],
                                "examples": duplicate_drops.get("duplicate_title", [])},
        },
        "outputs": {split: str(path) for split, path in output_paths(cfg).items()},
        "timings_s": {name: round(value, 3) for name, value in timings.items()},
        "records_per_s": round((parsed + bad_log.total) / max(timings["total"], 1e-9)),
        "peak_rss_mb": {"main": round(_peak_rss_mb(resource.RUSAGE_SELF), 1),
                        "workers": round(_peak_rss_mb(resource.RUSAGE_CHILDREN), 1)},
    }
    write_json_atomic(out_dir / REPORT_NAME, report)
    return {**report, "skipped": False}


def _write_examples(paths: dict[str, Path], spool_dir: Path, blocks: int, survivors: Survivors,
                    selected: np.ndarray, progress: bool) -> dict[str, int]:
    """Copy each selected example from the spool files, in order, to its split's file (atomic writes)."""
    split_of = np.full(len(survivors.lines), 255, dtype=np.uint8)
    split_of[selected] = survivors.splits[selected]
    counts = np.bincount(split_of[selected], minlength=len(SPLITS))
    codes = iter(split_of.tolist())
    with atomic_outputs(paths) as handles:
        writers = [handles[split].write for split in SPLITS]
        for index in tqdm(range(blocks), unit="block", desc="write examples", disable=not progress):
            with open(spool_path(spool_dir, index), "rb") as spool:
                for raw, code in zip(spool, codes):  # spool first: zip must not take a code past its end
                    if code != 255:
                        writers[code](raw)
    return {split: int(count) for split, count in zip(SPLITS, counts)}
