"""Filters that drop unusable records, and the normalized title that dedupe and the split group products by.

Each filter is a named predicate over the cleaned (title, content); `FILTERS` lists them in the order they
are tried, so a record is counted under the first reason that drops it. The analysis stage imports these.
"""
from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from config import DataConfig

# Placeholder descriptions that say nothing about the product.
_DEGENERATE_CONTENT = re.compile(
    r"(?:book by|by|vhs|vhs tape|dvd|audio cd|cd|cassette|audio cassette|paperback|hardcover|kindle edition|"
    r"blu-ray|mass market paperback|n/?a|none|no description|description|product description|"
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
    ("empty_title", lambda title, content, cfg: not title),
    ("empty_content", lambda title, content, cfg: not content),
    ("title_too_short", lambda title, content, cfg: len(title) < cfg.min_title_chars),
    ("title_too_long", lambda title, content, cfg: len(title) > cfg.max_title_chars),
    ("content_equals_title", lambda title, content, cfg: cfg.drop_content_equal_title
        and content_equals_title(title, content)),
    ("degenerate_content", lambda title, content, cfg: cfg.drop_degenerate_content
        and is_degenerate_content(content)),
    ("content_too_short", lambda title, content, cfg: len(content) < cfg.min_content_chars),
    ("content_too_long", lambda title, content, cfg: len(content) > cfg.max_content_chars),
)
FILTER_REASONS = tuple(name for name, _ in FILTERS)


def drop_reason(title: str, content: str, cfg: "DataConfig") -> str | None:
    """The first filter that drops this cleaned record, or None to keep it."""
    for name, rejects in FILTERS:
        if rejects(title, content, cfg):
            return name
    return None


# Parenthesized or bracketed qualifiers that name a format or edition rather than a different product:
# "(Paperback)", "[VHS]", "(Spanish Edition)", "(2nd Revised edition)".
_FORMAT_QUALIFIER = re.compile(
    r"[(\[][^()\[\]]*\b(?:edition|ed\.|paperback|hardcover|hardback|mass market|kindle|vhs|dvd|blu-?ray|"
    r"audio ?cd|cd|cassette|audiobook|unabridged|abridged|import|boxed set|board book|library binding|"
    r"large print|spiral-bound|widescreen|full ?screen)\b[^()\[\]]*[)\]]",
    re.IGNORECASE,
)


def normalize_title(title: str) -> str:
    """The key that groups a product with its near-identical titles: format and edition qualifiers removed,
    case, accents, punctuation and spacing ignored. Used for dedupe and for the train/validation/test split."""
    key = _FORMAT_QUALIFIER.sub(" ", title) if "(" in title or "[" in title else title
    key = key.casefold()
    if not key.isascii():
        key = "".join(ch for ch in unicodedata.normalize("NFKD", key) if not unicodedata.combining(ch))
    key = _comparable(key)
    return key or _comparable(title)
