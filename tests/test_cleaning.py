"""Each cleaning rule on real-looking catalog text, and the whole pipeline on the genuine records."""
import json
import re
from pathlib import Path

import pytest

from product_qa.data.cleaning import (
    CLEANING_RULES,
    LONG_TEXT_CHARS,
    clean_text,
    clean_text_within,
    decode_html_entities,
    fix_glued_sentences,
    normalize_unicode,
    normalize_whitespace,
    remove_control_characters,
    remove_scraping_boilerplate,
    repair_windows_1252,
    strip_html_tags,
    too_long_start,
)

REAL_RECORDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_trn_dev.jsonl"


@pytest.mark.parametrize("raw, expected", [
    ("Judith Kerr&#8217;s best&#8211;selling cat", "Judith Kerr’s best–selling cat"),  # decimal
    ("&#x201C;A delight&#x2026;&#x201D;", "“A delight…”"),  # hex, upper and lower case
    ("HMS &quot;Ulysses&quot; &mdash; a novel &amp; more", "HMS \"Ulysses\" — a novel & more"),  # named
    ("It&#x92;s a classic &#151; truly &#147;great&#148;", "It’s a classic — truly “great”"),  # Windows-1252
    ("Don&amp;#8217;t miss it &amp;quot;now&amp;quot;", "Don’t miss it \"now\""),  # double-escaped
    ("Caf&eacute; &copy; 2001 &#169; and&#160;more", "Café © 2001 © and\xa0more"),
    ("AT&T and R&D stay", "AT&T and R&D stay"),  # a bare ampersand is not an entity
])
def test_decode_html_entities(raw, expected):
    assert decode_html_entities(raw) == expected


def test_decoding_leaves_no_entity_residue_or_stray_code_points():
    text = decode_html_entities("Kerr&#8217;s &amp;#8217; &#x2019; &#x92;")
    assert "8217" not in text and "&" not in text and "x2019" not in text
    assert not any(0x80 <= ord(ch) <= 0x9F for ch in text)  # no C1 control characters from naive chr()


@pytest.mark.parametrize("raw, expected", [
    ("Soft cotton.<br>Machine washable.<br/>", "Soft cotton. Machine washable. "),
    ("<p>A <b>bold</b> <i class=\"x\">tale</i></p>", " A bold tale "),
    ("Sizes 2 < 4 > 1 and a<b", "Sizes 2 < 4 > 1 and a<b"),  # comparisons are not tags
])
def test_strip_html_tags(raw, expected):
    assert strip_html_tags(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("<scr<b>ipt>alert(1)</scr</b>ipt>", "alert(1)"),  # the red team's: one pass made it a live <script>
    ("<<b>img src=x onerror=alert(1)>", ""),
    ("<scr<scr<i>ipt>ipt>x</scr<scr<i>ipt>ipt>", "x"),  # nested twice
    ("<b<i>r>Line", " Line"),  # a block tag made by a removal is a space too
    ("a <b> c <x>", "a  c "),
    ("2 < 4 > 1 <b>bold</b> <a <b>", "2 < 4 > 1 bold <a "),  # a `<` that no `>` closes stays text
])
def test_strip_html_tags_repeats_until_no_tag_is_left(raw, expected):
    stripped = strip_html_tags(raw)
    assert stripped == expected
    assert strip_html_tags(stripped) == stripped  # nothing a second pass could still remove
    assert "<script" not in clean_text(raw).lower()


def test_repair_windows_1252_maps_raw_c1_controls():
    assert repair_windows_1252("It\x92s a \x93classic\x94 \x97 truly") == "It’s a “classic” — truly"
    assert repair_windows_1252("undefined\x81byte") == "undefinedbyte"
    assert repair_windows_1252("plain ascii") == "plain ascii"


def test_remove_control_characters_keeps_whitespace_and_letters():
    assert remove_control_characters("Blue\x00 tutu\x07\u200b size\u00ad 4\ufeff\tok\n") == "Blue tutu size 4\tok\n"
    assert remove_control_characters("Niño café naïve") == "Niño café naïve"


def test_bidi_controls_and_zero_width_characters_are_dropped():
    """An RLO made "Gadget \u202eexe.tfig\u202c Organizer Box" show as "Gadget gift.exe Organizer Box", and typing
    that found nothing: the title is stored, and shown, as its characters read."""
    assert clean_text("Gadget \u202eexe.tfig\u202c Organizer Box") == "Gadget exe.tfig Organizer Box"
    hidden = "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2060\ufeff\u061c"
    assert clean_text(f"Blue{hidden} Tutu \U000e0041\U000e0042") == "Blue Tutu"  # tag characters: hidden ASCII
    # every invisible format character (Unicode category Cf) but those of one script's own layout
    import sys
    import unicodedata
    layout = {*"\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd",
              *map(chr, [*range(0x13430, 0x13439), *range(0x1bca0, 0x1bca4), *range(0x1d173, 0x1d17b)])}
    kept = [f"U+{ord(c):04X}" for c in map(chr, range(sys.maxunicode + 1))
            if unicodedata.category(c) == "Cf" and c not in layout and remove_control_characters(f"a{c}b") != "ab"]
    assert kept == []


def test_normalize_unicode_composes_but_keeps_meaning():
    assert normalize_unicode("Cafe\u0301") == "Café"
    assert normalize_unicode("½ cup™") == "½ cup™"  # not NFKC


@pytest.mark.parametrize("raw, expected", [
    ("A fine tale.--This text refers to thePaperbackedition.", "A fine tale."),
    ("Gripping.--This text refers to an out of print or unavailable edition of this title.", "Gripping."),
    ("Moving.--This text refers to an alternatePaperbackedition.", "Moving."),
    ("A caper.Copyright 2002 Cahners Business Information, Inc.--This text refers to theHardcoveredition.",
     "A caper."),
    ("Iraq.Copyright © Reed Business Information, a division of Reed Elsevier Inc. All rights reserved.", "Iraq."),
    ("Photos.Copyright 1988 Reed Business Information, Inc.", "Photos."),
    ("Roland GreenCopyright © American Library Association. All rights reserved", "Roland Green"),
    ("Castle Rock, CO© Copyright 2010. Library Journals LLC, a wholly owned subsidiary of Media Source, Inc. "
     "No redistribution permitted.", "Castle Rock, CO"),
    ("widowhood. (Feb.)(c) Copyright PWxyz, LLC. All rights reserved.", "widowhood. (Feb.)"),
    ("Copyright law explained for authors.", "Copyright law explained for authors."),  # a topic, not boilerplate
])
def test_remove_scraping_boilerplate(raw, expected):
    assert remove_scraping_boilerplate(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("12 inches in length.The tutu is pink", "12 inches in length. The tutu is pink"),
    ("Highly recommended!Ages 4 up", "Highly recommended! Ages 4 up"),
    ("she said.”The end", "she said.” The end"),
    ("she said.\"The end", "she said.\"The end"),  # a straight quote may open or close: left alone
    ("made in the U.S.A and Ph.D.Thesis", "made in the U.S.A and Ph.D.Thesis"),  # abbreviations stay
    ("Dr.Seuss Classic and St.Louis", "Dr.Seuss Classic and St.Louis"),
    ("version 3.5 of ASP.Net at www.Amazon.com", "version 3.5 of ASP.Net at www.Amazon.com"),
])
def test_fix_glued_sentences(raw, expected):
    assert fix_glued_sentences(raw) == expected


def test_normalize_whitespace():
    assert normalize_whitespace("  Two  spaces.\tA tab\nand\xa0no-break  ") == "Two spaces. A tab and no-break"


def test_clean_text_keeps_accents_and_punctuation():
    text = "¡Qué bonito! Niño's “best” toy — 50% off; (ages 3–5) & more…"
    assert clean_text(text) == text


def test_clean_text_applies_every_rule_in_order():
    raw = ("Mog&#8217;s  Kittens<br>A delight.The best&amp;#8217;s\x92 here.--This text refers to thePaperbackedition.")
    assert clean_text(raw) == "Mog’s Kittens A delight. The best’s’ here."
    assert [name for name, _ in CLEANING_RULES][0] == "decode_html_entities"


RESIDUE = re.compile(r"&#|&amp;|&[a-z]{2,8};|8217|x2019|This text refers to|Reed Business Information|"
                     r"Cahners Business|[\x00-\x08\x0b-\x1f\x7f-\x9f]|  ")


@pytest.mark.skipif(not REAL_RECORDS.exists(), reason="../shared/data/real_trn_dev.jsonl not available")
def test_real_records_clean_without_residue():
    records = [json.loads(line) for line in REAL_RECORDS.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 700
    for record in records:
        for name in ("title", "content"):
            cleaned = clean_text(record[name])
            assert not RESIDUE.search(cleaned), (name, RESIDUE.search(cleaned).group(), cleaned[:200])
            assert clean_text(cleaned) == cleaned  # idempotent


# ------------------------------------------------------------------------------------------- over-long texts
def _huge(piece: str, chars: int = 3 * LONG_TEXT_CHARS) -> str:
    return (piece * (chars // len(piece) + 1))[:chars]


@pytest.mark.parametrize("text, limit, cut_short", [
    (_huge("A kettle&#8217;s <b>red</b> lid &amp; handle. Copyright 1998 Reed Business Information, Inc. "), 5000,
     True),
    (_huge("word "), 300, True),
    (_huge("Caf\u00e9 e\u0301 \x92 done.Next \u200b tab\there "), 5000, True),
    ("<b " + _huge("x y ") + ">", 5000, False),  # one tag over the whole text: it cleans to nothing
    ("<b <i> " + _huge("x y ") + ">", 5000, False),  # the same once the tag inside it is stripped
    (_huge(" ") + "short", 5000, False),  # whitespace: it cleans to one word
    (_huge("<br>" * 50 + " "), 5000, False),  # markup: it cleans to nothing
    (_huge("&lt;i " + "z " * 20), 5000, False),  # an entity opens a tag the rest may close
    (_huge("x" * 1000), 5000, False),  # no space to cut at
    ("word " * 1000, 10, False),  # short enough to clean whole
])
def test_a_huge_text_is_cleaned_from_its_start_only_when_that_shows_it_too_long(text, limit, cut_short):
    start = too_long_start(text, limit)
    assert (start is not None) == cut_short
    whole = clean_text(text)
    within = clean_text_within(text, limit)
    if start is None:
        assert within == whole
    else:
        assert len(start) < len(text) and text.startswith(start)
        assert len(whole) > limit and len(within) > limit  # the too-long filter drops it either way
        assert within[:200] == whole[:200]  # and its drop example reads the same
