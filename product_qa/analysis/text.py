"""Words in product texts: tokenizing, word counts, terms and bigrams, a language guess, and the formats,
language editions and bracketed qualifiers that titles name. Works on bytes and numpy arrays: a block's texts
are tokenized at once.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from product_qa.analysis.sketches import keep_largest
from product_qa.data.cleaning import LONG_TEXT_CHARS
from product_qa.data.filtering import PRODUCT_FORMATS

_LANGUAGE_HEAD = 60  # tokens of a text the language guess looks at

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

# The lookahead on the letters a format can start with lets the regex engine skip most positions fast, and
# ASCII lookarounds are cheaper than \b: 4x faster than the plain alternation.
_FORMAT_INITIALS = "".join(sorted({part[0] for fmt in PRODUCT_FORMATS for part in fmt.in_titles.split("|")}))
_TITLE_FORMAT = re.compile(
    rf"(?=[{_FORMAT_INITIALS}{_FORMAT_INITIALS.upper()}])(?<![A-Za-z0-9])(?:"
    + "|".join(f"(?P<f{i}>{fmt.in_titles})" for i, fmt in enumerate(PRODUCT_FORMATS)) + r")(?![A-Za-z0-9])",
    re.IGNORECASE)
LANGUAGES = ("Spanish", "French", "German", "Italian", "Portuguese", "Japanese", "Chinese", "Russian", "Dutch",
             "Korean", "Arabic", "Hebrew", "Polish", "Swedish", "Greek", "Latin", "Turkish", "Hindi", "Catalan",
             "Danish", "Norwegian", "English")
_LANGUAGE_EDITION = re.compile(rf"\(({'|'.join(LANGUAGES)}) Edition\)", re.IGNORECASE)
_QUALIFIER = re.compile(r"[(\[][^()\[\]\n]{1,60}[)\]]")  # "(Spanish Edition)", "[VHS]", "(Penguin Classics)"


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


def titles_with(pattern: re.Pattern, titles: str, ends: np.ndarray, key: Callable[[re.Match], str]) -> Counter:
    """How many of the newline-joined `titles` (`ends`: the offset past each) hold a match, per `key(match)`."""
    matches = [(match.start(), key(match)) for match in pattern.finditer(titles)]
    where = np.searchsorted(ends, [start for start, _ in matches], side="right").tolist()
    return Counter(name for _, name in set(zip(where, (name for _, name in matches), strict=True)))


class TitlePatterns(NamedTuple):
    formats: Counter  # titles naming each product format (PRODUCT_FORMATS labels)
    language_editions: Counter  # titles marking a language edition, per language
    qualifiers: tuple[dict, int]  # bracketed qualifiers: the most frequent, and the largest count left out


def title_patterns(titles: list[str], capacity: int) -> TitlePatterns:
    """How many titles name each format, language edition and bracketed qualifier (one regex pass each)."""
    joined = "\n".join(titles)
    ends = np.cumsum(np.fromiter(map(len, titles), dtype=np.int64, count=len(titles)) + 1)
    formats = Counter({PRODUCT_FORMATS[int(group[1:])].label: count for group, count in
                       titles_with(_TITLE_FORMAT, joined, ends, lambda m: m.lastgroup).items()})
    editions = titles_with(_LANGUAGE_EDITION, joined, ends, lambda m: m.group(1).title())
    qualifiers = titles_with(_QUALIFIER, joined, ends, lambda m: m.group())
    counts = np.fromiter(qualifiers.values(), np.int64, len(qualifiers))
    return TitlePatterns(formats, editions, keep_largest(list(qualifiers), counts, capacity))
