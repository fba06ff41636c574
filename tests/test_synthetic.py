"""The synthetic trn.json generator: deterministic, the real file's format, its quirks at realistic rates."""
import itertools
import json
import re
from collections import Counter
from statistics import median

import pytest

from conftest import REPO
from product_qa.data.synthetic import generate_records, write_records

KEYS = ["uid", "title", "content", "target_ind", "target_rel"]


@pytest.fixture(scope="module")
def many():
    return list(generate_records(20000, seed=3))


def test_same_arguments_give_the_same_records_and_another_seed_differs():
    first = list(generate_records(300, seed=1))
    assert first == list(generate_records(300, seed=1))
    assert first != list(generate_records(300, seed=2))


def test_records_have_the_real_format(tmp_path):
    path = tmp_path / "trn.json"
    assert write_records(str(path), generate_records(200, seed=0)) == 200
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert list(record) == KEYS
        assert isinstance(record["uid"], str) and len(record["uid"]) == 10
        assert isinstance(record["title"], str) and isinstance(record["content"], str)
        assert len(record["target_ind"]) == len(record["target_rel"]) >= 1
        assert all(isinstance(i, int) for i in record["target_ind"] + record["target_rel"])


def test_gzip_output(tmp_path):
    import gzip
    path = tmp_path / "trn.json.gz"
    write_records(str(path), generate_records(10, seed=0))
    assert len(gzip.decompress(path.read_bytes()).splitlines()) == 10


def test_quirk_rates_are_realistic(many):
    n = len(many)
    contents = [r["content"] for r in many if r["content"]]
    assert 0.28 < 1 - len(contents) / n < 0.38  # a third empty, as in the real file
    assert 0.03 < sum(not r["title"] for r in many) / n < 0.08
    with_entity = sum(bool(re.search(r"&#?\w+;", c)) for c in contents) / len(contents)
    assert 0.10 < with_entity < 0.30
    text = "\n".join(contents)
    for family in (r"&#8\d{3};", r"&#x20[1-2][0-9A-F];", r"&(?:mdash|rsquo|ldquo|amp);", r"&#(?:x9[0-9A-F]|1[3-5]\d);",
                   r"&amp;#\d+;"):
        assert re.search(family, text), family  # decimal, hex, named, Windows-1252, double-escaped
    boilerplate = sum("--This text refers to" in c or "Business Information" in c for c in contents) / len(contents)
    assert 0.12 < boilerplate < 0.30
    assert re.search(r"[a-z]\.[A-Z][a-z]", text) and "  " in text and "<br" in text
    assert {"Book by", "VHS Tape"} <= set(contents)
    assert any("Spanish Edition" in r["title"] for r in many)
    pairs = Counter((r["title"], r["content"]) for r in many if r["title"] and r["content"])
    titles = Counter(r["title"] for r in many if r["title"] and r["content"])
    assert sum(c - 1 for c in pairs.values()) > 0.003 * n  # exact duplicates
    assert sum(c - 1 for c in titles.values()) > sum(c - 1 for c in pairs.values())  # same title, other text


def test_descriptions_restate_their_titles_attributes(many):
    apparel = [r for r in many if r["content"].startswith("High quality") and r["title"]]
    assert len(apparel) > 100
    colours = [re.search(r"\bin ([a-z ]+)[.<]", r["content"]) for r in apparel]
    matching = [m for m, r in zip(colours, apparel, strict=True) if m and m.group(1) in r["title"].lower()]
    assert len(matching) > 0.9 * len(apparel)


def test_full_profile_follows_the_real_length_distribution():
    records = list(itertools.islice(generate_records(20000, seed=0, length_profile="full"), 20000))
    contents = [len(r["content"]) for r in records if r["content"]]
    titles = [len(r["title"]) for r in records if r["title"]]
    assert abs(median(contents) - 398) / 398 < 0.15
    assert abs(median(titles) - 54) / 54 < 0.15


def test_bundled_sample_is_reproducible_from_code():
    bundled = (REPO / "sample_data.json").read_text(encoding="utf-8").splitlines()
    assert len(bundled) == 1000
    assert [json.loads(line) for line in bundled] == list(generate_records(1000, seed=0))
    long_ones = [r for r in map(json.loads, bundled) if len(r["content"]) > 20000]
    assert 3 <= len(long_ones) <= 5
