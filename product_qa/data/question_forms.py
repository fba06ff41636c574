"""Questions as people type them: the forms a product's title takes in a question besides its exact spelling.

The retrieval's acceptance rule is calibrated on them (validation split), the evaluation asks every set in them,
and benchmarks/bench_catalog.py measures the full-size index with them. Each form is a function of the title and
a seeded hash, so the same product and seed always give the same question; a form that does not apply to a title
(no qualifier to drop, too few words to shorten) gives None.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from product_qa.data.prompts import HELD_OUT_PHRASINGS
from product_qa.hashing import mix64

_ASKED_EN = next(p for p in HELD_OUT_PHRASINGS if p.id == "what_know")
_ASKED_PT = next(p for p in HELD_OUT_PHRASINGS if p.language == "pt")
# a trailing format or edition in brackets, "(DVD)", "[Paperback]", "(Spanish Edition)"; a subtitle after ": " or " - "
_QUALIFIER = re.compile(r"\s*[(\[][^()\[\]]*[)\]]\s*$")
_SUBTITLE = re.compile(r"\s*(?::|\s-\s|\s–\s).*$")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
SHORT_WORDS = 3  # the first_words form keeps this many words of the title


def dropped_qualifiers(title: str) -> str | None:
    """The title without its trailing bracketed qualifiers and its subtitle; None where nothing is dropped."""
    short = title
    while (cut := _QUALIFIER.sub("", short)) != short and cut:
        short = cut
    short = _SUBTITLE.sub("", short) or short
    return short if short != title and short.strip() else None


def one_typo(title: str, key: int) -> str | None:
    """The title with one letter of one of its longer words changed (dropped, doubled, swapped with the next or
    replaced), chosen by `key`; None for a title without a word of 5 letters or more."""
    spans = [m.span() for m in re.finditer(r"[A-Za-z]{5,}", title)]
    if not spans:
        return None
    start, end = spans[key % len(spans)]
    at = start + 1 + (key >> 8) % (end - start - 2)  # never the first letter: people rarely miss that one
    kind = (key >> 16) % 4
    if kind == 0:
        return title[:at] + title[at + 1:]
    if kind == 1:
        return title[:at] + title[at] + title[at:]
    if kind == 2:
        return title[:at] + title[at + 1] + title[at] + title[at + 2:]
    letter = _LETTERS[(key >> 24) % 26]
    if letter == title[at].lower():
        letter = _LETTERS[(_LETTERS.index(letter) + 1) % 26]
    return title[:at] + letter + title[at + 1:]


def first_words(title: str) -> str | None:
    """The title's first SHORT_WORDS words; None for a title that has no more."""
    parts = title.split()
    return " ".join(parts[:SHORT_WORDS]) if len(parts) > SHORT_WORDS else None


FORMS: dict[str, Callable[[str, int], str | None]] = {
    "exact": lambda title, key: _ASKED_EN.question(title),
    "lowercase": lambda title, key: _ASKED_EN.question(title.lower()),
    "no_qualifier": lambda title, key: (short := dropped_qualifiers(title)) and _ASKED_EN.question(short),
    "typo": lambda title, key: (typed := one_typo(title, key)) and _ASKED_EN.question(typed),
    "first_words": lambda title, key: (short := first_words(title)) and _ASKED_EN.question(short),
    "portuguese": lambda title, key: _ASKED_PT.question(title),
    "wrapped": lambda title, key: f"Hi! A friend recommended {title} to me. Could you tell me more about it, please?",
}

FULL_TITLE_FORMS = ("exact", "lowercase", "typo", "portuguese", "wrapped")  # the forms that name the whole title
NAMED_FORMS = (*FULL_TITLE_FORMS, "no_qualifier")  # the title or its short form: the index accepts these
# only the title's beginning: it may name a product the index lacks ("Home Island" beside "Home Island by The
# Kingdoms [Audio CD]"), so the answer names the closest titles instead of describing one
PARTIAL_FORMS = ("first_words",)


def question_forms(title: str, product_hash: int, seed: int) -> dict[str, str]:
    """Every form that applies to `title`: form name -> question."""
    key = mix64(product_hash ^ mix64(seed))
    asked = {name: form(title, key) for name, form in FORMS.items()}
    return {name: question for name, question in asked.items() if question}
