"""What the preparation stage's cleaning rules do to each field of the records, traced rule by rule.

A field's text goes through CLEANING_RULES one at a time, as clean_text applies them: the trace notes which
rules changed it (a bit mask per text) and a few before/after examples of each rule, and measures the text
(characters, words) and its TEXT_ISSUES on the way.
"""
from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from product_qa.analysis.sketches import LengthHistogram
from product_qa.analysis.text import count_terms, mostly_non_latin, word_count
from product_qa.data.cleaning import CLEANING_RULES, too_long_start

FIELDS = ("title", "content")
LENGTH_UNITS = ("chars", "words")
EXAMPLES_PER_RULE = 3
_SNIPPET_CONTEXT = 45  # characters shown either side of a change in before/after examples

# Quality issues that are the effect of a cleaning rule: a record has the issue when the rule changes it.
RULE_ISSUES = {"html_entities": "decode_html_entities", "html_tags": "strip_html_tags",
               "scraping_boilerplate": "remove_scraping_boilerplate", "glued_sentences": "fix_glued_sentences"}
TEXT_ISSUES = ("non_ascii", "non_english")  # checked on each field here; bit i of a field's issue mask


def change_example(line: int, field: str, before: str, after: str) -> dict:
    """The stretch of text a rule changed, with some context either side."""
    start = 0
    limit = min(len(before), len(after))
    while start < limit and before[start] == after[start]:
        start += 1
    tail = 0
    while tail < limit - start and before[-1 - tail] == after[-1 - tail]:
        tail += 1
    left = max(0, start - _SNIPPET_CONTEXT)

    def window(text: str) -> str:
        right = min(len(text), len(text) - tail + _SNIPPET_CONTEXT, left + 4 * _SNIPPET_CONTEXT)
        return ("…" if left else "") + text[left:right] + ("…" if right < len(text) else "")

    return {"line": line, "field": field, "before": window(before), "after": window(after)}


@dataclass
class FieldFigures:
    """A block's figures for one field."""

    lengths: dict[str, LengthHistogram]  # per unit: "chars", "words"
    terms: dict[str, tuple[dict, int]]  # "words", "bigrams": the most frequent and the largest count left out
    rules: np.ndarray  # per record of the block: bit mask of the cleaning rules that changed the field
    issues: np.ndarray  # per record of the block: bit mask of TEXT_ISSUES (0 where the field is empty)


class FieldPass:
    """One field (title or content) of a block's records: lengths, cleaning trace, texts for the word counts."""

    def __init__(self, name: str, rule_examples: list[list[dict]], max_chars: int):
        self.name = name
        self.max_chars = max_chars  # data.max_title_chars / max_content_chars: longer ones are dropped
        self.rule_examples = rule_examples  # per rule, shared by the fields of the block
        self.chars, self.words = array("I"), array("I")
        self.cleaned: list[str] = []
        self.records = array("I")  # the block index of the record each text belongs to
        self.rules = array("I")
        self.issues = array("I")  # the language vote is added in finish()

    def add(self, text: str, line: int, record: int) -> tuple[str, str]:
        """Measure a non-empty text and clean it. A huge text that surely cleans past the field's max length
        (which preparation drops) is measured whole but cleaned only from its start, as preparation does
        (clean_text_within). Returns the cleaned text and the raw text (its start alone for such a text: the
        sample has no use for the rest)."""
        self.chars.append(len(text))
        self.words.append(word_count(text))
        non_ascii = not text.isascii()
        if (start := too_long_start(text, self.max_chars)) is not None:
            text = start
        cleaned, changed = text, 0
        for bit, (_, rule) in enumerate(CLEANING_RULES):
            result = rule(cleaned)
            if result != cleaned:
                changed |= 1 << bit
                if len(self.rule_examples[bit]) < EXAMPLES_PER_RULE:
                    self.rule_examples[bit].append(change_example(line, self.name, cleaned, result))
                cleaned = result
        self.cleaned.append(cleaned)
        self.records.append(record)
        self.rules.append(changed)
        self.issues.append(non_ascii | mostly_non_latin(cleaned) << 1)
        return cleaned, text

    def finish(self, records: int, capacity: int) -> FieldFigures:
        """The field's figures over the block's `records` records; word counts keep `capacity` keys."""
        lengths = {unit: LengthHistogram.of(getattr(self, unit)) for unit in LENGTH_UNITS}
        terms, non_english = count_terms(self.cleaned, capacity)
        where = np.frombuffer(self.records, dtype=np.uint32)
        rules, issues = np.zeros(records, dtype=np.uint32), np.zeros(records, dtype=np.uint32)
        rules[where] = np.frombuffer(self.rules, dtype=np.uint32)
        issues[where] = np.frombuffer(self.issues, dtype=np.uint32) | (non_english.astype(np.uint32) << 1)
        return FieldFigures(lengths, terms, rules, issues)


def count_flags(names: Sequence[str], title: np.ndarray, content: np.ndarray) -> dict[str, dict[str, int]]:
    """For each named bit of the per-record masks (a rule or an issue): the titles, contents and records with it."""
    counts = {}
    for bit, name in enumerate(names):
        in_title, in_content = (title >> bit) & 1, (content >> bit) & 1
        counts[name] = {"records": int((in_title | in_content).sum()), "title": int(in_title.sum()),
                        "content": int(in_content.sum())}
    return counts
