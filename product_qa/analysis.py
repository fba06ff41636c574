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
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from product_qa.cleaning import CLEANING_RULES
from product_qa.configurator import config_dict
from product_qa.errors import UserError
from product_qa.filtering import FILTER_REASONS, drop_reason
from product_qa.hashing import key_hash, mix64
from product_qa.modeling import load_tokenizer
from product_qa.parallel import BlockRunner
from product_qa.preparation import SPLITS, Survivors, dedupe_keys, select, split_code
from product_qa.prompts import TRAINING_PHRASINGS, build_example, pick_phrasing
from product_qa.reading import BadInputLog, BadLine, Block, BlockReader, ByteRange, describe_source, parse_block

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
TEXT_ISSUES = ("non_ascii", "non_english")  # found by analysis.py's own checks on each field

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
    el la los las del por para una que es se su al lo como más pero le les des une et est du au aux pour dans
    avec sur qui pas ce il elle sont cette der das und ist nicht ein eine mit von zu für auf dem sich auch wird
    ich della di che non è gli delle nel sono questo os da dos das em um uma não com ao seu sua
    """.split())

# Tokens: runs of ASCII letters and digits, lowercased, and of any non-ASCII bytes (accented and non-Latin
# letters); every other ASCII byte separates. bytes.translate + split is many times faster than a regex.
_TOKEN_TABLE = bytes(c + 32 if 65 <= c <= 90 else c if (97 <= c <= 122 or 48 <= c <= 57 or c >= 128) else 32
                     for c in range(256))
# Non-ASCII punctuation and symbols (’ “ — … « © °), blanked before tokenizing so they don't glue to words.
_UNICODE_PUNCTUATION = re.compile("[\u00a0-\u00bf\u00d7\u00f7\u2000-\u206f\u2100-\u2bff\u3000-\u303f]")
# Letters of scripts other than Latin: Greek, Cyrillic, Hebrew, Arabic, Indic, Thai, kana, CJK, Hangul.
_NON_LATIN_LETTER = re.compile("[\u0370-\u052f\u0590-\u06ff\u0900-\u0eff\u1100-\u11ff\u3040-\u30ff"
                               "\u3400-\u9fff\uac00-\ud7af]")
RECORD_BREAK = b"\n"  # between the tokens of two records, so no bigram spans them (split() never returns it)

# Product formats named in titles, counted once per title; "Audio CD" is tried before "CD".
TITLE_FORMATS = (("Paperback", r"paperback"), ("Hardcover", r"hard(?:cover|back)"), ("Mass Market", r"mass market(?: paperback)?"),
                 ("Board book", r"board ?book"), ("Kindle", r"kindle"), ("Audio CD", r"audio ?cd"),
                 ("Audiobook", r"audio ?book"), ("Cassette", r"cassette"), ("VHS", r"vhs"), ("DVD", r"dvd"),
                 ("Blu-ray", r"blu-?ray"), ("CD", r"cd"), ("Vinyl / LP", r"vinyl|lp"), ("Import", r"import"))
# Run on the lowercased title; ASCII lookarounds instead of \b and IGNORECASE: 2.5x faster.
_TITLE_FORMAT = re.compile(
    r"(?<![a-z0-9])(?:" + "|".join(f"(?P<f{i}>{pattern})" for i, (_, pattern) in enumerate(TITLE_FORMATS))
    + r")(?![a-z0-9])")
LANGUAGES = ("Spanish", "French", "German", "Italian", "Portuguese", "Japanese", "Chinese", "Russian", "Dutch",
             "Korean", "Arabic", "Hebrew", "Polish", "Swedish", "Greek", "Latin", "Turkish", "Hindi", "Catalan",
             "Danish", "Norwegian", "English")
_LANGUAGE_EDITION = re.compile(rf"\(({'|'.join(LANGUAGES)}) Edition\)", re.IGNORECASE)
_QUALIFIER = re.compile(r"[(\[][^()\[\]]{1,60}[)\]]")  # "(Spanish Edition)", "[VHS]", "(Penguin Classics)"


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


def word_tokens(text: str) -> list[bytes]:
    """Lowercased words of a text, as UTF-8 bytes."""
    if not text.isascii():
        text = _UNICODE_PUNCTUATION.sub(" ", text)
    return text.encode("utf-8", "surrogatepass").translate(_TOKEN_TABLE).split()


def is_term(token: bytes) -> bool:
    """A word worth counting: not a stopword, a single character or a number."""
    return len(token) > 1 and token not in STOPWORDS and not token.isdigit()


def count_terms(tokens: list[bytes], capacity: int) -> dict[str, tuple[dict, int]]:
    """Counts of the terms among `tokens` and of the bigrams of adjacent terms (stopwords removed, never across
    a RECORD_BREAK), each as (the `capacity` largest counts, the largest count left out). Works on integer ids
    with numpy: several times faster than counting tuples of words."""
    vocabulary = list(dict.fromkeys(tokens))
    if not vocabulary:
        return {"words": ({}, 0), "bigrams": ({}, 0)}
    index = {word: i for i, word in enumerate(vocabulary)}
    ids = np.fromiter(map(index.__getitem__, tokens), dtype=np.int64, count=len(tokens))
    term = np.fromiter(map(is_term, vocabulary), dtype=bool, count=len(vocabulary))
    word_counts = np.bincount(ids, minlength=len(vocabulary))
    term_ids = np.flatnonzero(term)
    words = keep_largest([vocabulary[i] for i in term_ids], word_counts[term_ids], capacity)
    left, right = ids[:-1], ids[1:]
    both_terms = term[left] & term[right]
    size = len(vocabulary)
    codes, pair_counts = np.unique(left[both_terms] * size + right[both_terms], return_counts=True)
    kept, left_out = keep_largest(codes.tolist(), pair_counts, capacity)
    bigrams = {vocabulary[code // size] + b" " + vocabulary[code % size]: count for code, count in kept.items()}
    return {"words": words, "bigrams": (bigrams, left_out)}


def looks_non_english(text: str, tokens: list[bytes]) -> bool:
    """A cheap language guess: more function words of Spanish, French, German, Italian or Portuguese than of
    English among the first tokens (at least two), or mostly letters of non-Latin scripts."""
    head = tokens[:_LANGUAGE_HEAD]
    foreign = sum(map(FOREIGN_MARKERS.__contains__, head))
    if foreign >= 2 and foreign > sum(map(ENGLISH_MARKERS.__contains__, head)):
        return True
    return not text.isascii() and 3 * len(_NON_LATIN_LETTER.findall(text)) > len(text)


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
    title: str  # raw
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
    # Per cleaning rule (in CLEANING_RULES order): records, titles and contents it changed, first examples.
    rule_counts: dict[str, list[int]] = field(
        default_factory=lambda: {key: [0] * len(CLEANING_RULES) for key in ("records", "title", "content")})
    rule_examples: list[list[dict]] = field(default_factory=lambda: [[] for _ in CLEANING_RULES])
    text_issues: dict[str, dict[str, int]] = field(
        default_factory=lambda: {issue: {"records": 0, "title": 0, "content": 0} for issue in TEXT_ISSUES})
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
    """One field (title or content) of the records of a block: lengths, cleaning trace, word tokens."""

    def __init__(self, name: str, stats: BlockStats):
        self.name = name
        self.rule_examples = stats.rule_examples
        self.chars, self.words = array("I"), array("I")
        self.tokens: list[bytes] = []

    def add(self, text: str, line: int) -> tuple[str, int, int]:
        """Measure and clean a non-empty text. Returns it cleaned (the rules applied one by one, as clean_text
        does), a bit mask of the rules that changed it, and a bit mask of its TEXT_ISSUES."""
        self.chars.append(len(text))
        self.words.append(len(text.split()))
        cleaned, changed = text, 0
        for bit, (_, rule) in enumerate(CLEANING_RULES):
            result = rule(cleaned)
            if result != cleaned:
                changed |= 1 << bit
                if len(self.rule_examples[bit]) < EXAMPLES_PER_RULE:
                    self.rule_examples[bit].append(change_example(line, self.name, cleaned, result))
                cleaned = result
        words = word_tokens(cleaned)
        self.tokens += words
        self.tokens.append(RECORD_BREAK)
        return cleaned, changed, (not text.isascii()) | looks_non_english(cleaned, words) << 1


def analyse_block(index: int, job: tuple[Block | ByteRange, int]) -> BlockStats:
    """Everything the analysis learns from one block of lines (runs in a worker process). Records whose
    reservoir priority is at or below `threshold` (the main process's current cut-off) are sent back whole."""
    task, threshold = job
    cfg = _worker_cfg
    block = task.load() if isinstance(task, ByteRange) else task._replace(first_line=1)
    stats = BlockStats(line_count=block.line_count)
    titles, contents = _FieldPass("title", stats), _FieldPass("content", stats)
    outcomes: Counter = Counter()  # (title rules, content rules, title issues, content issues) -> records
    qualifiers: Counter = Counter()
    seed_mix = mix64(cfg.analysis.seed)
    survivors = stats.survivors
    for item in parse_block(block):
        if isinstance(item, BadLine):
            count = stats.bad_counts.get(item.reason, 0)
            if count < cfg.data.examples_per_reason:
                stats.bad.append(item)
            stats.bad_counts[item.reason] = count + 1
            continue
        stats.records += 1
        title, content = item.title, item.content
        clean_title, title_rules, title_issues = titles.add(title, item.line) if title else (title, 0, 0)
        clean_content, content_rules, content_issues = (contents.add(content, item.line) if content
                                                        else (content, 0, 0))
        outcomes[title_rules, content_rules, title_issues, content_issues] += 1
        if title:
            stats.title_formats.update({match.lastgroup for match in _TITLE_FORMAT.finditer(title.lower())})
            if "(" in title or "[" in title:
                qualifiers.update(_QUALIFIER.findall(title))
                stats.language_editions.update(m.group(1).title() for m in _LANGUAGE_EDITION.finditer(title))
        pair_key = key_hash(f"{title}\x00{content}")
        if title and content:
            stats.raw_pair_keys.append(pair_key)
            stats.raw_title_keys.append(key_hash(title))
            filtered_title, filtered_content = clean_title, clean_content
        else:
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
        priority = mix64(pair_key ^ seed_mix)
        if priority <= threshold:
            stats.candidates.append((priority, SampledRecord(item.line, item.uid, title, content, clean_title,
                                                             clean_content, reason)))
    _count_outcomes(outcomes, stats)
    stats.lengths = {f"{part.name}_{unit}": LengthHistogram.of(getattr(part, unit))
                     for part in (titles, contents) for unit in LENGTH_UNITS}
    stats.terms = {part.name: count_terms(part.tokens, cfg.analysis.counter_capacity) for part in (titles, contents)}
    stats.qualifiers = keep_largest(list(qualifiers), np.fromiter(qualifiers.values(), np.int64, len(qualifiers)),
                                    cfg.analysis.counter_capacity)
    stats.title_formats = Counter({TITLE_FORMATS[int(group[1:])][0]: count
                                   for group, count in stats.title_formats.items()})
    return stats


def _count_outcomes(outcomes: Counter, stats: BlockStats) -> None:
    """Per cleaning rule and text issue, the records, titles and contents that have it."""
    for (title_rules, content_rules, title_issues, content_issues), records in outcomes.items():
        for bit in range(len(CLEANING_RULES)):
            in_title, in_content = title_rules >> bit & 1, content_rules >> bit & 1
            stats.rule_counts["title"][bit] += in_title * records
            stats.rule_counts["content"][bit] += in_content * records
            stats.rule_counts["records"][bit] += (in_title | in_content) * records
        for bit, issue in enumerate(TEXT_ISSUES):
            in_title, in_content = title_issues >> bit & 1, content_issues >> bit & 1
            counts = stats.text_issues[issue]
            counts["title"] += in_title * records
            counts["content"] += in_content * records
            counts["records"] += (in_title | in_content) * records


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

    def offer(self, priority: int, record: SampledRecord) -> None:
        entry = (-priority, -record.line, record)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def records(self) -> list[SampledRecord]:
        """The sample, smallest priority first: its first n records are a uniform sample of n."""
        return [record for _, _, record in sorted(self._heap, key=lambda entry: (-entry[0], -entry[1]))]


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
        self.rule_counts = {key: np.zeros(len(CLEANING_RULES), dtype=np.int64) for key in ("records", *FIELDS)}
        self.rule_examples: list[list[dict]] = [[] for _ in CLEANING_RULES]
        self.text_issues = {issue: {"records": 0, "title": 0, "content": 0} for issue in TEXT_ISSUES}
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
        for key, counts in stats.rule_counts.items():
            self.rule_counts[key] += counts
        for kept, examples in zip(self.rule_examples, stats.rule_examples):
            kept.extend({**example, "line": example["line"] + offset}
                        for example in examples[:EXAMPLES_PER_RULE - len(kept)])
        for issue, counts in stats.text_issues.items():
            for key, count in counts.items():
                self.text_issues[issue][key] += count
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
            self.reservoir.offer(priority, record._replace(line=record.line + offset))

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


def _validate(cfg) -> None:
    if cfg.reservoir_size < 1:
        raise UserError(f"analysis.reservoir_size must be at least 1, got {cfg.reservoir_size}")
    if cfg.token_sample_size < 0:
        raise UserError(f"analysis.token_sample_size must be 0 (no token counts) or more, got {cfg.token_sample_size}")
    if cfg.top_k < 1 or cfg.counter_capacity < cfg.top_k:
        raise UserError(f"analysis.top_k must be at least 1 and at most analysis.counter_capacity, got "
                        f"top_k={cfg.top_k}, counter_capacity={cfg.counter_capacity}")
    if not 0 < cfg.max_length_coverage <= 1:
        raise UserError(f"analysis.max_length_coverage must be in (0, 1], got {cfg.max_length_coverage}")


def training_text(record: SampledRecord, tokenizer, seed: int) -> str:
    """A kept record as the training stage will see it: its question in the training phrasing prepare picks
    for it, and its description as the answer, rendered with the chat template when the tokenizer has one."""
    title_key, _ = dedupe_keys(record.clean_title, record.clean_content)
    example = build_example(record.uid, record.clean_title, record.clean_content,
                            pick_phrasing(TRAINING_PHRASINGS, title_key, seed))
    if tokenizer.chat_template:
        messages = [{"role": "user", "content": example["question"]},
                    {"role": "assistant", "content": example["answer"]}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return f"{example['question']}\n{example['answer']}{tokenizer.eos_token}"


def count_tokens(tokenizer, texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros(0, dtype=np.int64)
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return np.array([len(ids) for ids in encoded], dtype=np.int64)


def token_figures(sample: list[SampledRecord], tokenizer, cfg) -> tuple[dict[str, np.ndarray], dict]:
    """Token lengths of the sample's raw titles and contents and of its kept records' training texts, and the
    max_length that covers `analysis.max_length_coverage` of the latter (rounded up to a multiple of 8)."""
    kept = [record for record in sample if record.drop_reason is None]
    lengths = {"title": count_tokens(tokenizer, [record.title for record in sample if record.title]),
               "content": count_tokens(tokenizer, [record.content for record in sample if record.content]),
               "question_answer": count_tokens(tokenizer, [training_text(record, tokenizer, cfg.data.seed)
                                                           for record in kept])}
    qa = lengths["question_answer"]
    coverage = cfg.analysis.max_length_coverage
    recommendation = {"coverage_target": coverage, "examples_measured": len(qa),
                      "chat_template": bool(tokenizer.chat_template)}
    if len(qa):
        at_coverage = int(np.quantile(qa, coverage, method="inverted_cdf"))
        recommended = -(-at_coverage // 8) * 8
        recommendation.update({"tokens_at_coverage": at_coverage, "recommended": recommended,
                               "coverage": round(float((qa <= recommended).mean()), 4)})
    return lengths, recommendation


def _top(counter: HeavyHitters, k: int) -> list[list]:
    return [[key.decode("utf-8", "replace") if isinstance(key, bytes) else key, count]
            for key, count in counter.top(k)]


def cloud_terms(sample: list[SampledRecord], cfg) -> dict[str, list[tuple[str, int]]]:
    """The most frequent terms of the sample's cleaned titles and contents, for the word clouds."""
    clouds = {}
    for name in FIELDS:
        counter = HeavyHitters(cfg.analysis.counter_capacity)
        for start in range(0, len(sample), _CLOUD_CHUNK):  # chunks: a token list of the whole sample is large
            tokens: list[bytes] = []
            for record in sample[start:start + _CLOUD_CHUNK]:
                if text := getattr(record, f"clean_{name}"):
                    tokens += word_tokens(text)
            counter.add(*count_terms(tokens, cfg.analysis.counter_capacity)["words"])
        clouds[name] = [(word.decode("utf-8", "replace"), count) for word, count in counter.top(CLOUD_WORDS)]
    return clouds


def _share(count: int, total: int) -> float:
    return round(count / total, 4) if total else 0.0


def analyse(cfg, *, progress: bool = True, tokenizer=None) -> Analysis:
    """Run the analysis of `cfg.data.raw_path` in one streamed pass. `tokenizer` defaults to the configured
    model's; with analysis.token_sample_size=0 no tokens are counted and no tokenizer is loaded."""
    _validate(cfg.analysis)
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
    if token_sample:
        tokenizer = tokenizer or load_tokenizer(cfg.model.name, cfg.model.cache_dir, cfg.model.trust_remote_code)
        token_lengths, max_length = token_figures(token_sample, tokenizer, cfg)
    cloud_words = cloud_terms(sample, cfg)
    timings["dedupe_tokens_clouds"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started

    records = totals.records
    rule_names = [name for name, _ in CLEANING_RULES]
    quality = {
        "empty_title": {"records": totals.empty["title"]},
        "empty_content": {"records": totals.empty["content"]},
        **{issue: {"records": int(totals.rule_counts["records"][rule_names.index(rule)]),
                   **{name: int(totals.rule_counts[name][rule_names.index(rule)]) for name in FIELDS}}
           for issue, rule in RULE_ISSUES.items()},
        **totals.text_issues,
        "exact_duplicates": {"records": raw_duplicates["exact_duplicates"]},
        "duplicate_titles": {"records": raw_duplicates["duplicate_titles"]},
    }
    for counts in quality.values():
        counts["share"] = _share(counts["records"], records)
    quality["bad_input_lines"] = {"records": totals.bad_log.total,
                                  "share": _share(totals.bad_log.total, funnel["lines_with_data"])}

    top_k = cfg.analysis.top_k
    tokens_note = (f"reservoir sample of {len(token_sample):,} records" if token_sample else "not counted")
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
        "cleaning_rules": [{"rule": name, "records": int(totals.rule_counts["records"][i]),
                            **{field_name: int(totals.rule_counts[field_name][i]) for field_name in FIELDS},
                            "examples": totals.rule_examples[i]} for i, name in enumerate(rule_names)],
        "filters": [{"filter": reason, "dropped": totals.drops[reason],
                     "examples": totals.drop_examples.get(reason, [])[:EXAMPLES_PER_RULE]}
                    for reason in FILTER_REASONS],
        "duplicates_dropped": duplicates_dropped,
        "funnel": funnel,
        "top_terms": {name: {kind: {"top": _top(counter, top_k), "max_undercount": counter.error}
                             for kind, counter in kinds.items()} for name, kinds in totals.terms.items()},
        "title_patterns": {
            "formats": dict(totals.title_formats.most_common()),
            "language_editions": dict(totals.language_editions.most_common()),
            "qualifiers": {"top": _top(totals.qualifiers, top_k), "max_undercount": totals.qualifiers.error},
        },
        "methods": {
            "counts": "exact, streamed over every line",
            "lengths_in_chars_and_words": "fixed histogram (one bin per integer up to 111, then 1%-wide "
                                          "log-spaced bins): quantiles exact up to 111 and at most 1% low above; "
                                          "count, min, mean and max exact",
            "lengths_in_tokens": f"{tokens_note} ({cfg.model.name} tokenizer)",
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
        "sample_sizes": {"reservoir": len(sample), "tokens": len(token_sample)},
        "timings_s": {name: round(seconds, 3) for name, seconds in timings.items()},
    }
    return Analysis(report, totals.lengths, token_lengths, cloud_words)
