"""Filters that drop unusable records, and the normalized title that dedupe and the split group products by.

Each filter is a named predicate over the cleaned (title, content); `FILTERS` lists them in the order they
are tried, so a record is counted under the first reason that drops it. The analysis stage imports these, and
PRODUCT_FORMATS, the names of product formats.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from config import DataConfig


class ProductFormat(NamedTuple):
    label: str  # as the analysis report names it
    in_titles: str  # how titles spell it (regex): the analysis counts the titles naming it
    qualifier: str | None  # how a bracketed qualifier that normalize_title ignores spells it
    placeholder: str | None  # a description that only says this is a placeholder


# Product formats: the one list of their names. Each use keeps its own spellings: widening one would change which
# titles count as the same product, or which descriptions are dropped. "Audio CD" comes before "CD" so that a
# title naming it counts once.
PRODUCT_FORMATS: tuple[ProductFormat, ...] = (
    ProductFormat("Paperback", r"paperback", r"paperback", r"paperback"),
    ProductFormat("Hardcover", r"hard(?:cover|back)", r"hardcover|hardback", r"hardcover"),
    ProductFormat("Mass Market", r"mass market(?: paperback)?", r"mass market", r"mass market paperback"),
    ProductFormat("Board book", r"board ?book", r"board book", None),
    ProductFormat("Kindle", r"kindle", r"kindle", r"kindle edition"),
    ProductFormat("Audio CD", r"audio ?cd", r"audio ?cd", r"audio cd"),
    ProductFormat("Audiobook", r"audio ?book", r"audiobook", None),
    ProductFormat("Cassette", r"cassette", r"cassette", r"cassette|audio cassette"),
    ProductFormat("VHS", r"vhs", r"vhs", r"vhs|vhs tape"),
    ProductFormat("DVD", r"dvd", r"dvd", r"dvd"),
    ProductFormat("Blu-ray", r"blu-?ray", r"blu-?ray", r"blu-ray"),
    ProductFormat("CD", r"cd", r"cd", r"cd"),
    ProductFormat("Vinyl / LP", r"vinyl|lp", None, None),
    ProductFormat("Import", r"import", r"import", None),
)


def _spellings(use: str) -> str:
    return "|".join(spelling for fmt in PRODUCT_FORMATS if (spelling := getattr(fmt, use)) is not None)


# Placeholder descriptions that say nothing about the product.
_DEGENERATE_CONTENT = re.compile(
    rf"(?:book by|by|{_spellings('placeholder')}|n/?a|none|no description|description|product description|"
    r"text: [a-z ,()]+(?:original language: ?[a-z]+)?)\W*",
    re.IGNORECASE,
)


def is_degenerate_content(content: str) -> bool:
    return _DEGENERATE_CONTENT.fullmatch(content.strip()) is not None


def _comparable(text: str) -> str:
    return re.sub(r"\W+", " ", text.casefold()).strip()


def content_equals_title(title: str, content: str) -> bool:
    """The description only repeats the title, ignoring case and punctuation."""
    if abs(len(content) - len(title)) > len(title) // 2 + 10:  # cheap reject: lengths far apart
        return False
    return _comparable(title) == _comparable(content)


Filter = Callable[[str, str, "DataConfig"], bool]

FILTERS: tuple[tuple[str, Filter], ...] = (
    ("empty_title", lambda title, content, data: names_nothing(title)),
    ("empty_content", lambda title, content, data: not content),
    ("title_too_short", lambda title, content, data: len(title) < data.min_title_chars),
    ("title_too_long", lambda title, content, data: len(title) > data.max_title_chars),
    ("content_equals_title", lambda title, content, data: data.drop_content_equal_title
        and content_equals_title(title, content)),
    ("degenerate_content", lambda title, content, data: data.drop_degenerate_content
        and is_degenerate_content(content)),
    ("content_too_short", lambda title, content, data: len(content) < data.min_content_chars),
    ("content_too_long", lambda title, content, data: len(content) > data.max_content_chars),
)
FILTER_REASONS = tuple(name for name, _ in FILTERS)


def drop_reason(title: str, content: str, data: DataConfig) -> str | None:
    """The first filter that drops this cleaned record, or None to keep it."""
    for name, rejects in FILTERS:
        if rejects(title, content, data):
            return name
    return None


# Parenthesized or bracketed qualifiers that name a format or edition rather than a different product:
# "(Paperback)", "[VHS]", "(Spanish Edition)", "(2nd Revised edition)".
_FORMAT_QUALIFIER = re.compile(
    rf"[(\[][^()\[\]]*\b(?:edition|ed\.|{_spellings('qualifier')}|unabridged|abridged|boxed set|library binding|"
    r"large print|spiral-bound|widescreen|full ?screen)\b[^()\[\]]*[)\]]",
    re.IGNORECASE,
)


_WORD_CHARACTER = re.compile(r"\w")


def names_nothing(title: str) -> bool:
    """An empty title, or one with nothing to tell its product by ("...", "!!!"): its normalize_title key is
    empty, which would make every such title one product."""
    return _WORD_CHARACTER.search(title) is None and not normalize_title(title)  # the search: a fast "no"


def normalize_title(title: str) -> str:
    """The key that groups a product with its near-identical titles: format and edition qualifiers removed,
    case, accents, punctuation and spacing ignored. Used for dedupe and for the train/validation/test split."""
    key = _FORMAT_QUALIFIER.sub(" ", title) if "(" in title or "[" in title else title
    key = key.casefold()
    if not key.isascii():
        key = "".join(ch for ch in unicodedata.normalize("NFKD", key) if not unicodedata.combining(ch))
    key = _comparable(key)
    return key or _comparable(title)
