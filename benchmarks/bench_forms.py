"""Retrieval as people ask: every question form of data/question_forms.py, on a prepared data set.

Asks the saved index of a prepared data folder about `--products` of its training products, each in every form
that applies to its title, and about every test-split product (not indexed) in the same forms, then prints, per
form, what the index did: accepted the right product, accepted another, asked back (the titles that fit as well),
or declined (naming the closest titles). Questions that name the whole title or its short form (NAMED_FORMS) must
be accepted; a question with only the title's first words (PARTIAL_FORMS) must not describe a product: the closest
titles are named instead, the right one among them.

A short form can name more than one product word for word: two products share it ("A Journey in the Yukon" is
the short form of two titles), or it is another product's whole title. No index can tell which one was meant; such
questions are counted apart ("names several"), and the right answer for them is to ask back.

    python -m benchmarks.bench_forms                                   # the bundled sample (outputs/data)
    python -m benchmarks.bench_forms --data outputs/genuine/data       # another prepared folder
"""
from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from typing import TYPE_CHECKING

import psutil

from product_qa.answering.metrics import words
from product_qa.configurator import positive_int
from product_qa.errors import run_cli

if TYPE_CHECKING:
    from product_qa.answering.retrieval import Hit, ProductIndex

OUTCOMES = ("right", "wrong", "asked_back", "suggested", "declined")  # suggested: declined, the right title named


def names(title: str, name: str) -> bool:
    """`name` is, word for word, `title` or its short form (without qualifiers and subtitle)."""
    from product_qa.data.question_forms import dropped_qualifiers

    asked = words(name)
    return asked in (words(title), words(dropped_qualifiers(title) or ""))


def outcome(hit: Hit, uid: str | None, title: str | None) -> str:
    """What the index did with a question about product `uid` (None: a product it does not hold)."""
    if hit.matched:
        return "right" if hit.uid == uid else "wrong"
    if hit.ambiguous:
        return "asked_back"
    return "suggested" if title is not None and title in hit.suggestions else "declined"


def names_several(hit: Hit, question: str, uid: str | None) -> bool:
    """The question's title names word for word another product than `uid` (as well or instead)."""
    from product_qa.answering.retrieval import asked_title

    name = asked_title(question)
    if name is None:
        return False
    if hit.matched:
        return hit.uid != uid and names(hit.title, name)
    return uid is not None and hit.ambiguous and sum(names(title, name) for title in hit.suggestions) >= 2


def ask_forms(index: ProductIndex, asked: list[tuple[str, str | None, str | None, str]]) -> dict[str, Counter]:
    """Per form, the count of each outcome; questions that name several products are counted as "several"
    besides. `asked`: (question, uid, title, form), uid and title None for a product outside the index."""
    tally: dict[str, Counter] = {}
    hits = index.search([question for question, _, _, _ in asked])
    for hit, (question, uid, title, form) in zip(hits, asked, strict=True):
        counts = tally.setdefault(form, Counter())
        counts["questions"] += 1
        counts[outcome(hit, uid, title)] += 1
        if names_several(hit, question, uid):
            counts["several"] += 1
    return tally


def known_questions(products: list[dict], seed: int) -> list[tuple[str, str, str, str]]:
    """Every form of each product's title: (question, uid, title, form)."""
    from product_qa.data.question_forms import question_forms
    from product_qa.hashing import key_hash

    return [(question, p["uid"], p["title"], form) for p in products
            for form, question in question_forms(p["title"], key_hash(p["uid"]), seed).items()]


def right_share(counts: Counter, form: str) -> float:
    """The share of a form's questions answered as they should be: the right product for a named form (of the
    questions that name one product), for a partial one the right product or its title among those named."""
    from product_qa.data.question_forms import PARTIAL_FORMS

    if form in PARTIAL_FORMS:
        return (counts["right"] + counts["suggested"] + counts["asked_back"]) / counts["questions"]
    one = counts["questions"] - counts["several"]
    return counts["right"] / one if one else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="outputs/data", help="a prepared data folder (data.output_dir)")
    parser.add_argument("--products", type=positive_int, default=100, help="training products asked about")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args()

    from config import DataConfig, RagConfig
    from product_qa.answering.retrieval import ProductIndex
    from product_qa.data.examples import output_paths, read_examples

    data = DataConfig(output_dir=args.data)
    index = ProductIndex.open(data, RagConfig())
    picked = random.Random(0).sample(range(len(index)), min(args.products, len(index)))
    known = known_questions([index.records[i] for i in sorted(picked)], 0)
    test = {e["uid"]: e for e in read_examples(output_paths(data)["test"])}
    unknown = [(q, None, None, form) for q, _, _, form in known_questions(list(test.values()), 0)]
    tally = {"indexed": ask_forms(index, known), "unknown": ask_forms(index, unknown)}
    if args.json:
        print(json.dumps(tally))
        return
    print(f"CPU: {psutil.cpu_count()} cores; {len(index):,} indexed products, acceptance threshold "
          f"{index.min_score:.2f}; {len(picked)} indexed and {len(test)} test-split products, every form")
    print_table(tally)


def print_table(tally: dict[str, dict[str, Counter]]) -> None:
    """Per form: the indexed products' outcomes, and how many test-split products were accepted."""
    print(f"{'form':<14}{'questions':>10}{'names several':>15}{'right':>8}{'asked back':>12}{'suggested':>11}"
          f"{'declined':>10}{'wrong':>7}{'answered right':>16}{'unknown accepted':>18}")
    for form, counts in tally["indexed"].items():
        unknown_counts = tally["unknown"].get(form, Counter())
        # a test-split product whose title another product holds word for word is that product, to the index
        unknown_one = unknown_counts["questions"] - unknown_counts["several"]
        false = f"{unknown_counts['wrong'] - unknown_counts['several']} of {unknown_one}"
        print(f"{form:<14}{counts['questions']:>10}{counts['several']:>15}{counts['right']:>8}"
              f"{counts['asked_back']:>12}{counts['suggested']:>11}{counts['declined']:>10}{counts['wrong']:>7}"
              f"{right_share(counts, form):>16.1%}{false:>18}")


if __name__ == "__main__":
    run_cli(main)
