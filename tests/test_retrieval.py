from __future__ import annotations

import math

import numpy as np
import pytest

from config import RagConfig
from product_qa.answering.retrieval import NO_MATCH_MESSAGE, Hit, ProductIndex, context_text, source_line
from product_qa.data.prompts import HELD_OUT_PHRASINGS
from product_qa.data.synthetic import generate_records
from product_qa.errors import UserError
from product_qa.modeling import load_sentence_encoder

RETRIEVERS = ("bm25", "minilm")

# Near-duplicate titles on purpose: other brands, sizes and colours, one title inside another, reordered words.
HAND_TITLES = (
    "Lumen Adult Rain Jacket, Black, Small",
    "Lumen Adult Rain Jacket, Black, Large",
    "Summit Adult Rain Jacket, Navy Blue, Small",
    "Home Island",
    "Home Island (Audio CD)",
    "The Forgotten Kingdom",
    "Forgotten Kingdom (DVD)",
    "Archives of Lisbon: A Cookbook of Istanbul",
    "Archives of Istanbul: A Cookbook of Lisbon",
    "Orion Remote Control Car for Kids Ages 2-5",
    "Orion Remote Control Car for Kids Ages 2-6",
    "Acme High-Carbon Steel Chef's Knife, 8-inch, Burnt Orange",
    "Brightline High-Carbon Steel Chef's Knife, 8-inch, Burnt Orange",
    "Copperleaf S481 Wireless Earbuds with Active Noise Cancelling",
    "Um Livro de Receitas (Portuguese Edition)",
)
HAND_PRODUCTS = [{"uid": f"U{i:03d}", "title": title, "answer": f"Description of {title}."}
                 for i, title in enumerate(HAND_TITLES)]


def rag_config(tmp_path, retriever: str = "bm25", **changes) -> RagConfig:
    return RagConfig(retriever=retriever, index_dir=str(tmp_path / "rag"), **changes)


@pytest.fixture(scope="module")
def catalog() -> list[dict]:
    """About 270 generated products, one per title (a question can only tell products apart by their title)."""
    products, titles = [], set()
    for record in generate_records(300, seed=3):
        if record["title"] and record["title"] not in titles:
            titles.add(record["title"])
            products.append({"uid": record["uid"], "title": record["title"], "answer": record["content"]})
    assert len(products) >= 200
    return products


def held_out_questions(products: list[dict]) -> list[tuple[str, str]]:
    return [(phrasing.question(p["title"]), p["uid"]) for p in products for phrasing in HELD_OUT_PHRASINGS]


def hit_rate(index: ProductIndex, questions: list[tuple[str, str]]) -> float:
    hits = index.search([question for question, _ in questions])
    return sum(hit.uid == uid and hit.matched for hit, (_, uid) in zip(hits, questions, strict=True)) / len(questions)


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_every_held_out_phrasing_of_a_hand_made_title_finds_it(tmp_path, retriever):
    index = ProductIndex.build(HAND_PRODUCTS, rag_config(tmp_path, retriever))
    questions = held_out_questions(HAND_PRODUCTS)
    assert any(question.startswith("Fale-me sobre") for question, _ in questions)  # Portuguese is asked too
    hits = index.search([question for question, _ in questions])
    assert [hit.uid for hit in hits] == [uid for _, uid in questions]
    assert all(hit.matched and hit.score == 1.0 for hit in hits)
    first = HAND_PRODUCTS[0]
    assert hits[0] == Hit(first["uid"], first["title"], first["answer"], 1.0, True)


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_a_generated_catalog_is_found_by_its_titles(tmp_path, catalog, retriever):
    index = ProductIndex.build(catalog, rag_config(tmp_path, retriever))
    assert index.uids == {p["uid"] for p in catalog}
    assert hit_rate(index, held_out_questions(catalog)) >= 0.98


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_questions_about_no_indexed_product_do_not_match(tmp_path, retriever):
    index = ProductIndex.build(HAND_PRODUCTS[1:], rag_config(tmp_path, retriever))
    unrelated, other_brand, unknown = index.search([
        "What is the capital of France?",
        "What do you know about Bellweather Adult Rain Jacket, Black, Small?",  # the indexed ones are Lumen's
        HAND_PRODUCTS[0]["title"],  # left out of this index: only its Large sibling is there
    ])
    for hit in (unrelated, other_brand, unknown):
        assert not hit.matched and hit.score < RagConfig().min_score


def test_unseen_generated_products_rarely_match(tmp_path, catalog):
    """Index 200 products and ask about the rest: their closest titles share words but not the rare ones."""
    index = ProductIndex.build(catalog[:200], rag_config(tmp_path))
    hits = index.search([question for question, _ in held_out_questions(catalog[200:])])
    assert not index.uids & {p["uid"] for p in catalog[200:]}
    assert sum(hit.matched for hit in hits) / len(hits) <= 0.05


def test_match_score_is_the_idf_weighted_share_of_title_words(tmp_path):
    products = [{"uid": "a", "title": "Red Apple", "answer": "A red apple."},
                {"uid": "b", "title": "Green Apple", "answer": "A green apple."}]
    index = ProductIndex.build(products, rag_config(tmp_path))
    # N = 2 titles: df(red) = 1 -> idf = log(1 + 2/2); df(apple) = 2 -> idf = log(1 + 2/3)
    idf_red, idf_apple = math.log(2), math.log(1 + 2 / 3)
    partial, full, green = index.search(["What is a red pear?", "What is RED apple?", "Green apple?"])
    assert (partial.uid, full.uid, green.uid) == ("a", "a", "b")
    assert partial.score == pytest.approx(idf_red / (idf_red + idf_apple))
    assert not partial.matched
    assert full.score == 1.0 and full.matched
    strict = ProductIndex.build(products, rag_config(tmp_path, min_score=0.5))
    assert strict.search(["red pear"])[0].matched  # 0.576 clears a lower threshold


def test_one_entry_per_uid_and_empty_inputs(tmp_path):
    products = [{"uid": "x", "title": "Golden Harbor", "answer": "first"},
                {"uid": "x", "title": "Golden Harbor", "answer": "second"},
                {"uid": "y", "title": "Silent River", "answer": "other"}]
    index = ProductIndex.build(products, rag_config(tmp_path))
    assert index.uids == {"x", "y"}
    assert index.search(["What is Golden Harbor?"])[0].description == "first"
    assert index.search([]) == []
    with pytest.raises(UserError, match="at least one training product"):
        ProductIndex.build([], rag_config(tmp_path))


def test_minilm_title_embeddings_are_cached_and_reused(tmp_path, monkeypatch):
    cfg = rag_config(tmp_path, "minilm")
    questions = [question for question, _ in held_out_questions(HAND_PRODUCTS)]
    first = ProductIndex.build(HAND_PRODUCTS, cfg).search(questions)
    cached = list((tmp_path / "rag").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".npy"  # no temp file left behind
    assert np.load(cached[0]).shape == (len(HAND_PRODUCTS), 384)
    mtime = cached[0].stat().st_mtime_ns

    encoder = load_sentence_encoder(cfg.encoder)
    encoded: list[list[str]] = []
    real_encode = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda texts, **kw: encoded.append(list(texts)) or real_encode(texts, **kw))
    second = ProductIndex.build(HAND_PRODUCTS, cfg)
    assert encoded == []  # the titles come from the cache
    assert second.search(questions) == first
    assert encoded == [questions]
    assert cached[0].stat().st_mtime_ns == mtime

    ProductIndex.build(HAND_PRODUCTS[:-1], cfg)  # other titles: another cache file
    assert len(list((tmp_path / "rag").iterdir())) == 2


def test_unknown_retriever_is_a_user_error():
    from config import Config
    from product_qa.configurator import apply_overrides
    with pytest.raises(UserError, match="'tfidf' is not one of: bm25, minilm"):
        apply_overrides(Config(), ["rag.retriever=tfidf"])


def test_context_text_cuts_the_description_to_max_tokens(tokenizer):
    long_text = "Clara Kowalski stars in this 1987 western set in the Yukon — a film for the whole family. " * 20
    hit = Hit("u1", "Forgotten Valley (DVD)", long_text, 1.0, True)
    for max_tokens in (1, 17, 40, 128):
        cut = context_text(hit, tokenizer, max_tokens)
        assert 0 < len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= max_tokens
        assert long_text.startswith(cut) and "\ufffd" not in cut
    short = Hit("u2", "Home Island", "A short   description, kept as is.", 1.0, True)
    assert context_text(short, tokenizer, 128) == short.description


def test_source_line_and_no_match_message():
    hit = Hit("B00X", "Home Island (Audio CD)", "An album.", 1.0, True)
    assert source_line(hit) == "Source: Home Island (Audio CD) (uid B00X)"
    assert NO_MATCH_MESSAGE == "No matching product was found in the catalog for this question."
