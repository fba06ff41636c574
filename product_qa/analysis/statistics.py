"""The exploratory analysis stage: one streamed pass over trn.json, in bounded memory.

The pass is the preparation stage's block scan (data/scan.py): worker processes each take a block of lines and
return what it holds: exact counts, fixed-bin length histograms, word and bigram counts pruned to a bounded
size, what each cleaning rule and filter of the preparation stage does to it (imported and run, never
re-implemented), the numbers its dedupe works on, and the records that may enter the reservoir sample. The main
process merges the blocks in file order. After the pass it runs the preparation stage's own dedupe and sampling
on those numbers, so the funnel ends on the numbers prepare() reports for the same file and settings, and it
counts tokens on a sample with the model's tokenizer. findings.py turns it all into the report; report.py
writes the plots, report.md and the sample's table (sample_table.py).
"""
from __future__ import annotations

import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from product_qa.analysis import findings
from product_qa.analysis.cleaning_trace import (
    EXAMPLES_PER_RULE,
    FIELDS,
    LENGTH_UNITS,
    TEXT_ISSUES,
    FieldPass,
    count_flags,
)
from product_qa.analysis.sample_table import sample_frame
from product_qa.analysis.sketches import HeavyHitters, LengthHistogram, Reservoir
from product_qa.analysis.text import title_patterns
from product_qa.analysis.tokens import TokenFigures, cloud_terms, token_figures
from product_qa.data.cleaning import CLEANING_RULES, clean_record
from product_qa.data.filtering import drop_reason
from product_qa.data.reading import Fields, Record
from product_qa.data.scan import BlockJob, BlockResult, Scan
from product_qa.data.selection import SurvivorColumns, Survivors, funnel_steps, select
from product_qa.data.sources import describe_source
from product_qa.hashing import key_hash, mix64
from product_qa.modeling import load_tokenizer

if TYPE_CHECKING:
    import pandas as pd
    from transformers import PreTrainedTokenizerBase

    from config import Config, DataConfig


class RecordMeasures(NamedTuple):
    """What the pass measured of a sampled record (the sample table's columns, sample_table.py)."""

    title_chars: int  # of the raw field, whole (0 when empty)
    title_words: int
    content_chars: int
    content_words: int
    title_rules: int = 0  # bit mask of the CLEANING_RULES that changed the field
    content_rules: int = 0
    title_issues: int = 0  # bit mask of TEXT_ISSUES
    content_issues: int = 0
    pair_key: int | None = None  # the dedupe hashes of the raw (title, content) and title: both fields only
    title_key: int | None = None


class SampledRecord(NamedTuple):
    line: int
    uid: str
    title: str  # raw (a field that cleans past its max length: only its start, see FieldPass.add)
    content: str  # raw
    clean_title: str  # after every cleaning rule (as prepare cleans it when the record is kept)
    clean_content: str
    drop_reason: str | None
    measures: RecordMeasures


@dataclass
class BlockStats(BlockResult):
    """A block's figures (the scan's counts aside); line numbers count from the block's first line."""

    empty: dict[str, int] = field(default_factory=lambda: {"title": 0, "content": 0, "both": 0})
    lengths: dict[str, LengthHistogram] = field(default_factory=dict)  # "title_chars", "content_words", ...
    # Per cleaning rule and per text issue: the records, titles and contents it changed / that have it.
    rule_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rule_examples: list[list[dict]] = field(default_factory=lambda: [[] for _ in CLEANING_RULES])  # rule order
    text_issues: dict[str, dict[str, int]] = field(default_factory=dict)
    survivors: SurvivorColumns = field(default_factory=SurvivorColumns)
    raw_pair_keys: array = field(default_factory=lambda: array("Q"))  # raw (title, content), both non-empty
    raw_title_keys: array = field(default_factory=lambda: array("Q"))  # raw title of the same records
    terms: dict[str, dict[str, tuple[dict, int]]] = field(default_factory=dict)  # field -> words/bigrams
    title_formats: Counter = field(default_factory=Counter)
    language_editions: Counter = field(default_factory=Counter)
    qualifiers: tuple[dict, int] = ({}, 0)
    candidates: list[tuple[int, SampledRecord]] = field(default_factory=list)  # (priority, record)


class _BlockPass:
    """The per-record work of a worker on one block."""

    def __init__(self, cfg: Config, threshold: int):
        self.data = cfg.data
        self.stats = BlockStats(keep=cfg.data.examples_per_reason)
        self.fields = {name: FieldPass(name, self.stats.rule_examples, getattr(cfg.data, f"max_{name}_chars"))
                       for name in FIELDS}
        self.raw_titles: list[str] = []
        self.seed_mix = mix64(cfg.analysis.seed)
        self.threshold = threshold  # reservoir priorities above it can no longer enter the sample
        self.candidate_records: list[int] = []  # the block index of each candidate: finish() adds its flags

    def add(self, record: Record) -> None:
        stats, title, content = self.stats, record.title, record.content
        index = stats.records - 1  # the scan counted the record already
        clean_title, sampled_title = self.fields["title"].add(title, record.line, index) if title else (title, title)
        clean_content, sampled_content = (self.fields["content"].add(content, record.line, index) if content
                                          else (content, content))
        pair_key, title_key = key_hash(f"{title}\x00{content}"), None
        if title:
            self.raw_titles.append(title)
        if title and content:
            title_key = key_hash(title)
            stats.raw_pair_keys.append(pair_key)
            stats.raw_title_keys.append(title_key)
        else:
            stats.empty["title"] += not title
            stats.empty["content"] += not content
            stats.empty["both"] += not title and not content
        cleaned = {"title": clean_title, "content": clean_content}
        filtered_title, filtered_content = clean_record(title, content, lambda name, _text: cleaned[name])
        reason = drop_reason(filtered_title, filtered_content, self.data)
        if reason is not None:
            stats.drops.add(reason, partial(_drop_example, record.line, filtered_title, filtered_content))
        else:
            stats.survivors.add(record.line, filtered_title, filtered_content, self.data)
        priority = pair_key ^ self.seed_mix  # blake2b bits are uniform already; the seed reorders them
        if priority <= self.threshold:
            title_pass, content_pass = self.fields["title"], self.fields["content"]
            measures = RecordMeasures(title_pass.chars[-1] if title else 0, title_pass.words[-1] if title else 0,
                                      content_pass.chars[-1] if content else 0,
                                      content_pass.words[-1] if content else 0,
                                      pair_key=pair_key if title_key is not None else None, title_key=title_key)
            stats.candidates.append((priority, SampledRecord(record.line, record.uid, sampled_title, sampled_content,
                                                             clean_title, clean_content, reason, measures)))
            self.candidate_records.append(index)

    def finish(self, capacity: int) -> BlockStats:
        stats = self.stats
        figures = {name: part.finish(stats.records, capacity) for name, part in self.fields.items()}
        for name, figure in figures.items():
            stats.lengths.update({f"{name}_{unit}": histogram for unit, histogram in figure.lengths.items()})
            stats.terms[name] = figure.terms
        title, content = figures["title"], figures["content"]
        stats.candidates = [(priority, record._replace(measures=record.measures._replace(
            title_rules=int(title.rules[index]), content_rules=int(content.rules[index]),
            title_issues=int(title.issues[index]), content_issues=int(content.issues[index]))))
            for (priority, record), index in zip(stats.candidates, self.candidate_records, strict=True)]
        stats.rule_counts = count_flags([name for name, _ in CLEANING_RULES], title.rules, content.rules)
        stats.text_issues = count_flags(TEXT_ISSUES, title.issues, content.issues)
        stats.title_formats, stats.language_editions, stats.qualifiers = title_patterns(self.raw_titles, capacity)
        return stats


def _drop_example(line: int, title: str, content: str) -> dict:
    # as the filters saw them: unlike preparation's examples, a record with an empty field shows its other raw
    return {"line": line, "title": title[:120], "content": content[:200]}


def analyse_block(cfg: Config, job: BlockJob) -> BlockStats:
    """Everything the analysis learns from one block of lines (in a worker process). Records whose reservoir
    priority is at or below the job's hint (the main process's current cut-off) are sent back whole."""
    block_pass = _BlockPass(cfg, job.hint)
    for record in block_pass.stats.read(job.task, Fields.of(cfg.data)):
        block_pass.add(record)
    return block_pass.finish(cfg.analysis.counter_capacity)


@dataclass
class Analysis:
    report: dict  # what data_analysis_report.json holds
    histograms: dict[str, LengthHistogram]  # "title_chars", "title_words", "content_chars", "content_words"
    token_lengths: dict[str, np.ndarray]  # "title", "content", "question_answer" (empty without a tokenizer)
    cloud_words: dict[str, list[tuple[str, int]]]  # per field, the reservoir's most frequent terms
    sample: pd.DataFrame  # the reservoir sample, one row per record with its measures (sample_table.py)


class Totals:
    """The blocks' figures merged in file order (the scan merges bad lines, drops and record counts)."""

    def __init__(self, cfg: Config):
        capacity = cfg.analysis.counter_capacity
        self.empty = {"title": 0, "content": 0, "both": 0}
        self.lengths = {f"{name}_{unit}": LengthHistogram() for name in FIELDS for unit in LENGTH_UNITS}
        self.rule_counts = {name: Counter() for name, _ in CLEANING_RULES}
        self.rule_examples: list[list[dict]] = [[] for _ in CLEANING_RULES]
        self.text_issues = {issue: Counter() for issue in TEXT_ISSUES}
        self.survivors: list[tuple[SurvivorColumns, int]] = []
        self.raw_keys: dict[str, list[np.ndarray]] = {"pairs": [], "titles": []}
        self.terms = {name: {"words": HeavyHitters(capacity), "bigrams": HeavyHitters(capacity)} for name in FIELDS}
        self.title_formats: Counter = Counter()
        self.language_editions: Counter = Counter()
        self.qualifiers = HeavyHitters(capacity)
        self.reservoir = Reservoir(cfg.analysis.reservoir_size)

    def add(self, stats: BlockStats, offset: int) -> None:
        """Merge one block; `offset` turns its line numbers into the file's."""
        for key, count in stats.empty.items():
            self.empty[key] += count
        for name, histogram in stats.lengths.items():
            self.lengths[name].merge(histogram)
        for name, counts in stats.rule_counts.items():
            self.rule_counts[name].update(counts)
        for kept, examples in zip(self.rule_examples, stats.rule_examples, strict=True):
            kept.extend({**example, "line": example["line"] + offset}
                        for example in examples[:EXAMPLES_PER_RULE - len(kept)])
        for issue, counts in stats.text_issues.items():
            self.text_issues[issue].update(counts)
        self.survivors.append((stats.survivors, offset))
        self.raw_keys["pairs"].append(np.frombuffer(stats.raw_pair_keys, dtype=np.uint64))
        self.raw_keys["titles"].append(np.frombuffer(stats.raw_title_keys, dtype=np.uint64))
        for name, kinds in stats.terms.items():
            for kind, (counts, error) in kinds.items():
                self.terms[name][kind].add(counts, error)
        self.title_formats.update(stats.title_formats)
        self.language_editions.update(stats.language_editions)
        self.qualifiers.add(*stats.qualifiers)
        for priority, record in stats.candidates:
            self.reservoir.offer(priority, record.line + offset, record)

    @cached_property
    def raw_key_counts(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per kind ("pairs", "titles"): the distinct raw keys of the records with both fields, sorted, and how
        many records hold each."""
        return {kind: np.unique(np.concatenate(keys), return_counts=True) for kind, keys in self.raw_keys.items()}

    def raw_duplicates(self) -> dict:
        """Exact duplicates and repeated titles among the records with both fields, before any cleaning."""
        pairs, titles = self.raw_key_counts["pairs"], self.raw_key_counts["titles"]
        records, distinct_pairs, distinct_titles = int(pairs[1].sum()), len(pairs[0]), len(titles[0])
        return {"records_with_both_fields": records, "distinct_pairs": distinct_pairs,
                "distinct_titles": distinct_titles, "exact_duplicates": records - distinct_pairs,
                "duplicate_titles": distinct_pairs - distinct_titles}

    def copies(self, kind: str, keys: list[int | None]) -> list[int | None]:
        """How many records of the file hold each raw key of `kind` (None where a record has an empty field)."""
        distinct, counts = self.raw_key_counts[kind]
        known = np.array([key for key in keys if key is not None], dtype=np.uint64)
        found = iter(counts[np.searchsorted(distinct, known)].tolist())
        return [None if key is None else next(found) for key in keys]


def funnel(scan: Scan, totals: Totals, data: DataConfig) -> tuple[dict, dict]:
    """prepare()'s step counts, from the preparation stage's own dedupe and sampling (select) run on the records
    that passed the filters; and the duplicates it dropped, with examples."""
    survivors = Survivors.of_blocks(totals.survivors)
    selection = select(survivors, data)
    split_counts = survivors.split_counts(selection.indices)
    return (funnel_steps(scan.records, scan.bad.total, selection.steps, split_counts),
            selection.duplicates_dropped())


def analyse(cfg: Config, *, progress: bool = True, tokenizer: PreTrainedTokenizerBase | None = None) -> Analysis:
    """Run the analysis of `cfg.data.raw_path` in one streamed pass. `tokenizer` defaults to the configured
    model's; with analysis.token_sample_size=0 no tokens are counted and no tokenizer is loaded."""
    source = describe_source(cfg.data.raw_path, Fields.of(cfg.data))
    started = time.perf_counter()
    scan, totals = Scan(source, cfg.data), Totals(cfg)
    for stats, offset in scan.results(analyse_block, cfg, desc="analyse", progress=progress,
                                      hint=lambda: totals.reservoir.threshold):  # the threshold only falls
        totals.add(stats, offset)
    scan.require_records()
    timings = {"streamed_pass": time.perf_counter() - started}

    t0 = time.perf_counter()
    steps, duplicates_dropped = funnel(scan, totals, cfg.data)
    sample = totals.reservoir.records()
    tokens = TokenFigures.not_counted(cfg.analysis)
    if token_sample := sample[:cfg.analysis.token_sample_size]:
        tokenizer = tokenizer or load_tokenizer(cfg.model.name, cfg.model.cache_dir, cfg.model.trust_remote_code)
        tokens = token_figures(token_sample, tokenizer, cfg)
    cloud_words = cloud_terms(sample, cfg.analysis)
    timings["dedupe_tokens_clouds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sample_table = sample_frame(sample, tokens, totals)
    timings["sample_table"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started

    measured = findings.Measured(cfg, scan, totals, steps, duplicates_dropped, len(sample), tokens, timings)
    return Analysis(findings.build_report(measured), totals.lengths, tokens.lengths, cloud_words, sample_table)
