"""The catalog a run teaches, the products it learns to decline, and the views of each product it trains on.

A fact seen once, in one wording, is memorized but not recalled when asked differently; seen in several
wordings it is (Allen-Zhu & Li, Physics of Language Models 3.1). So training asks every catalog product
`train.views` times per epoch, each time with another of the training phrasings, and each epoch (a "round")
moves on to the next phrasings: a product is asked differently from round to round. The held-out phrasings
are never used here; evaluation keeps them.

Declined products are training-split products left out of the catalog: training asks about their titles
and teaches one fixed answer, UNKNOWN_ANSWER, so that the model says so instead of inventing a description
for a product it does not know. They never come from the validation or test split.

Context views teach the model to read a retrieved record (retrieval-augmented fine-tuning, RAFT): the product's
record (title and description) comes before the question and the description is the answer. They are given to
the catalog products and to `train.context_products` further training products (the reading products), which
the model sees only with their record, so it learns to copy what it is given rather than recall it. Distractor
views show the record of another product and teach UNKNOWN_ANSWER: a record that does not fit the question is
not described.

Training, the main job's recall check, the evaluation's seen set and the RAG index all take the catalog
from `build_catalog`, so they agree on which products the model was taught.
"""
from __future__ import annotations

import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from product_qa.configurator import fingerprint
from product_qa.data.encoding import TOKENIZED_DIR, ExampleEncoder
from product_qa.data.examples import read_examples
from product_qa.data.prompts import HELD_OUT_PHRASINGS, Phrasing, pick_phrasing, record_text, view_phrasings
from product_qa.hashing import key_hash, mix64
from product_qa.io_utils import atomic_outputs, remove_stale_temps

if TYPE_CHECKING:
    from config import TrainConfig

UNKNOWN_ANSWER = "I don't know this product: it is not in my catalog."
DOCUMENT_VIEW = "document"  # the phrasing id of a catalog-document view
VIEWS_VERSION = 4  # bump when the views change: old view files are then rebuilt
VIEWS_DIR = "views"  # under data.output_dir


@dataclass(frozen=True)
class Catalog:
    known: list[dict]  # train.jsonl examples of the products the model learns, in file order
    declined: list[dict]  # training-split products outside the catalog, taught as UNKNOWN_ANSWER
    reading: list[dict]  # training-split products seen only with their record in the prompt (context views)

    def trained_uids(self) -> set[str]:
        """Every product training shows in any way: what an evaluation of products the model was not taught
        leaves out."""
        return {e["uid"] for group in (self.known, self.declined, self.reading) for e in group}


def product_rank(uid: str, seed: int) -> int:
    """A product's place in the seeded order that picks the catalog: the same products for the same seed,
    whatever the order or the size of the file."""
    return mix64(key_hash(uid) ^ mix64(seed))


def catalog_sizes(products: int, max_products: int | None, unknown_share: float) -> tuple[int, int]:
    """(known, declined) product counts: declined products make `unknown_share` of all the products trained on;
    when the training split cannot hold both, the catalog gives up the room."""
    known = products if max_products is None else min(max_products, products)
    declined = round(known * unknown_share / (1 - unknown_share))
    if known + declined > products:
        declined = min(products - 1, round(products * unknown_share))
        known = products - declined
    return known, declined


def build_catalog(train_examples: list[dict], train: TrainConfig) -> Catalog:
    """The catalog (`train.max_train_products` of the training products, a seeded sample), the declined
    products and the reading products (the next ones in the same seeded order)."""
    order = sorted(range(len(train_examples)),
                   key=lambda i: (product_rank(train_examples[i]["uid"], train.seed), i))
    known, declined = catalog_sizes(len(order), train.max_train_products, train.unknown_share)
    reading = min(train.context_products, len(order) - known - declined) if train.context_views else 0
    return Catalog(known=[train_examples[i] for i in sorted(order[:known])],
                   declined=[train_examples[i] for i in sorted(order[known:known + declined])],
                   reading=[train_examples[i] for i in sorted(order[known + declined:known + declined + reading])])


def read_catalog(train_path: Path, train: TrainConfig) -> Catalog:
    return build_catalog(read_examples(train_path), train)


# --------------------------------------------------------------------------------------------------- views
def training_rounds(epochs: float) -> int:
    """Passes over the catalog that the training examples are laid out for (a fractional last one is cut)."""
    return max(1, math.ceil(epochs))


def product_views(product: dict, pool: tuple[Phrasing, ...], views: int, round_index: int) -> list[Phrasing]:
    """The phrasings a product is asked with in one round. Round 0 starts from the phrasing prepare_data.py
    gave it (one view and one epoch train exactly train.jsonl); each round moves on by `views` phrasings."""
    ids = [p.id for p in pool]
    given = product.get("phrasing")
    start = ids.index(given) if given in ids else ids.index(pick_phrasing(pool, key_hash(product["uid"]), 0).id)
    return [pool[(start + round_index * views + k) % len(pool)] for k in range(views)]


def training_views(catalog: Catalog, train: TrainConfig) -> list[dict]:
    """Every training example, laid out round after round; within a round the examples are shuffled (seeded),
    so a product's views are spread out. Each example: uid, title, question, answer, phrasing, round, known,
    document, context. A document view (`train.document_views` per catalog product and round) is the catalog
    page itself: the title as the prompt, plain text with no chat template, and the description as its
    completion. A context view (`train.context_views` per catalog and reading product and round) carries the
    record the prompt shows in `context` ("" elsewhere)."""
    pool = view_phrasings(train.view_languages)
    examples: list[dict] = []
    for round_index in range(training_rounds(train.epochs)):
        this_round = [_view(product, phrasing, product["answer"] if known else UNKNOWN_ANSWER, round_index, known)
                      for known, products in ((True, catalog.known), (False, catalog.declined))
                      for product in products
                      for phrasing in product_views(product, pool, train.views, round_index)]
        this_round += [{**_view(product, DOCUMENT_VIEW, product["answer"], round_index, True), "document": True}
                       for product in catalog.known for _ in range(train.document_views)]
        this_round += _context_views(catalog, train, pool, round_index)
        random.Random(train.seed * 1_000_003 + round_index).shuffle(this_round)
        examples.extend(this_round)
    return examples


def _view(product: dict, phrasing: Phrasing | str, answer: str, round_index: int, known: bool,
          record: dict | None = None) -> dict:
    """One training example of `product`; with `record`, that product's record is shown before the question."""
    question = product["title"] if isinstance(phrasing, str) else phrasing.question(product["title"])
    return {"uid": product["uid"], "title": product["title"], "question": question, "answer": answer,
            "phrasing": phrasing if isinstance(phrasing, str) else phrasing.id, "round": round_index,
            "known": known, "document": False,
            "context": record_text(record["title"], record["answer"]) if record else ""}


def _context_views(catalog: Catalog, train: TrainConfig, pool: tuple[Phrasing, ...], round_index: int
                   ) -> list[dict]:
    """One round's context views: each catalog and reading product read from its own record, in phrasings that
    move on as the question views' do; then `train.distractor_share` as many again, each a product asked with
    another product's record shown (a seeded pairing), answered UNKNOWN_ANSWER."""
    readers = catalog.known + catalog.reading
    views = [_view(product, phrasing, product["answer"], round_index, True, record=product)
             for product in readers
             for phrasing in product_views(product, pool, train.context_views, round_index + 1)]
    distractors = round(len(views) * train.distractor_share)
    if distractors and len(readers) > 1:
        pick = random.Random(train.seed * 7_919 + round_index)
        for _ in range(distractors):
            asked, shown = pick.sample(readers, 2)
            views.append({**_view(asked, pick.choice(pool), UNKNOWN_ANSWER, round_index, False, record=shown),
                          "phrasing": "distractor"})
    return views


def views_file(train_path: Path, catalog: Catalog, train: TrainConfig, encoder: ExampleEncoder) -> Path:
    """The training views of `catalog` (read from `train_path` with `train`) written beside the data, each with
    the chat turns `encoder` trains it as (`messages`: system prompt, user turn with its record, answer), under a
    name keyed by the catalog's own products and the settings that shape them: a second run with the same
    catalog and settings reuses the file (and so its tokenized cache). Keyed by what they are built from, not by
    train.jsonl: a catalog read before the data was prepared anew never passes for the new one's. Files of other
    keys, and the temp files of killed runs, are removed."""
    key = fingerprint(VIEWS_VERSION, catalog.known, catalog.declined, catalog.reading, train.views,
                      train.document_views, train.context_views, train.distractor_share, train.view_languages,
                      training_rounds(train.epochs), train.seed, UNKNOWN_ANSWER, encoder.key())
    folder = train_path.parent / VIEWS_DIR
    path = folder / f"train-{key}.jsonl"
    remove_stale_temps(folder)
    if path.exists():
        return path
    examples = training_views(catalog, train)
    with atomic_outputs({"views": path}) as handles:
        handles["views"].write(b"".join(orjson.dumps({**e, "messages": encoder.messages(e)}) + b"\n"
                                        for e in examples))
    # the others only once this one is written: a run that cannot write it (a full or read-only disk) removes nothing
    for old in folder.glob("train-*.jsonl"):
        if old != path:
            old.unlink(missing_ok=True)
    shutil.rmtree(folder / TOKENIZED_DIR, ignore_errors=True)
    return path


def recall_questions(catalog: Catalog, limit: int | None, seed: int) -> list[dict]:
    """Catalog products asked with a held-out phrasing (one question per product, a seeded sample of `limit`):
    what the run is for, so the main job stops on their loss and reports their recall."""
    products = sorted(catalog.known, key=lambda e: (product_rank(e["uid"], seed), e["uid"]))[:limit]
    return [{"uid": e["uid"], "title": e["title"], "answer": e["answer"], "reference": e["answer"],
             "question": pick_phrasing(HELD_OUT_PHRASINGS, key_hash(e["uid"]), seed).question(e["title"])}
            for e in products]


def is_declined(answer: str) -> bool:
    """True for the fixed "I don't know this product" answer (or one that starts with it)."""
    return answer.strip().startswith(UNKNOWN_ANSWER.split(":")[0])
