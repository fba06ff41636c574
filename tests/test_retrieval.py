from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from config import RagConfig
from product_qa.answering.retrieval import (
    DEFAULT_MIN_SCORE,
    NO_MATCH_MESSAGE,
    Hit,
    ProductIndex,
    asked_title,
    source_line,
)
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
        assert not hit.matched and hit.score < DEFAULT_MIN_SCORE


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
    lenient = ProductIndex.build(products, rag_config(tmp_path, min_score=0.5))
    # 0.576 clears a lower threshold, but a pear is not an apple: each names a word the other lacks (a conflict)
    assert not lenient.search(["red pear"])[0].matched


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
    assert encoded == [[asked_title(q) or q for q in questions]]  # only the questions: what each one names
    assert cached[0].stat().st_mtime_ns == mtime

    ProductIndex.build(HAND_PRODUCTS[:-1], cfg)  # other titles: another cache file
    assert len(list((tmp_path / "rag").iterdir())) == 2


def test_unknown_retriever_is_a_user_error():
    from config import Config
    from product_qa.configurator import apply_overrides
    with pytest.raises(UserError, match="'tfidf' is not one of: bm25, minilm"):
        apply_overrides(Config(), ["rag.retriever=tfidf"])


def test_cut_to_tokens_cuts_a_record_to_max_tokens(tokenizer):
    from product_qa.data.prompts import cut_to_tokens
    long_text = "Clara Kowalski stars in this 1987 western set in the Yukon — a film for the whole family. " * 20
    for max_tokens in (1, 17, 40, 128):
        cut = cut_to_tokens(tokenizer, long_text, max_tokens)
        assert 0 < len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= max_tokens
        assert long_text.startswith(cut) and "\ufffd" not in cut
    short = "A short   description, kept as is."
    assert cut_to_tokens(tokenizer, short, 128) == short


def test_questions_as_people_type_them_find_and_accept_their_product(tmp_path, catalog):
    """Typos, dropped qualifiers and subtitles, lower case, Portuguese and words around the title: the right
    product is accepted for nearly all of them, on about 270 generated products with many near-duplicate titles."""
    from product_qa.data.question_forms import question_forms
    from product_qa.hashing import key_hash
    index = ProductIndex.build(catalog, rag_config(tmp_path))
    for form in ("lowercase", "typo", "no_qualifier", "portuguese", "wrapped"):
        asked = [(q, p["uid"]) for p in catalog
                 for name, q in question_forms(p["title"], key_hash(p["uid"]), 0).items() if name == form]
        assert len(asked) >= 50, form
        assert hit_rate(index, asked) >= (0.85 if form == "no_qualifier" else 0.95), form


def test_a_typo_counts_only_where_no_title_holds_the_word(tmp_path):
    products = [{"uid": "o", "title": "Moon Orchard", "answer": "An album."},
                {"uid": "p", "title": "Orchards of Kent", "answer": "A book."},
                {"uid": "c", "title": "Bamboo Cutting Board", "answer": "A board."}]
    index = ProductIndex.build(products, rag_config(tmp_path))
    typo, plural = index.search(["What is Bamboo Ctuting Board?", "What is Moon Letter by The Orchards?"])
    assert typo.uid == "c" and typo.matched and typo.score == 1.0  # "ctuting" is in no title: a typo of "cutting"
    assert not (plural.uid == "o" and plural.matched)  # "orchards" is a word of a title: not a typo of "orchard"


def test_an_article_before_the_title_is_no_other_product_but_a_longer_title_is(tmp_path):
    """"What is the Girls Ballet Tutu?" names the title; "What do you know about Forgotten Valley: Crimson
    Kingdoms?" names a longer title than the indexed "Forgotten Valley", another product."""
    products = [{"uid": "t", "title": "Girls Ballet Tutu Neon Pink", "answer": "A tutu."},
                {"uid": "v", "title": "Forgotten Valley", "answer": "A film."},
                {"uid": "r", "title": "Silent River", "answer": "A river."}]
    index = ProductIndex.build(products, rag_config(tmp_path))
    article, portuguese, longer = index.search(["What is the Girls Ballet Tutu Neon Pink?",
                                                "O que é o Girls Ballet Tutu Neon Pink?",
                                                "What do you know about Forgotten Valley: Crimson Kingdoms?"])
    assert article.matched and article.uid == "t" and portuguese.matched and portuguese.uid == "t"
    assert longer.uid == "v" and longer.conflict and not longer.matched


def test_a_short_question_that_fits_several_titles_names_them(tmp_path):
    products = [{"uid": "d", "title": "Forgotten Kingdom (DVD)", "answer": "A film."},
                {"uid": "n", "title": "Forgotten Kingdom: A Novel", "answer": "A novel."},
                {"uid": "h", "title": "Home Island (Audio CD)", "answer": "An album."},
                {"uid": "s", "title": "Silent River", "answer": "A river."}]
    index = ProductIndex.build(products, rag_config(tmp_path))
    short, whole, dropped = index.search(["What do you know about Forgotten Kingdom?",
                                          "What do you know about Forgotten Kingdom (DVD)?",
                                          "What do you know about Home Island?"])
    assert short.ambiguous and not short.matched
    assert set(short.suggestions) == {"Forgotten Kingdom (DVD)", "Forgotten Kingdom: A Novel"}
    assert whole.matched and whole.uid == "d" and not whole.ambiguous
    assert dropped.matched and dropped.uid == "h"  # the only title it shortens


def test_a_one_word_short_form_and_a_misspelt_one_word_title_are_found_wherever_bm25_ranks_them(tmp_path):
    """BM25 ranks a long title far below short ones that share its word, and a title made of the phrasing's own
    words ("What Do People Do All Day?") above one the question misspells; the index still finds both."""
    long_title = "Hidden: Betrayed, Exploited and Forgotten. How One Boy Overcame the Odds"
    titles = [long_title, "Harlequin", "What Do People Do All Day?",
              *(f"Hidden {word}" for word in ("Valley", "Garden", "Figures", "Music", "Lake", "River", "Stars",
                                              "Kingdom", "Forest", "Harbor", "Island", "Orchard"))]
    products = [{"uid": f"U{i}", "title": title, "answer": f"About {title}."} for i, title in enumerate(titles)]
    index = ProductIndex.build(products, rag_config(tmp_path))
    assert index._bm25.candidates(["What do you know about Hidden?"], 10)[0].tolist().count(0) == 0  # ranked out
    short, misspelt = index.search(["What do you know about Hidden?", "What do you know about Hralequin?"])
    assert short.matched and short.title == long_title
    assert misspelt.matched and misspelt.title == "Harlequin"


def test_a_question_naming_only_the_first_words_of_a_title_is_not_answered_with_it(tmp_path):
    """"Home Island" may be the album "Home Island by The Kingdoms [Audio CD]" or a product the index lacks: the
    closest titles are named instead. "The Witch of" is not "Witch: A Magikal Journey" (its "of" is the person's)."""
    titles = ("Home Island by The Kingdoms [Audio CD]", "Witch: A Magikal Journey- A Hip Guide to Modern Witchcraft",
              "Silent River")
    products = [{"uid": f"U{i}", "title": title, "answer": f"About {title}."} for i, title in enumerate(titles)]
    index = ProductIndex.build(products, rag_config(tmp_path))
    island, witch, album = index.search(["What do you know about Home Island?", "What do you know about The Witch of?",
                                         "What do you know about Home Island by The Kingdoms?"])
    assert not island.matched and island.suggestions[0] == titles[0]
    assert not witch.matched
    assert album.matched and album.title == titles[0]  # its short form: the qualifier dropped


def test_source_line_and_no_match_message():
    hit = Hit("B00X", "Home Island (Audio CD)", "An album.", 1.0, True)
    assert source_line(hit) == "Source: Home Island (Audio CD) (uid B00X)"
    assert NO_MATCH_MESSAGE == "No matching product was found in the catalog for this question."


@pytest.fixture
def prepared(tmp_path, raw_sample):
    """The generated sample prepared under tmp_path: DataConfig and RagConfig."""
    from config import DataConfig
    from product_qa.data.preparation import prepare
    data = DataConfig(raw_path=str(raw_sample), output_dir=str(tmp_path / "data"), workers=1)
    prepare(data, progress=False)
    return data, rag_config(tmp_path)


def test_the_saved_index_is_reused_by_another_process_and_rebuilt_for_new_data(prepared, tmp_path):
    """Built once beside the data; a second process loads it without reading the titles again; a rewritten
    training split gets a new index (the old one is removed)."""
    import subprocess
    import sys

    from product_qa.answering.retrieval import INDEX_DIR
    from product_qa.data.examples import output_paths, read_examples
    from product_qa.data.preparation import prepare
    data, rag = prepared
    index = ProductIndex.open(data, rag)
    train = read_examples(output_paths(data)["train"])
    assert index.uids == {e["uid"] for e in train} and len(index) == len(train)
    first = e = train[len(train) // 2]
    assert index.search([f"What is {e['title']}?"])[0] == Hit(e["uid"], e["title"], e["answer"], 1.0, True)
    folders = list((tmp_path / "data" / INDEX_DIR).iterdir())
    assert len(folders) == 1 and (folders[0] / "meta.json").exists()
    # another process: the index loads, the training split is never scanned again
    probe = ("import sys; from config import DataConfig, RagConfig; import product_qa.answering.retrieval as r\n"
             "r._scan = lambda *a, **k: sys.exit('rebuilt')\n"
             f"i = r.ProductIndex.open(DataConfig(output_dir={data.output_dir!r}), "
             f"RagConfig(index_dir={rag.index_dir!r}))\n"
             f"print(i.search([{'What is ' + first['title'] + '?'!r}])[0].uid)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1])
    assert result.returncode == 0 and result.stdout.strip() == first["uid"], result.stderr[-2000:]
    # new data (another seed, prepared again): a new index, built from the new split
    changed = dataclasses.replace(data, seed=7)
    prepare(changed, progress=False)
    rebuilt = ProductIndex.open(changed, rag)
    assert rebuilt.uids == {e["uid"] for e in read_examples(output_paths(changed)["train"])}
    assert [p.name for p in (tmp_path / "data" / INDEX_DIR).iterdir()] != [folders[0].name]


def test_the_calibration_reads_the_validation_split_never_the_test_split(prepared):
    """The threshold and its curve come from the validation split: a test split that cannot even be parsed changes
    nothing."""
    from product_qa.data.examples import output_paths
    data, rag = prepared
    calibration = ProductIndex.open(data, rag).calibration
    assert calibration["threshold"] in [point["threshold"] for point in calibration["curve"]]
    assert calibration["false_accepted"] <= rag.max_false_accept and calibration["right_accepted"] >= 0.8
    allowed = [p for p in calibration["curve"] if p["false_accepted"] <= rag.max_false_accept]
    best = max(p["right_accepted"] for p in allowed)
    stricter = [p for p in allowed if p["threshold"] > calibration["threshold"]]
    # the strictest allowed threshold that gives up (almost) no right acceptance
    assert calibration["right_accepted"] >= best - 0.005 and all(p["right_accepted"] < best - 0.005 for p in stricter)
    for folder in (Path(data.output_dir) / "index").iterdir():
        shutil.rmtree(folder)
    output_paths(data)["test"].write_bytes(b"not json at all\n")
    assert ProductIndex.open(data, rag).calibration == calibration
    assert ProductIndex.open(data, dataclasses.replace(rag, min_score=0.99)).min_score == 0.99  # a set one wins
