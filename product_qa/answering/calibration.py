"""The retrieval's acceptance threshold, calibrated on the validation split (never the test split).

Positives are indexed products asked in the forms that name their title or its short form (NAMED_FORMS of
data/question_forms.py); negatives are validation-split products, which the index does not hold, asked in the
forms that name their whole title or only its first words (FULL_TITLE_FORMS, PARTIAL_FORMS): the best match of such
a question is always another product. (A short form of a product outside the index can be, word for word, the
short form of an indexed one: no threshold tells those apart, so they are left out of the calibration and
measured by the evaluation.) For each threshold the curve gives the share of positives whose right product is
accepted and the share of negatives falsely accepted. Among the thresholds whose false acceptance stays within
`rag.max_false_accept`, the chosen one is the strictest that still accepts as many right products as any of them
(within RIGHT_MARGIN): as many questions as possible are answered, with the widest margin against products outside
the index.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from product_qa.data.question_forms import FULL_TITLE_FORMS, NAMED_FORMS, PARTIAL_FORMS, question_forms
from product_qa.hashing import key_hash

if TYPE_CHECKING:
    from product_qa.answering.retrieval import ProductIndex

CALIBRATION_PRODUCTS = 200  # products sampled from the index, and at most as many from the validation split
THRESHOLDS = tuple(round(0.5 + step / 100, 2) for step in range(51))  # 0.50, 0.51, ... 1.00
CALIBRATION_SEED = 0
RIGHT_MARGIN = 0.005  # right acceptances a stricter threshold may give up: a margin against unknown products


def calibrate(index: ProductIndex, validation: Path, max_false_accept: float) -> dict | None:
    """The threshold and its curve; None without validation products to calibrate on."""
    negatives = _validation_products(validation)
    if not negatives:
        return None
    picked = random.Random(CALIBRATION_SEED).sample(range(len(index)), min(CALIBRATION_PRODUCTS, len(index)))
    positives = [index.records[i] for i in sorted(picked)]
    asked = [(q, p["uid"]) for p in positives
             for form, q in question_forms(p["title"], key_hash(p["uid"]), CALIBRATION_SEED).items()
             if form in NAMED_FORMS]
    unknown = [q for p in negatives
               for form, q in question_forms(p["title"], key_hash(p["uid"]), CALIBRATION_SEED).items()
               if form in FULL_TITLE_FORMS or form in PARTIAL_FORMS]
    known_fits = index.ranked([q for q, _ in asked])
    unknown_fits = index.ranked(unknown)
    curve = []
    for threshold in THRESHOLDS:
        right = sum(hit.matched and hit.uid == uid for hit, (_, uid) in
                    zip((index.decide(f, threshold) for f in known_fits), asked, strict=True))
        false = sum(index.decide(f, threshold).matched for f in unknown_fits)
        curve.append({"threshold": threshold, "right_accepted": right / len(asked),
                      "false_accepted": false / len(unknown)})
    within = [point for point in curve if point["false_accepted"] <= max_false_accept] or curve[-1:]
    best = max(point["right_accepted"] for point in within)
    chosen = [point for point in within if point["right_accepted"] >= best - RIGHT_MARGIN][-1]
    return {"threshold": chosen["threshold"], "max_false_accept": max_false_accept, "questions": len(asked),
            "unknown_questions": len(unknown), "right_accepted": chosen["right_accepted"],
            "false_accepted": chosen["false_accepted"], "curve": curve}


def _validation_products(path: Path) -> list[dict]:
    """Up to CALIBRATION_PRODUCTS validation products (a seeded sample), read from the split file."""
    if not path.exists():
        return []
    products = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    keep = sorted(random.Random(CALIBRATION_SEED).sample(range(len(products)),
                                                          min(CALIBRATION_PRODUCTS, len(products))))
    return [products[i] for i in keep]
