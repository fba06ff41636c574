"""The exploratory analysis stage: one streamed pass over trn.json, in bounded memory.

Worker processes (the BlockRunner the preparation stage uses) each take a block of lines and return what it
holds: exact counts, fixed-bin length histograms, word and bigram counts pruned to a bounded size, what each
cleaning rule and filter of the preparation stage does to it (imported and run, never re-implemented), the
hashes the preparation stage's dedupe works on, and the records that may enter the reservoir sample. The main
process merges the blocks in file order. After the pass it runs the preparation stage's own dedupe and
sampling on those hashes, so the funnel ends on the numbers prepare() reports for the same file and settings,
and it counts tokens on a sample with the model's tokenizer. analysis_report.py draws the plots and report.md.
"""
from __future__ import annotations

import dataclasses
import heapq
import re
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from product_qa.data.cleaning import CLEANING_RULES, LONG_TEXT_CHARS, too_long_start
from product_qa.configurator import config_dict
from product_qa.errors import UserError
from product_qa.data.filtering import FILTER_REASONS, drop_reason
from product_qa.hashing import key_hash, mix64
from product_qa.modeling import load_tokenizer
from product_qa.parallel import BlockRunner
from product_qa.data.preparation import Survivors, dedupe_keys, select, split_code
from product_qa.data.examples import SPLITS
from product_qa.data.prompts import TRAINING_PHRASINGS, build_example, pick_phrasing, resolve_template
from product_qa.data.reading import BadInputLog, BadLine, Block, BlockReader, ByteRange, describe_source, parse_block

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
FIELDS = ("title", "content")
LENGTH_UNITS = ("chars", "words")
EXAMPLES_PER_RULE = 3
CLOUD_WORDS = 200  # words drawn in each word cloud
_CLOUD_CHUNK = 5000  # sampled records tokenized at a time for the word clouds
_SNIPPET_CONTEXT = 45  # characters shown either side of a change in before/after examples
_LANGUAGE_HEAD = 60  # tokens of a text the language guess looks at
_NO_THRESHOLD = 1 << 64  # above every 64-bit priority: the reservoir takes every record until it is full

# Quality issues that are the effect of a cleaning rule: a record has the issue when the rule changes it.
RULE_ISSUES = {"html_entities": "decode_html_entities", "html_tags": "strip_html_tags",
               "scraping_boilerplate": "remove_scraping_boilerplate", "glued_sentences": "fix_glued_sentences"}
TEXT_ISSUES = ("non_ascii", "non_english")  # analysis.py's own checks on each field; bit i of a field's mask

# NLTK's English stopwords, plus the fragments the tokenizer leaves of contractions and possessives ("don't" ->
# "don", "t"), as bytes: the tokenizer works on UTF-8 bytes.
STOPWORDS = frozenset(w.encode() for w in """
    a about above after again against all am an and any are as at be because been before being below between both
    but by can did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off
    on once only or other our ours ourselves out over own same she should so some such than that the their theirs
    them themselves then there these they this those through to too under until up very was we were what when
    where which while who whom why will with you your yours yourself yourselves s t d ll m re ve don doesn didn
    isn wasn aren weren won wouldn couldn shouldn hasn haven hadn also may one new many much us would could
    """.split())
# The language guess compares hits on frequent English function words with hits on those of Spanish, French,
# German, Italian and Portuguese; words common in two of them ("a", "in", "die", "con") are left out.
ENGLISH_MARKERS = frozenset(w.encode() for w in """
    the and of to is that it for with this was are you his her by from be at have not or they which their will
    has were been she he we
    """.split())
FOREIGN_MARKERS = frozenset(w.encode() for w in """
    de en y el la los las del por para una que es se su al lo como más pero le les des une et est du au aux pour dans
    avec sur qui pas ce il elle sont cette der das und ist nicht ein eine mit von zu für auf dem sich auch wird
    ich della di che non è gli delle nel sono questo os da dos das em um uma não com ao seu sua
    """.split())

# A block's texts are tokenized at once, joined by _TEXT_BREAK: cleaning removes control characters, so no
# text holds \x1e, and its token RECORD_BREAK marks where a text ends (no bigram spans two texts).
_TEXT_BREAK = " \x1e "
RECORD_BREAK = b"\x1e"
# Tokens: runs of ASCII letters and digits, lowercased, and of any non-ASCII bytes (accented and non-Latin
# letters); every other ASCII byte separates. bytes.translate + split is many times faster than a regex.
_TOKEN_TABLE = bytes(c + 32 if 65 <= c <= 90 else c if (97 <= c <= 122 or 48 <= c <= 57 or c >= 128 or c == 0x1e)
                     else 32 for c in range(256))
# Non-ASCII punctuation and symbols (’ “ — … « © °), blanked before tokenizing so they don't glue to words.
_UNICODE_PUNCTUATION = re.compile("[\u00a0-\u00bf\u00d7\u00f7\u2000-\u206f\u2100-\u2bff\u3000-\u303f]")
# Letters of scripts other than Latin: Greek, Cyrillic, Hebrew, Arabic, Indic, Thai, kana, CJK, Hangul.
_NON_LATIN_LETTER = re.compile("[\u0370-\u052f\u0590-\u06ff\u0900-\u0eff\u1100-\u11ff\u3040-\u30ff"
                               "\u3400-\u9fff\uac00-\ud7af]")

# Product formats named in titles, counted once per title; "Audio CD" is tried before "CD".
TITLE_FORMATS = (("Paperback", r"paperback"), ("Hardcover", r"hard(?:cover|back)"),
                 ("Mass Market", r"mass market(?: paperback)?"), ("Board book", r"board ?book"), ("Kindle", r"kindle"),
                 ("Audio CD", r"audio ?cd"), ("Audiobook", r"audio ?book"), ("Cassette", r"cassette"), ("VHS", r"vhs"),
                 ("DVD", r"dvd"), ("Blu-ray", r"blu-?ray"), ("CD", r"cd"), ("Vinyl / LP", r"vinyl|lp"),
                 ("Import", r"import"))
# The lookahead on the letters a format can start with lets the regex engine skip most positions fast, and
# ASCII lookarounds are cheaper than \b: 4x faster than the plain alternation.
_FORMAT_INITIALS = "".join(sorted({part[0] for _, pattern in TITLE_FORMATS for part in pattern.split("|")}))
_TITLE_FORMAT = re.compile(
    rf"(?=[{_FORMAT_INITIALS}{_FORMAT_INITIALS.upper()}])(?<![A-Za-z0-9])(?:"
    + "|".join(f"(?P<f{i}>{pattern})" for i, (_, pattern) in enumerate(TITLE_FORMATS)) + r")(?![A-Za-z0-9])",
    re.IGNORECASE)
LANGUAGES = ("Spanish", "French", "German", "Italian", "Portuguese", "Japanese", "Chinese", "Russian", "Dutch",
             "Korean", "Arabic", "Hebrew", "Polish", "Swedish", "Greek", "Latin", "Turkish", "Hindi", "Catalan",
             "Danish", "Norwegian", "English")
_LANGUAGE_EDITION = re.compile(rf"\(({'|'.join(LANGUAGES)}) Edition\)", re.IGNORECASE)
_QUALIFIER = re.compile(r"[(\[][^()\[\]\n]{1,60}[)\]]")  # "(Spanish Edition)", "[VHS]", "(Penguin Classics)"


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
        return {key: int(count) for key, count in zip(keys, counts)}, 0
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


def blank_punctuation(text: str) -> str:
    """Non-ASCII punctuation and symbols made spaces, so they don't glue to words (isascii costs nothing)."""
    return text if text.isascii() else _UNICODE_PUNCTUATION.sub(" ", text)


_WORD = re.compile(r"\S+")  # what str.split() returns: \s is the same Unicode whitespace


def word_count(text: str) -> int:
    """Whitespace-separated words: counting spaces is much faster than split() when they are all single."""
    if "  " not in text and text.isprintable() and text[:1] != " " and text[-1:] != " ":
        return text.count(" ") + 1  # isprintable is False for every whitespace character but the plain space
    if len(text) > LONG_TEXT_CHARS:  # counted without a list of its millions of words
        return sum(1 for _ in _WORD.finditer(text))
    return len(text.split())


def is_term(token: bytes) -> bool:
    """A word worth counting: not a stopword, a single character or a number."""
    return len(token) > 1 and token not in STOPWORDS and not token.isdigit()


def mostly_non_latin(text: str) -> bool:
    return not text.isascii() and 3 * len(_NON_LATIN_LETTER.findall(text)) > len(text)


def count_terms(texts: list[str], capacity: int) -> tuple[dict[str, tuple[dict, int]], np.ndarray]:
    """Word statistics of cleaned texts, tokenized together (one call per block, not per text): counts of the
    terms and of the bigrams of adjacent terms (stopwords removed, never across two texts), each as (the
    `capacity` largest counts, the largest count left out); and for each text the language vote: more
    distinct function words of Spanish, French, German, Italian or Portuguese than of English among its first
    words (at least two). Counting works on integer ids with numpy: several times faster than counting tuples."""
    tokens = (_TEXT_BREAK.join(map(blank_punctuation, texts)) + _TEXT_BREAK).encode("utf-8", "surrogatepass")
    tokens = tokens.translate(_TOKEN_TABLE).split()
    vocabulary = list(dict.fromkeys(tokens))
    index = {word: i for i, word in enumerate(vocabulary)}
    size = len(vocabulary)
    ids = np.fromiter(map(index.__getitem__, tokens), dtype=np.int64, count=len(tokens))
    term = np.fromiter(map(is_term, vocabulary), dtype=bool, count=size)
    word_counts = np.bincount(ids, minlength=size)
    term_ids = np.flatnonzero(term)
    words = keep_largest([vocabulary[i] for i in term_ids], word_counts[term_ids], capacity)
    left, right = ids[:-1], ids[1:]
    both_terms = term[left] & term[right]
    codes, pair_counts = np.unique(left[both_terms] * size + right[both_terms], return_counts=True)
    kept, left_out = keep_largest(codes.tolist(), pair_counts, capacity)
    bigrams = {vocabulary[code // size] + b" " + vocabulary[code % size]: count for code, count in kept.items()}

    is_break = ids == index.get(RECORD_BREAK, -1)
    text_of = np.cumsum(is_break) - is_break  # the text each token belongs to
    first = np.flatnonzero(np.concatenate(([True], is_break[:-1])))  # each text's first token
    head = ~is_break & (np.arange(len(ids)) - first[text_of] < _LANGUAGE_HEAD)
    votes = []
    for markers in (FOREIGN_MARKERS, ENGLISH_MARKERS):
        hits = head & np.fromiter(map(markers.__contains__, vocabulary), bool, size)[ids]
        distinct = np.unique(text_of[hits] * size + ids[hits]) // size  # a word repeated counts once
        votes.append(np.bincount(distinct, minlength=len(texts)))
    return {"words": words, "bigrams": (bigrams, left_out)}, (votes[0] >= 2) & (votes[0] > votes[1])


def titles_with(pattern: re.Pattern, titles: str, ends: np.ndarray, key) -> Counter:
    """How many of the newline-joined `titles` (`ends`: the offset past each) hold a match, per `key(match)`."""
    matches = [(match.start(), key(match)) for match in pattern.finditer(titles)]
    where = np.searchsorted(ends, [start for start, _ in matches], side="right").tolist()
    return Counter(name for _, name in set(zip(where, (name for _, name in matches))))


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


class SampledRecord(NamedTuple):
    line: int
    uid: str
    title: str  # raw (a field that cleans past its max length: only its start, see _FieldPass.add)
    content: str  # raw
    clean_title: str  # after every cleaning rule (as prepare cleans it when the record is kept)
    clean_content: str
    drop_reason: str | None


@dataclass
class BlockStats:
    """What a worker sends back for one block; line numbers count from the block's first line."""

    line_count: int = 0
    records: int = 0
    empty: dict[str, int] = field(default_factory=lambda: {"title": 0, "content": 0, "both": 0})
    bad: list[BadLine] = field(default_factory=list)
    bad_counts: dict[str, int] = field(default_factory=dict)
    lengths: dict[str, LengthHistogram] = field(default_factory=dict)  # "title_chars", "content_words", ...
    # Per cleaning rule and per text issue: the records, titles and contents it changed / that have it.
    rule_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rule_examples: list[list[dict]] = field(default_factory=lambda: [[] for _ in CLEANING_RULES])  # rule order
    text_issues: dict[str, dict[str, int]] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    drop_examples: dict[str, list[dict]] = field(default_factory=dict)
    # The numbers the preparation stage's select() needs, for records that passed the filters (see Survivors).
    survivors: dict[str, array] = field(default_factory=lambda: {
        "lines": array("Q"), "title_keys": array("Q"), "exact_keys": array("Q"), "richness": array("Q"),
        "splits": array("B")})
    raw_pair_keys: array = field(default_factory=lambda: array("Q"))  # raw (title, content), both non-empty
    raw_title_keys: array = field(default_factory=lambda: array("Q"))  # raw title of the same records
    terms: dict[str, dict[str, tuple[dict, int]]] = field(default_factory=dict)  # field -> words/bigrams
    title_formats: Counter = field(default_factory=Counter)
    language_editions: Counter = field(default_factory=Counter)
    qualifiers: tuple[dict, int] = ({}, 0)
    candidates: list[tuple[int, SampledRecord]] = field(default_factory=list)  # (priority, record)


_worker_cfg = None


def _init_worker(cfg) -> None:
    global _worker_cfg
    _worker_cfg = cfg


class _FieldPass:
    """One field (title or content) of a block's records: lengths, cleaning trace, texts for the word counts."""

    def __init__(self, name: str, rule_examples: list[list[dict]], max_chars: int):
        self.name = name
        self.max_chars = max_chars  # data.max_title_chars / max_content_chars: longer ones are dropped
        self.rule_examples = rule_examples
        self.chars, self.words = array("I"), array("I")
        self.cleaned: list[str] = []
        self.records = array("I")  # the block index of the record each text belongs to
        self.rules = array("I")  # bit mask of the cleaning rules that changed each text
        self.issues = array("I")  # bit mask of TEXT_ISSUES; the language vote is added in finish()

    def add(self, text: str, line: int, record: int) -> tuple[str, str]:
        """Measure a non-empty text and clean it, the rules applied one by one as clean_text does. A huge text
        that surely cleans past the field's max length (which preparation drops) is measured whole but cleaned
        only from its start, as preparation does (clean_text_within). Returns the cleaned text and the raw text
        (its start alone for such a text: the sample has no use for the rest)."""
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

    def finish(self, stats: BlockStats, capacity: int) -> tuple[np.ndarray, np.ndarray]:
        """Store the field's lengths and word counts in `stats`; returns, for every record of the block, the bit
        masks of the rules that changed this field and of its TEXT_ISSUES (0 where the field is empty)."""
        for unit in LENGTH_UNITS:
            stats.lengths[f"{self.name}_{unit}"] = LengthHistogram.of(getattr(self, unit))
        stats.terms[self.name], non_english = count_terms(self.cleaned, capacity)
        records = np.frombuffer(self.records, dtype=np.uint32)
        rules, issues = np.zeros(stats.records, dtype=np.uint32), np.zeros(stats.records, dtype=np.uint32)
        rules[records] = np.frombuffer(self.rules, dtype=np.uint32)
        issues[records] = np.frombuffer(self.issues, dtype=np.uint32) | (non_english.astype(np.uint32) << 1)
        return rules, issues


def analyse_block(index: int, job: tuple[Block | ByteRange, int]) -> BlockStats:
    """Everything the analysis learns from one block of lines (runs in a worker process). Records whose
    reservoir priority is at or below `threshold` (the main process's current cut-off) are sent back whole."""
    task, threshold = job
    cfg = _worker_cfg
    block = task.load() if isinstance(task, ByteRange) else task._replace(first_line=1)
    stats = BlockStats(line_count=block.line_count)
    fields = {name: _FieldPass(name, stats.rule_examples, getattr(cfg.data, f"max_{name}_chars"))
              for name in FIELDS}
    titles, contents = fields["title"].add, fields["content"].add
    raw_titles: list[str] = []
    seed_mix = mix64(cfg.analysis.seed)
    survivors = stats.survivors
    for item in parse_block(block):
        if isinstance(item, BadLine):
            count = stats.bad_counts.get(item.reason, 0)
            if count < cfg.data.examples_per_reason:
                stats.bad.append(item)
            stats.bad_counts[item.reason] = count + 1
            continue
        title, content = item.title, item.content
        clean_title, sampled_title = titles(title, item.line, stats.records) if title else (title, title)
        clean_content, sampled_content = (contents(content, item.line, stats.records) if content
                                          else (content, content))
        stats.records += 1
        pair_key = key_hash(f"{title}\x00{content}")
        if title and content:
            raw_titles.append(title)
            stats.raw_pair_keys.append(pair_key)
            stats.raw_title_keys.append(key_hash(title))
            filtered_title, filtered_content = clean_title, clean_content
        else:
            if title:
                raw_titles.append(title)
            stats.empty["title"] += not title
            stats.empty["content"] += not content
            stats.empty["both"] += not title and not content
            # prepare cleans only records with both fields (clean_record): the others are filtered raw
            filtered_title, filtered_content = title, content
        reason = drop_reason(filtered_title, filtered_content, cfg.data)
        if reason is not None:
            count = stats.drops.get(reason, 0)
            if count < cfg.data.examples_per_reason:
                stats.drop_examples.setdefault(reason, []).append(
                    {"line": item.line, "title": filtered_title[:120], "content": filtered_content[:200]})
            stats.drops[reason] = count + 1
        else:
            title_key, exact_key = dedupe_keys(filtered_title, filtered_content)
            survivors["lines"].append(item.line)
            survivors["title_keys"].append(title_key)
            survivors["exact_keys"].append(exact_key)
            survivors["richness"].append(len(filtered_content))
            survivors["splits"].append(split_code(title_key, cfg.data))
        priority = pair_key ^ seed_mix  # blake2b bits are uniform already; the seed reorders them
        if priority <= threshold:
            stats.candidates.append((priority, SampledRecord(item.line, item.uid, sampled_title, sampled_content,
                                                             clean_title, clean_content, reason)))
    masks = {name: part.finish(stats, cfg.analysis.counter_capacity) for name, part in fields.items()}
    stats.rule_counts = _count_flags([name for name, _ in CLEANING_RULES], masks["title"][0], masks["content"][0])
    stats.text_issues = _count_flags(TEXT_ISSUES, masks["title"][1], masks["content"][1])
    _count_title_patterns(stats, raw_titles, cfg.analysis.counter_capacity)
    return stats


def _count_flags(names, title: np.ndarray, content: np.ndarray) -> dict[str, dict[str, int]]:
    """For each named bit of the per-record masks (a rule or an issue): the titles, contents and records with it."""
    counts = {}
    for bit, name in enumerate(names):
        in_title, in_content = (title >> bit) & 1, (content >> bit) & 1
        counts[name] = {"records": int((in_title | in_content).sum()), "title": int(in_title.sum()),
                        "content": int(in_content.sum())}
    return counts


def _count_title_patterns(stats: BlockStats, titles: list[str], capacity: int) -> None:
    """Formats, language editions and bracketed qualifiers: how many titles name each (one regex pass a block)."""
    joined = "\n".join(titles)
    ends = np.cumsum(np.fromiter(map(len, titles), dtype=np.int64, count=len(titles)) + 1)
    stats.title_formats = Counter({TITLE_FORMATS[int(group[1:])][0]: count for group, count in
                                   titles_with(_TITLE_FORMAT, joined, ends, lambda m: m.lastgroup).items()})
    stats.language_editions = titles_with(_LANGUAGE_EDITION, joined, ends, lambda m: m.group(1).title())
    qualifiers = titles_with(_QUALIFIER, joined, ends, lambda m: m.group())
    stats.qualifiers = keep_largest(list(qualifiers), np.fromiter(qualifiers.values(), np.int64, len(qualifiers)),
                                    capacity)


class Reservoir:
    """A uniform sample of `size` records: the records with the smallest priorities, a seeded hash of their
    title and content, so the sample is the same whatever the block size or the number of workers."""

    def __init__(self, size: int):
        self.size = size
        self._heap: list[tuple[int, int, SampledRecord]] = []  # (-priority, -line, record): the largest on top

    @property
    def threshold(self) -> int:
        """Only records with a priority at or below this can still enter the sample."""
        return -self._heap[0][0] if len(self._heap) >= self.size else _NO_THRESHOLD

    def offer(self, priority: int, line: int, record: SampledRecord) -> None:
        """Consider a record found at `line` of the file (its own line field may count from its block)."""
        entry = (-priority, -line, record)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        elif entry[0] > self._heap[0][0] or (entry[0] == self._heap[0][0] and entry[1] > self._heap[0][1]):
            heapq.heapreplace(self._heap, entry)

    def records(self) -> list[SampledRecord]:
        """The sample, smallest priority first: its first n records are a uniform sample of n."""
        return [SampledRecord(-line, *record[1:]) for _, line, record in sorted(self._heap, reverse=True)]


@dataclass
class Analysis:
    report: dict  # what data_analysis_report.json holds
    histograms: dict[str, LengthHistogram]  # "title_chars", "title_words", "content_chars", "content_words"
    token_lengths: dict[str, np.ndarray]  # "title", "content", "question_answer" (empty without a tokenizer)
    cloud_words: dict[str, list[tuple[str, int]]]  # per field, the reservoir's most frequent terms


class _Totals:
    """The blocks' statistics merged in file order."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.records = 0
        self.empty = {"title": 0, "content": 0, "both": 0}
        self.bad_log = BadInputLog(keep=cfg.data.examples_per_reason)
        self.lengths = {f"{name}_{unit}": LengthHistogram() for name in FIELDS for unit in LENGTH_UNITS}
        self.rule_counts = {name: Counter() for name, _ in CLEANING_RULES}
        self.rule_examples: list[list[dict]] = [[] for _ in CLEANING_RULES]
        self.text_issues = {issue: Counter() for issue in TEXT_ISSUES}
        self.drops = {reason: 0 for reason in FILTER_REASONS}
        self.drop_examples: dict[str, list[dict]] = {}
        self.survivors: dict[str, list[np.ndarray]] = {name: [] for name in Survivors.__dataclass_fields__}
        self.raw_keys: dict[str, list[np.ndarray]] = {"pairs": [], "titles": []}
        capacity = cfg.analysis.counter_capacity
        self.terms = {name: {"words": HeavyHitters(capacity), "bigrams": HeavyHitters(capacity)} for name in FIELDS}
        self.title_formats: Counter = Counter()
        self.language_editions: Counter = Counter()
        self.qualifiers = HeavyHitters(capacity)
        self.reservoir = Reservoir(cfg.analysis.reservoir_size)

    def add(self, stats: BlockStats, offset: int) -> None:
        """Merge one block; `offset` turns its line numbers into the file's."""
        self.records += stats.records
        for key, count in stats.empty.items():
            self.empty[key] += count
        self.bad_log.merge([bad._replace(line=bad.line + offset) for bad in stats.bad], stats.bad_counts)
        for name, histogram in stats.lengths.items():
            self.lengths[name].merge(histogram)
        for name, counts in stats.rule_counts.items():
            self.rule_counts[name].update(counts)
        for kept, examples in zip(self.rule_examples, stats.rule_examples):
            kept.extend({**example, "line": example["line"] + offset}
                        for example in examples[:EXAMPLES_PER_RULE - len(kept)])
        for issue, counts in stats.text_issues.items():
            self.text_issues[issue].update(counts)
        for reason, count in stats.drops.items():
            self.drops[reason] += count
        for reason, examples in stats.drop_examples.items():
            kept = self.drop_examples.setdefault(reason, [])
            room = self.cfg.data.examples_per_reason - len(kept)
            kept.extend({**example, "line": example["line"] + offset} for example in examples[:room])
        for name, values in stats.survivors.items():
            column = np.frombuffer(values, dtype=np.uint8 if name == "splits" else np.uint64)
            self.survivors[name].append(column + np.uint64(offset) if name == "lines" else column)
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

    def raw_duplicates(self) -> dict:
        """Exact duplicates and repeated titles among the records with both fields, before any cleaning."""
        pairs = np.concatenate(self.raw_keys["pairs"])
        distinct_pairs = len(np.unique(pairs))
        distinct_titles = len(np.unique(np.concatenate(self.raw_keys["titles"])))
        return {"records_with_both_fields": len(pairs), "distinct_pairs": distinct_pairs,
                "distinct_titles": distinct_titles, "exact_duplicates": len(pairs) - distinct_pairs,
                "duplicate_titles": distinct_pairs - distinct_titles}

    def funnel(self) -> tuple[dict, dict]:
        """prepare()'s step counts, from the preparation stage's own dedupe and sampling (select) run on the
        records that passed the filters; and the duplicates it dropped, with examples."""
        survivors = Survivors(**{name: np.concatenate(columns) for name, columns in self.survivors.items()})
        selected, steps, examples = select(survivors, self.cfg.data)
        split_counts = np.bincount(survivors.splits[selected], minlength=len(SPLITS))
        funnel = {"lines_with_data": self.records + self.bad_log.total, "bad_input": self.bad_log.total,
                  "records_parsed": self.records, **steps,
                  **{f"{split}_examples": int(count) for split, count in zip(SPLITS, split_counts)}}
        dropped = {"exact_duplicate": {"count": steps["after_filters"] - steps["after_exact_dedupe"],
                                       "examples": examples.get("exact_duplicate", [])},
                   "duplicate_title": {"count": steps["after_exact_dedupe"] - steps["after_title_dedupe"],
                                       "examples": examples.get("duplicate_title", [])}}
        return funnel, dropped


def training_lengths(records: list[SampledRecord], tokenizer, cfg) -> tuple[np.ndarray, str]:
    """Tokens of each kept record as the training stage encodes it, untruncated: the question in the training
    phrasing prepare picks for it, in the train.prompt_template (the chat template and train.system_prompt by
    default), then the description and EOS. Returns the lengths and the template used."""
    from product_qa.data.encoding import ExampleEncoder  # imports torch: only when tokens are counted

    template = resolve_template(tokenizer, cfg.train.prompt_template)
    encoder = ExampleEncoder(tokenizer, template=template, system_prompt=cfg.train.system_prompt,
                             max_length=sys.maxsize)
    examples = []
    for record in records:
        title_key, _ = dedupe_keys(record.clean_title, record.clean_content)
        examples.append(build_example(record.uid, record.clean_title, record.clean_content,
                                      pick_phrasing(TRAINING_PHRASINGS, title_key, cfg.data.seed)))
    lengths = np.array([e["length"] for e in encoder.encode(examples)], dtype=np.int64)
    return lengths, template


def count_tokens(tokenizer, texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros(0, dtype=np.int64)
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return np.array([len(ids) for ids in encoded], dtype=np.int64)


def too_long(record: SampledRecord, name: str, cfg) -> bool:
    """The field cleans past data.max_title_chars / max_content_chars: preparation drops the record for it."""
    return len(getattr(record, f"clean_{name}")) > getattr(cfg.data, f"max_{name}_chars")


def token_figures(sample: list[SampledRecord], tokenizer, cfg) -> tuple[dict[str, np.ndarray], dict, dict]:
    """Token lengths of the sample's raw titles and contents and of its kept records' training texts, the
    max_length that covers `analysis.max_length_coverage` of the latter (rounded up to a multiple of 8), and how
    many titles and contents were not tokenized: those that preparation drops as too long (one 50 MB description
    took gigabytes to tokenize)."""
    qa, template = training_lengths([record for record in sample if record.drop_reason is None], tokenizer, cfg)
    lengths, skipped = {}, {}
    for name in FIELDS:
        texts = [getattr(record, name) for record in sample if getattr(record, name)]
        counted = [getattr(record, name) for record in sample
                   if getattr(record, name) and not too_long(record, name, cfg)]
        lengths[name], skipped[name] = count_tokens(tokenizer, counted), len(texts) - len(counted)
    lengths["question_answer"] = qa
    coverage = cfg.analysis.max_length_coverage
    recommendation = {"coverage_target": coverage, "examples_measured": len(qa), "template": template,
                      "system_prompt": cfg.train.system_prompt if template == "chat" else None,
                      "train_max_length": cfg.train.max_length}
    if len(qa):
        at_coverage = int(np.quantile(qa, coverage, method="inverted_cdf"))
        recommended = -(-at_coverage // 8) * 8
        recommendation.update({"tokens_at_coverage": at_coverage, "recommended": recommended,
                               "coverage": round(float((qa <= recommended).mean()), 4),
                               "train_max_length_coverage": round(float((qa <= cfg.train.max_length).mean()), 4)})
    return lengths, recommendation, skipped


def _top(counter: HeavyHitters, k: int) -> list[list]:
    return [[key.decode("utf-8", "replace") if isinstance(key, bytes) else key, count]
            for key, count in counter.top(k)]


def cloud_terms(sample: list[SampledRecord], cfg) -> dict[str, list[tuple[str, int]]]:
    """The most frequent terms of the sample's cleaned titles and contents, for the word clouds."""
    clouds = {}
    for name in FIELDS:
        counter = HeavyHitters(cfg.analysis.counter_capacity)
        texts = [text for record in sample if (text := getattr(record, f"clean_{name}"))]
        for start in range(0, len(texts), _CLOUD_CHUNK):  # chunks: a token list of the whole sample is large
            counter.add(*count_terms(texts[start:start + _CLOUD_CHUNK], cfg.analysis.counter_capacity)[0]["words"])
        clouds[name] = [(word.decode("utf-8", "replace"), count) for word, count in counter.top(CLOUD_WORDS)]
    return clouds


def flag_counts(counts: Counter) -> dict[str, int]:
    return {key: counts[key] for key in ("records", *FIELDS)}


def _share(count: int, total: int) -> float:
    return round(count / total, 4) if total else 0.0


def analyse(cfg, *, progress: bool = True, tokenizer=None) -> Analysis:
    """Run the analysis of `cfg.data.raw_path` in one streamed pass. `tokenizer` defaults to the configured
    model's; with analysis.token_sample_size=0 no tokens are counted and no tokenizer is loaded."""
    source = describe_source(cfg.data.raw_path)
    started = time.perf_counter()
    reader = BlockReader(source, cfg.data.block_mb << 20)
    tasks = reader.ranges() if source.format == "jsonl" and not source.compressed else iter(reader)
    totals = _Totals(cfg)
    jobs = ((task, totals.reservoir.threshold) for task in tasks)  # drawn lazily: the threshold only falls
    next_line = 1
    with tqdm(total=source.size_bytes, unit="B", unit_scale=True, desc="analyse", disable=not progress) as bar:
        for stats in BlockRunner(analyse_block, cfg.data.workers, _init_worker, (cfg,)).map(jobs):
            totals.add(stats, next_line - 1)  # workers number lines from their block's start
            next_line += stats.line_count
            bar.update(reader.bytes_read - bar.n)
    if totals.records == 0:
        raise UserError(f"{source.path}: no valid records "
                        f"({totals.bad_log.total} bad lines: {', '.join(totals.bad_log.counts) or 'none'})")
    timings = {"streamed_pass": time.perf_counter() - started}

    t0 = time.perf_counter()
    funnel, duplicates_dropped = totals.funnel()
    raw_duplicates = totals.raw_duplicates()
    sample = totals.reservoir.records()
    token_sample = sample[:cfg.analysis.token_sample_size]
    token_lengths: dict[str, np.ndarray] = {}
    max_length: dict = {"coverage_target": cfg.analysis.max_length_coverage, "examples_measured": 0}
    too_long_skipped = {name: 0 for name in FIELDS}
    if token_sample:
        tokenizer = tokenizer or load_tokenizer(cfg.model.name, cfg.model.cache_dir, cfg.model.trust_remote_code)
        token_lengths, max_length, too_long_skipped = token_figures(token_sample, tokenizer, cfg)
    cloud_words = cloud_terms(sample, cfg)
    timings["dedupe_tokens_clouds"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started

    records = totals.records
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
    quality["bad_input_lines"] = {"records": totals.bad_log.total,
                                  "share": _share(totals.bad_log.total, funnel["lines_with_data"])}

    top_k = cfg.analysis.top_k
    tokens_note = (f"the raw fields of a reservoir sample of {len(token_sample):,} records, {cfg.model.name} "
                   "tokenizer, but for the titles and descriptions that preparation drops as too long "
                   f"({too_long_skipped['title']:,} and {too_long_skipped['content']:,})" if token_sample
                   else "not counted")
    report = {
        "input": dataclasses.asdict(source),
        "config": {"analysis": config_dict(cfg.analysis), "data": config_dict(cfg.data),
                   "model": config_dict(cfg.model)},
        "records": {"lines_with_data": funnel["lines_with_data"], "bad_input": totals.bad_log.total,
                    "records_parsed": records, "empty_title": totals.empty["title"],
                    "empty_content": totals.empty["content"], "both_empty": totals.empty["both"],
                    "both_fields": raw_duplicates["records_with_both_fields"]},
        "bad_input": totals.bad_log.as_dict(),
        "duplicates": raw_duplicates,
        "lengths": {
            **{name: {**{unit: totals.lengths[f"{name}_{unit}"].summary() for unit in LENGTH_UNITS},
                      "tokens": sample_summary(token_lengths.get(name, np.zeros(0, dtype=np.int64)))}
               for name in FIELDS},
            "question_answer": {"tokens": sample_summary(token_lengths.get("question_answer",
                                                                           np.zeros(0, dtype=np.int64)))},
        },
        "max_length": max_length,
        "quality": quality,
        "cleaning_rules": [{"rule": name, **flag_counts(totals.rule_counts[name]), "examples": examples}
                           for (name, _), examples in zip(CLEANING_RULES, totals.rule_examples)],
        "filters": [{"filter": reason, "dropped": totals.drops[reason],
                     "examples": totals.drop_examples.get(reason, [])[:EXAMPLES_PER_RULE]}
                    for reason in FILTER_REASONS],
        "duplicates_dropped": duplicates_dropped,
        "funnel": funnel,
        "top_terms": {name: {kind: {"top": _top(counter, top_k), "max_undercount": counter.error}
                             for kind, counter in kinds.items()} for name, kinds in totals.terms.items()},
        "title_patterns": {
            "formats": by_count(totals.title_formats),
            "language_editions": by_count(totals.language_editions),
            "qualifiers": {"top": _top(totals.qualifiers, top_k), "max_undercount": totals.qualifiers.error},
        },
        "methods": {
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
            "word_clouds": f"reservoir sample of {len(sample):,} records",
            "title_patterns": "exact counts; qualifiers by the heavy-hitter counter",
        },
        "sample_sizes": {"reservoir": len(sample), "tokens": len(token_sample),
                         "not_tokenized_too_long": too_long_skipped},
        "timings_s": {name: round(seconds, 3) for name, seconds in timings.items()},
    }
    return Analysis(report, totals.lengths, token_lengths, cloud_words)
