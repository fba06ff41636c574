"""Cleaning rules for titles and descriptions: each one a named function that keeps meaning.

Rules never strip accents or punctuation. Each rule has a cheap guard so clean text passes through fast.
`CLEANING_RULES` lists them in the order `clean_text` applies them; the analysis stage imports it to
report how many records each rule touches. `clean_record` says which records are cleaned.
"""
from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import DataConfig

_MAX_UNESCAPE_PASSES = 3


def decode_html_entities(text: str) -> str:
    """Decode every entity form: decimal `&#8217;`, hex `&#x2019;`, named `&mdash;`, Windows-1252 code
    points (`&#x92;` -> ’, via html.unescape's HTML5 table) and double-escaped `&amp;#8217;`."""
    for _ in range(_MAX_UNESCAPE_PASSES):
        if "&" not in text:
            break
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    return text


_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_BLOCK_TAG = re.compile(r"<(?:br|/?p|/?div|/?li|/?ul|/?ol|/?h[1-6]|/?tr)\b[^<>]*>", re.IGNORECASE)
_ANGLE = re.compile(r"[<>]")


def strip_html_tags(text: str) -> str:
    """Remove markup such as `<br>`, `<b>` and `<p class=x>`; block tags become a space so words don't merge.
    A lone `<` or `a < b > c` is not a tag and stays.

    Removing a tag can join the text around it into another (`<scr<b>ipt>`): the result holds no tag at all, as
    if the removal were repeated until none is left. One pass does it: each `>` closes the latest `<` still open
    when the text between them is a tag, and a `>` that closes none leaves every open `<` a plain character."""
    if "<" not in text:
        return text
    pieces: list[str] = []  # the result so far
    opens: list[int] = []  # where in `pieces` each `<` that may yet begin a tag is
    end = 0
    for angle in _ANGLE.finditer(text):
        pieces.append(text[end:angle.start()])
        end = angle.end()
        if angle.group() == "<":
            opens.append(len(pieces))
            pieces.append("<")
            continue
        candidate = "".join(pieces[opens[-1]:]) + ">" if opens else ">"
        block = _BLOCK_TAG.fullmatch(candidate) is not None
        if block or _TAG.fullmatch(candidate):
            del pieces[opens.pop():]
            pieces.append(" " if block else "")
        else:  # no tag spans a `>`: no `<` before this one can begin a tag any more
            opens.clear()
            pieces.append(">")
    pieces.append(text[end:])
    return "".join(pieces)


# C1 control characters that raw text sometimes carries where Windows-1252 punctuation was meant.
_C1_CHARS = re.compile("[\x80-\x9f]")


def _cp1252_char(match: re.Match) -> str:
    try:
        return bytes([ord(match.group())]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d have no character
        return ""


def repair_windows_1252(text: str) -> str:
    """Map raw C1 control characters (U+0080-U+009F) to the Windows-1252 characters they stand for
    (U+0092 -> ’, U+0097 -> —), as html.unescape already does for their entity forms."""
    if text.isascii() or not _C1_CHARS.search(text):
        return text
    return _C1_CHARS.sub(_cp1252_char, text)


# Control characters and the invisible format characters (Unicode category Cf) that change how text shows or
# compares but not what it says: soft hyphen, Arabic letter mark, Mongolian vowel separator, zero-width space,
# non-joiner, joiner, the bidi marks, embeddings, overrides and isolates (an RLO shows "Gadget \u202eexe.tfig" as
# "Gadget gift.exe"), word joiner and invisible operators, deprecated format characters, byte-order marks,
# interlinear annotation marks and tag characters (hidden ASCII). The Cf characters of one script's own layout
# stay (Arabic number signs, Egyptian hieroglyph and shorthand joiners, musical beams). Tab, newline and carriage
# return are whitespace, handled later.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
                      "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ufffe\uffff\U000e0000-\U000e007f]")


def remove_control_characters(text: str) -> str:
    """Drop control characters, soft hyphens, bidi controls, zero-width characters and stray byte-order marks:
    text shows as it is stored, and a title typed as it shows finds it."""
    if text.isprintable() or not _CONTROL.search(text):  # every character _CONTROL matches is unprintable
        return text
    return _CONTROL.sub("", text)


def normalize_unicode(text: str) -> str:
    """Compose characters (NFC) so `e` + combining acute and `é` compare equal. NFC, not NFKC: NFKC would
    turn `½` into `1⁄2` and `™` into `TM`."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFC", text)


# Amazon's note about which edition a review belongs to, often with its words run together:
# "--This text refers to thePaperbackedition.",
# "--This text refers to an out of print or unavailable edition of this title."
_EDITION_NOTE = re.compile(r"-{1,2}\s*This text refers to\b[^.]{0,80}?edition(?: of this title)?\.?", re.IGNORECASE)

# Trade-review copyright lines glued to the end of a review:
# "Copyright 1998 Reed Business Information, Inc.", "Copyright © Reed Business Information, a division of
# Reed Elsevier Inc. All rights reserved.", "© Copyright 2010. Library Journals LLC, a wholly owned subsidiary
# of Media Source, Inc. No redistribution permitted.", "(c) Copyright PWxyz, LLC. All rights reserved."
_COPYRIGHT_HOLDERS = ("Business Information", "Library Association", "Library Journals", "PWxyz", "Media Source",
                      "Booklist", "Kirkus")
# Possessive spaces (*+): the runs of optional spaces between optional parts could otherwise be split every way,
# cubic time on a "Copyright" followed by thousands of spaces (a 24 KB line took 35 s)
_COPYRIGHT_LINE = re.compile(
    r"(?:\(c\)\s*+|©\s*+)?Copyright\s*+(?:©|\(c\))?\s*+(?:\d{4}[.,]?\s*+)?"
    r"(?:Reed Business Information|Cahners Business Information|American Library Association|"
    r"Library Journals,? LLC|PWxyz|Media Source|Booklist|Kirkus)"
    r"(?:[^.]{0,120}?(?:Inc|LLC|Ltd)\.|\.)?"
    r"(?:\s*+All rights reserved\.?)?(?:\s*+No redistribution permitted\.?)?",
    re.IGNORECASE,
)


def remove_scraping_boilerplate(text: str) -> str:
    """Remove Amazon's edition notes and trade-review copyright lines, which say nothing about the product."""
    if "text refers" in text:
        text = _EDITION_NOTE.sub("", text)
    if "opyright" in text and any(name in text for name in _COPYRIGHT_HOLDERS):
        text = _COPYRIGHT_LINE.sub("", text)
    return text


# A sentence end glued to the next sentence: "in length.The tutu". Only after two lowercase letters and
# before a capital + lowercase letter, so "U.S.A", "Ph.D", "Dr.Seuss", "3.5" and ".NET" stay as they are;
# web addresses and file names are skipped in _space_after_sentence. A straight quote after the stop could
# open or close a quotation, so that case is left alone.
_GLUED_SENTENCE = re.compile(r"[.!?](?<=[a-z][a-z][.!?])[”’)]?(?=[A-Z][a-z])")  # stop first: fast scan


def _space_after_sentence(match: re.Match) -> str:
    text, start = match.string, match.start()
    word = text[text.rfind(" ", 0, start) + 1:start]
    if any(mark in word for mark in "./@:_") or word.lower().startswith("www"):
        return match.group()
    return match.group() + " "


def _every_stop_spaced(text: str) -> bool:
    """True when each '.', '!' and '?' is followed by a space or ends the text: nothing can be glued.
    str.count is a fast scan, so most texts skip the regex."""
    for stop in ".!?":
        count = text.count(stop)
        if count and count != text.count(stop + " ") + text.endswith(stop):
            return False
    return True


def fix_glued_sentences(text: str) -> str:
    """Put the missing space back between glued sentences (`length.The` -> `length. The`) where it is safe."""
    if _every_stop_spaced(text):
        return text
    return _GLUED_SENTENCE.sub(_space_after_sentence, text)


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace (double spaces, tabs, newlines, no-break spaces) into one space and trim."""
    if "  " not in text and text[:1] != " " and text[-1:] != " " and text.isprintable():
        return text  # isprintable is False for every whitespace character but the plain space
    return " ".join(text.split())


CleaningRule = Callable[[str], str]

CLEANING_RULES: tuple[tuple[str, CleaningRule], ...] = (
    ("decode_html_entities", decode_html_entities),
    ("strip_html_tags", strip_html_tags),
    ("repair_windows_1252", repair_windows_1252),
    ("remove_control_characters", remove_control_characters),
    ("normalize_unicode", normalize_unicode),
    ("remove_scraping_boilerplate", remove_scraping_boilerplate),
    ("fix_glued_sentences", fix_glued_sentences),
    ("normalize_whitespace", normalize_whitespace),
)


def clean_text(text: str) -> str:
    """Apply every cleaning rule in order."""
    for _, rule in CLEANING_RULES:
        text = rule(text)
    return text


# ----------------------------------------------------------------------------------------- over-long texts
# A text this long is cleaned whole only if its start does not already show it too long for the filters: one
# 50 MB description cost a gigabyte to clean (and gigabytes to tokenize) for a record that is dropped anyway.
LONG_TEXT_CHARS = 1 << 16
# What the rest of a text can take from its cleaned start, at most: a boilerplate line or an entity running
# over the seam, the seam's space. Cleaning is otherwise local to the start (see too_long_start).
_SEAM_MARGIN = 1024


def _open_tag_at_end(stripped: str) -> bool:
    """A `<` with no `>` after it in a text whose tags are stripped: a tag that the rest of the text may close,
    removing what lies between."""
    return stripped.rfind("<") > stripped.rfind(">")


def too_long_start(text: str, limit: int) -> str | None:
    """For a text of more than LONG_TEXT_CHARS (and more than twice `limit`): a start of it whose cleaning
    shows that the whole text cleans to more than `limit` characters, so that the too-long filter drops its
    record; else None (clean it whole).

    The start ends before a space. No entity spans a space, so the entities decode there as in the whole
    text; no tag does either once no `<` of the start is left open by strip_html_tags; the other rules change a
    character or a bounded stretch (a boilerplate line) at a time. The whole text thus cleans to at least the
    cleaned start, less _SEAM_MARGIN."""
    window = max(LONG_TEXT_CHARS, 2 * (limit + _SEAM_MARGIN))
    if len(text) <= window:
        return None
    cut = text.rfind(" ", 0, window)
    if cut < window // 2:  # no space near the window's end: clean it whole
        return None
    start = text[:cut]
    if _open_tag_at_end(strip_html_tags(decode_html_entities(start))):
        return None
    return start if len(clean_text(start)) > limit + _SEAM_MARGIN else None


def clean_text_within(text: str, limit: int) -> str:
    """clean_text(text), or, for a text that surely cleans to more than `limit` characters, its cleaned start
    (longer than `limit` too, and the same at its beginning): what the filters and their examples need of a
    text they drop as too long."""
    start = too_long_start(text, limit)
    return clean_text(text if start is None else start)


FieldCleaner = Callable[[str, str], str]  # (field name, raw text) -> cleaned text


def clean_record(title: str, content: str, clean: FieldCleaner) -> tuple[str, str]:
    """The (title, content) the filters judge: both cleaned by `clean`, or both raw when either is empty (the
    filters drop that record whatever the other field holds, so cleaning it would be wasted)."""
    if not title or not content:
        return title, content
    return clean("title", title), clean("content", content)


def within_limits(data: DataConfig) -> FieldCleaner:
    """clean_text_within each field up to its too-long filter (data.max_title_chars / max_content_chars)."""
    limits = {"title": data.max_title_chars, "content": data.max_content_chars}
    return lambda name, text: clean_text_within(text, limits[name])
