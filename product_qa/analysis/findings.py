"""The analysis report (data_analysis_report.json), built from the pass's merged figures, one section at a time."""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from product_qa.analysis.cleaning_trace import EXAMPLES_PER_RULE, FIELDS, LENGTH_UNITS, RULE_ISSUES
from product_qa.analysis.sketches import HeavyHitters, by_count, sample_summary
from product_qa.configurator import config_dict
from product_qa.data.cleaning import CLEANING_RULES
from product_qa.data.filtering import FILTER_REASONS

if TYPE_CHECKING:
    from config import Config
    from product_qa.analysis.statistics import Totals
    from product_qa.analysis.tokens import TokenFigures
    from product_qa.data.scan import Scan


@dataclass
class Measured:
    """What the report is built from."""

    cfg: Config
    scan: Scan  # bad lines, drops and record counts
    totals: Totals  # the blocks' figures, merged
    funnel: dict  # prepare()'s step counts
    duplicates_dropped: dict
    reservoir_size: int  # records in the sample
    tokens: TokenFigures
    timings: dict[str, float]


def _top(counter: HeavyHitters, k: int) -> list[list]:
    return [[key.decode("utf-8", "replace") if isinstance(key, bytes) else key, count]
            for key, count in counter.top(k)]


def flag_counts(counts: Counter) -> dict[str, int]:
    return {key: counts[key] for key in ("records", *FIELDS)}


def _share(count: int, total: int) -> float:
    return round(count / total, 4) if total else 0.0


def build_report(measured: Measured) -> dict:
    cfg, scan, totals = measured.cfg, measured.scan, measured.totals
    raw_duplicates = totals.raw_duplicates()
    return {
        "input": dataclasses.asdict(scan.source),
        "config": {"analysis": config_dict(cfg.analysis), "data": config_dict(cfg.data),
                   "model": config_dict(cfg.model)},
        "records": {"lines_with_data": measured.funnel["lines_with_data"], "bad_input": scan.bad.total,
                    "records_parsed": scan.records, "empty_title": totals.empty["title"],
                    "empty_content": totals.empty["content"], "both_empty": totals.empty["both"],
                    "both_fields": raw_duplicates["records_with_both_fields"]},
        "bad_input": scan.bad.as_dict(),
        "duplicates": raw_duplicates,
        "lengths": _lengths(measured),
        "max_length": measured.tokens.max_length,
        "quality": _quality(measured, raw_duplicates),
        "cleaning_rules": [{"rule": name, **flag_counts(totals.rule_counts[name]), "examples": examples}
                           for (name, _), examples in zip(CLEANING_RULES, totals.rule_examples, strict=True)],
        "filters": [{"filter": reason, "dropped": scan.drops.counts.get(reason, 0),
                     "examples": scan.drops.examples.get(reason, [])[:EXAMPLES_PER_RULE]}
                    for reason in FILTER_REASONS],
        "duplicates_dropped": measured.duplicates_dropped,
        "funnel": measured.funnel,
        **_words(measured),
        "methods": _methods(measured),
        "sample_sizes": {"reservoir": measured.reservoir_size, "tokens": measured.tokens.sample_size,
                         "not_tokenized_too_long": measured.tokens.not_tokenized},
        "timings_s": {name: round(seconds, 3) for name, seconds in measured.timings.items()},
    }


def _lengths(measured: Measured) -> dict:
    histograms, tokens = measured.totals.lengths, measured.tokens
    return {
        **{name: {**{unit: histograms[f"{name}_{unit}"].summary() for unit in LENGTH_UNITS},
                  "tokens": sample_summary(tokens.summary_lengths(name))}
           for name in FIELDS},
        "question_answer": {"tokens": sample_summary(tokens.summary_lengths("question_answer"))},
    }


def _quality(measured: Measured, raw_duplicates: dict) -> dict:
    totals, records, bad = measured.totals, measured.scan.records, measured.scan.bad.total
    quality = {
        "empty_title": {"records": totals.empty["title"]},
        "empty_content": {"records": totals.empty["content"]},
        **{issue: flag_counts(totals.rule_counts[rule]) for issue, rule in RULE_ISSUES.items()},
        **{issue: flag_counts(counts) for issue, counts in totals.text_issues.items()},
        "exact_duplicates": {"records": raw_duplicates["exact_duplicates"]},
        "duplicate_titles": {"records": raw_duplicates["duplicate_titles"]},
    }
    for counts in quality.values():
        counts["share"] = _share(counts["records"], records)
    quality["bad_input_lines"] = {"records": bad, "share": _share(bad, measured.funnel["lines_with_data"])}
    return quality


def _words(measured: Measured) -> dict:
    """The top terms of each field and the title patterns."""
    totals, top_k = measured.totals, measured.cfg.analysis.top_k
    return {
        "top_terms": {name: {kind: {"top": _top(counter, top_k), "max_undercount": counter.error}
                             for kind, counter in kinds.items()} for name, kinds in totals.terms.items()},
        "title_patterns": {
            "formats": by_count(totals.title_formats),
            "language_editions": by_count(totals.language_editions),
            "qualifiers": {"top": _top(totals.qualifiers, top_k), "max_undercount": totals.qualifiers.error},
        },
    }


def _methods(measured: Measured) -> dict[str, str]:
    """How each figure was computed."""
    cfg, tokens = measured.cfg, measured.tokens
    skipped = tokens.not_tokenized
    tokens_note = (f"the raw fields of a reservoir sample of {tokens.sample_size:,} records, {cfg.model.name} "
                   "tokenizer, but for the titles and descriptions that preparation drops as too long "
                   f"({skipped['title']:,} and {skipped['content']:,})" if tokens.sample_size else "not counted")
    return {
        "counts": "exact, streamed over every line",
        "lengths_in_chars_and_words": "fixed histogram (one bin per integer up to 111, then 1%-wide "
                                      "log-spaced bins): quantiles exact up to 111 and at most 1% low above; "
                                      "count, min, mean and max exact",
        "lengths_in_tokens": tokens_note,
        "duplicates": "exact, from 64-bit hashes of every record with both fields",
        "quality_issues": "exact, streamed; HTML entities, HTML tags, boilerplate and glued sentences are "
                          "the records the matching cleaning rule changes",
        "cleaning_filters_funnel": "exact: the preparation stage's cleaning rules, filters, dedupe and "
                                   "sampling run on every record",
        "top_terms": f"heavy-hitter counter (periodic pruning to {cfg.analysis.counter_capacity:,} keys); "
                     "each count at most max_undercount low",
        "word_clouds": f"reservoir sample of {measured.reservoir_size:,} records",
        "title_patterns": "exact counts; qualifiers by the heavy-hitter counter",
    }
