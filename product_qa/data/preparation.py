"""The preparation stage: stream trn.json, clean, filter, dedupe, sample, split by product, build examples.

Pass 1 is the shared block scan (data/scan.py): worker processes parse, clean and filter their blocks and
spool each surviving record, already rendered as the example of its split, to a temp file of their own. The
main process keeps only a few numbers per record; dedupe and sampling are array operations on them
(data/selection.py). Pass 2 streams the selected examples from the spool files into
train/validation/test.jsonl, written atomically. Memory stays flat whatever the input size, and the same
input and config give identical files whatever the number of workers.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
from tqdm import tqdm

from product_qa.configurator import config_dict, fingerprint
from product_qa.data.card import CARD_NAME, dataset_card
from product_qa.data.cleaning import clean_record, clean_text_within, within_limits
from product_qa.data.examples import SPLITS, output_paths, split_paths
from product_qa.data.filtering import FILTER_REASONS, drop_reason
from product_qa.data.prompts import SPLIT_PHRASINGS, build_example, pick_phrasing
from product_qa.data.reading import Fields, SourceInfo
from product_qa.data.scan import BlockJob, BlockResult, Scan
from product_qa.data.selection import Selection, SurvivorColumns, Survivors, funnel_steps, select
from product_qa.data.sources import describe_source
from product_qa.errors import UserError
from product_qa.hashing import files_digest
from product_qa.io_utils import (
    TEMP_MARK,
    atomic_outputs,
    recover_directory,
    replaced_directory,
    write_bytes_atomic,
    write_json_atomic,
)
from product_qa.locks import data_lock
from product_qa.memory import peak_rss_mb

if TYPE_CHECKING:
    from config import DataConfig

PIPELINE_VERSION = 3  # bump when a change to cleaning, filters or examples changes the outputs (3: messages, card)
REPORT_NAME = "prep_report.json"
# Settings that change speed, not outputs, stay out of the fingerprint.
_RUNTIME_ONLY = ("workers", "block_mb", "output_dir")


@dataclass
class PrepBlock(BlockResult):
    """A block's result: the scan's counts and the numbers of its surviving records (their examples are in its
    spool file)."""

    survivors: SurvivorColumns = field(default_factory=SurvivorColumns)


def spool_path(spool_dir: Path, index: int) -> Path:
    return spool_dir / f"{index:08d}.jsonl"


def process_block(state: tuple[DataConfig, Path], job: BlockJob) -> PrepBlock:
    """Parse, clean and filter one block, and spool each kept record rendered as the example of its split (in a
    worker process; dedupe and sampling later decide which examples are written)."""
    data, spool_dir = state
    result = PrepBlock(keep=data.examples_per_reason)
    clean = within_limits(data)
    spool = bytearray()  # one growing buffer: thousands of separate bytes objects cost more in allocation
    for record in result.read(job.task, Fields.of(data)):
        title, content = clean_record(record.title, record.content, clean)
        reason = drop_reason(title, content, data)
        if reason is not None:
            result.drops.add(reason, partial(drop_example, record.line, title, content, data))
            continue
        title_key, split = result.survivors.add(record.line, title, content, data)
        phrasing = pick_phrasing(SPLIT_PHRASINGS[SPLITS[split]], title_key, data.seed)
        spool += orjson.dumps(build_example(record.uid, title, content, phrasing))
        spool += b"\n"
    spool_path(spool_dir, job.index).write_bytes(spool)
    return result


def drop_example(line: int, title: str, content: str, data: DataConfig) -> dict:
    # cleaned here too: a record with an empty field reaches the filters raw
    return {"line": line, "title": clean_text_within(title, data.max_title_chars)[:120],
            "content": clean_text_within(content, data.max_content_chars)[:200]}


def data_fingerprint(data: DataConfig, source: SourceInfo, content_digest: str) -> str:
    """What the outputs are made from: the settings, and the input's contents (its size and mtime are not
    enough: an edit that keeps the length, with the mtime put back, changes neither). Hashing costs about 0.15 s
    per 100 MB, a fraction of reading the file to prepare it: `content_digest`, files_digest of it)."""
    settings = {k: v for k, v in config_dict(data).items() if k not in _RUNTIME_ONLY}
    stats = {"path": os.path.abspath(source.path), "size": source.size_bytes,
             "blake2b": content_digest}
    return fingerprint(PIPELINE_VERSION, settings, stats)


def up_to_date(data: DataConfig, fp: str) -> dict | None:
    """The previous report if the outputs were made from the same input and settings, else None."""
    report_path = Path(data.output_dir) / REPORT_NAME
    outputs = [*output_paths(data).values(), Path(data.output_dir) / CARD_NAME]
    if not report_path.exists() or not all(p.exists() for p in outputs):
        return None
    try:
        report = orjson.loads(report_path.read_bytes())
    except orjson.JSONDecodeError:
        return None
    return report if isinstance(report, dict) and report.get("fingerprint") == fp else None


def prepare(data: DataConfig, *, strict: bool = False, force: bool = False, progress: bool = True) -> dict:
    """Run the preparation stage; returns its report (also written to output_dir/prep_report.json)."""
    source = describe_source(data.raw_path, Fields.of(data))
    content_digest = files_digest([Path(source.path)])
    fp = data_fingerprint(data, source, content_digest)
    with data_lock(Path(data.output_dir)):  # a training reading the data finishes with it first, and vice versa
        recover_directory(Path(data.output_dir))  # what a killed run left: the old set back, half-built ones gone
        previous = None if force else up_to_date(data, fp)
        if previous is not None and not (strict and previous.get("bad_input")):  # --strict stops at a bad line,
            return {**previous, "skipped": True}                                  # even one the outputs were made past
        # a fresh directory replaces output_dir as a whole: a reader never sees new splits beside an old report
        with replaced_directory(Path(data.output_dir), REPORT_NAME) as staging:
            return _prepare_into(staging, data, source, (fp, content_digest), strict, progress)


def _prepare_into(out_dir: Path, data: DataConfig, source: SourceInfo, digests: tuple[str, str], strict: bool,
                  progress: bool) -> dict:
    """The splits, their report and their dataset card, written into `out_dir`; `digests`: the preparation's
    fingerprint and the input's content digest."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    scan = Scan(source, data, strict=strict)
    spool_dir = Path(tempfile.mkdtemp(prefix=f"spool{TEMP_MARK}{os.getpid()}-", dir=out_dir))
    try:
        survivors = Survivors.of_blocks(
            (result.survivors, offset)
            for result, offset in scan.results(process_block, (data, spool_dir), desc="clean+filter",
                                               progress=progress))
        timings["read_clean_filter"] = time.perf_counter() - started
        scan.require_records()

        t0 = time.perf_counter()
        selection = select(survivors, data)
        timings["dedupe_sample"] = time.perf_counter() - t0
        if len(selection.indices) == 0:  # an empty set never replaces a good one: the old outputs stay
            raise _nothing_selected(scan, selection, data)

        t0 = time.perf_counter()
        split_counts = _write_examples(split_paths(out_dir), spool_dir, scan.blocks, survivors, selection.indices,
                                       progress)
        timings["write_examples"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)
    timings["total"] = time.perf_counter() - started
    fp, content_digest = digests
    report = {"fingerprint": fp, **_report(scan, selection, split_counts, data, timings)}
    report["input"]["blake2b"] = content_digest
    write_json_atomic(out_dir / REPORT_NAME, report)
    # documentation of the splits, not data: outside prepared_data_fingerprint, which hashes the splits alone
    write_bytes_atomic(out_dir / CARD_NAME, dataset_card(report).encode())
    return {**report, "skipped": False}


def _nothing_selected(scan: Scan, selection: Selection, data: DataConfig) -> UserError:
    dropped = {reason: scan.drops.counts[reason] for reason in FILTER_REASONS if scan.drops.counts.get(reason)}
    return UserError(f"{scan.source.path}: no record passed the filters ({scan.records:,} parsed; dropped: "
                     f"{', '.join(f'{r} {c:,}' for r, c in dropped.items()) or 'none'}; steps: "
                     f"{', '.join(f'{k} {v:,}' for k, v in selection.steps.items())}); the outputs in "
                     f"{data.output_dir} were left as they were")


def _report(scan: Scan, selection: Selection, split_counts: dict[str, int], data: DataConfig,
            timings: dict[str, float]) -> dict:
    lines_with_data = scan.records + scan.bad.total
    return {
        "pipeline_version": PIPELINE_VERSION,
        "input": dataclasses.asdict(scan.source),
        "config": config_dict(data),
        "steps": funnel_steps(scan.records, scan.bad.total, selection.steps, split_counts),
        "bad_input": scan.bad.as_dict(),
        "dropped": {reason: {"count": scan.drops.counts.get(reason, 0),
                             "examples": scan.drops.examples.get(reason, [])} for reason in FILTER_REASONS},
        "duplicates_dropped": selection.duplicates_dropped(),
        "outputs": {split: str(path) for split, path in output_paths(data).items()},
        "timings_s": {name: round(value, 3) for name, value in timings.items()},
        "records_per_s": round(lines_with_data / max(timings["total"], 1e-9)),
        "peak_rss_mb": {"main": peak_rss_mb(), "workers": peak_rss_mb(children=True)},
    }


def _write_examples(paths: dict[str, Path], spool_dir: Path, blocks: int, survivors: Survivors,
                    selected: np.ndarray, progress: bool) -> dict[str, int]:
    """Copy each selected example from the spool files, in order, to its split's file (atomic writes)."""
    split_of = np.full(len(survivors.lines), 255, dtype=np.uint8)  # 255: not selected
    split_of[selected] = survivors.splits[selected]
    codes = iter(split_of.tolist())
    with atomic_outputs(paths) as handles:
        writers = [handles[split].write for split in SPLITS]
        for index in tqdm(range(blocks), unit="block", desc="write examples", disable=not progress):
            with open(spool_path(spool_dir, index), "rb") as spool:
                for raw, code in zip(spool, codes, strict=False):  # spool first: zip must not take a code past its end
                    if code != 255:
                        writers[code](raw)
    return survivors.split_counts(selected)
