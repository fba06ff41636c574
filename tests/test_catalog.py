"""The catalog a run teaches: which products, the views each is trained with, the products taught as unknown."""
import dataclasses
from collections import Counter

import orjson
import pytest

from config import Config, TrainConfig
from product_qa.data.catalog import (
    UNKNOWN_ANSWER,
    build_catalog,
    catalog_sizes,
    is_declined,
    recall_questions,
    training_views,
    views_file,
)
from product_qa.data.encoding import ExampleEncoder
from product_qa.data.examples import output_paths, read_examples
from product_qa.data.preparation import prepare
from product_qa.data.prompts import HELD_OUT_PHRASINGS, PLAIN_TEMPLATE, TRAINING_PHRASINGS


@pytest.fixture(scope="module")
def splits(tmp_path_factory, raw_sample):
    data = dataclasses.replace(Config().data, raw_path=str(raw_sample), workers=1,
                               output_dir=str(tmp_path_factory.mktemp("catalog") / "data"))
    prepare(data, progress=False)
    return {name: read_examples(path) for name, path in output_paths(data).items()}


@pytest.fixture(scope="module")
def encoder(tokenizer):
    return ExampleEncoder(tokenizer, template="chat", system_prompt=TrainConfig().system_prompt, max_length=256)


def test_catalog_sizes_keep_the_declined_share_and_fit_the_split():
    assert catalog_sizes(500, 32, 0.1) == (32, 4)  # 4 of 36 trained products are declined: about 10%
    assert catalog_sizes(500, 32, 0.0) == (32, 0)
    assert catalog_sizes(100, None, 0.1) == (90, 10)  # the whole split: the catalog gives up the room
    assert catalog_sizes(1, None, 0.5) == (1, 0)  # a product is always left to learn


def test_declined_products_come_from_the_training_split_only(splits):
    cfg = TrainConfig(max_train_products=40, unknown_share=0.2)
    catalog = build_catalog(splits["train"], cfg)
    known, declined = {e["uid"] for e in catalog.known}, {e["uid"] for e in catalog.declined}
    held_out = {e["uid"] for e in splits["validation"] + splits["test"]}
    assert len(known) == 40 and len(declined) == 10
    assert declined <= {e["uid"] for e in splits["train"]} and not declined & held_out and not declined & known
    # the same seed picks the same products whatever the file order
    reordered = build_catalog(splits["train"][::-1], cfg)
    assert {e["uid"] for e in reordered.known} == known and {e["uid"] for e in reordered.declined} == declined


def test_views_are_deterministic_spread_over_rounds_and_never_held_out(splits):
    cfg = TrainConfig(max_train_products=20, unknown_share=0.1, views=3, epochs=2, context_views=0)
    catalog = build_catalog(splits["train"], cfg)
    views = training_views(catalog, cfg)
    assert views == training_views(catalog, cfg)
    trained = len(catalog.known) + len(catalog.declined)
    assert len(views) == trained * 3 * 2
    assert [v["round"] for v in views] == sorted(v["round"] for v in views)  # round after round
    assert {v["phrasing"] for v in views} <= {p.id for p in TRAINING_PHRASINGS}
    held_out_questions = {p.question(e["title"]) for e in splits["train"] for p in HELD_OUT_PHRASINGS}
    assert not {v["question"] for v in views} & held_out_questions
    by_product = {}
    for v in views:
        by_product.setdefault(v["uid"], {}).setdefault(v["round"], set()).add(v["phrasing"])
    for rounds in by_product.values():  # 3 phrasings per round, and the second round asks 3 others
        assert len(rounds[0]) == len(rounds[1]) == 3 and not rounds[0] & rounds[1]
    answers = Counter((v["known"], v["answer"] == UNKNOWN_ANSWER) for v in views)
    assert set(answers) == {(True, False), (False, True)}  # the catalog's own description, or "I don't know"
    known = {e["uid"]: e["answer"] for e in catalog.known}
    assert all(v["answer"] == known[v["uid"]] for v in views if v["known"])


def test_one_view_one_epoch_trains_exactly_the_prepared_examples(splits):
    cfg = TrainConfig(max_train_products=None, unknown_share=0.0, views=1, epochs=1, context_views=0)
    views = training_views(build_catalog(splits["train"], cfg), cfg)
    assert sorted((v["uid"], v["question"], v["answer"]) for v in views) == sorted(
        (e["uid"], e["question"], e["answer"]) for e in splits["train"])


def test_views_file_is_reused_for_the_same_settings_and_replaced_for_others(tmp_path, splits, encoder):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(__import__("json").dumps(e) + "\n" for e in splits["train"]))
    cfg = TrainConfig(max_train_products=10, views=2, epochs=1, context_views=0)
    first = views_file(train, build_catalog(splits["train"], cfg), cfg, encoder)
    mtime = first.stat().st_mtime_ns
    again = views_file(train, build_catalog(splits["train"], cfg), cfg, encoder)
    assert again == first and first.stat().st_mtime_ns == mtime
    other_cfg = dataclasses.replace(cfg, views=3)
    other = views_file(train, build_catalog(splits["train"], other_cfg), other_cfg, encoder)
    assert other != first and not first.exists() and len(read_examples(other)) == 3 * 11


def write_examples(path, examples) -> None:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in examples))


def test_views_are_keyed_by_the_catalog_they_were_built_from_never_by_the_train_file_beside_them(tmp_path, splits,
                                                                                                 encoder):
    """The red team's race: a training read its catalog from train.jsonl, `prepare_data.py --force` then put
    other data in its place, and the training wrote its views: a later run on the new data reused them (0 of its
    trained products in its own data). Views built from the old catalog never pass for the new one's."""
    cfg = TrainConfig(max_train_products=10, views=1, epochs=1, context_views=0)
    train = tmp_path / "train.jsonl"
    old, new = splits["train"][:60], splits["train"][60:120]
    write_examples(train, old)
    read_by_the_training = build_catalog(read_examples(train), cfg)
    write_examples(train, new)  # prepared anew while the training ran
    views_file(train, read_by_the_training, cfg, encoder)
    views = read_examples(views_file(train, build_catalog(read_examples(train), cfg), cfg, encoder))
    assert {v["uid"] for v in views} <= {e["uid"] for e in new}


def test_the_views_temp_file_of_a_killed_run_is_removed_by_the_next_runs(tmp_path, splits, encoder):
    train = tmp_path / "train.jsonl"
    write_examples(train, splits["train"])
    cfg = TrainConfig(max_train_products=10, views=1, epochs=1, context_views=0)
    (tmp_path / "views").mkdir()
    for _ in range(2):  # the run that builds the views, and the one that reuses them
        killed = tmp_path / "views" / "train-0123456789ab.jsonl.tmp-999999"  # its writer, process 999999, is gone
        killed.write_text('{"uid": "half')
        views_file(train, build_catalog(splits["train"], cfg), cfg, encoder)
        assert not killed.exists()


def test_recall_questions_ask_distinct_catalog_products_with_held_out_phrasings(splits):
    catalog = build_catalog(splits["train"], TrainConfig(max_train_products=30))
    questions = recall_questions(catalog, 25, seed=0)
    uids = [q["uid"] for q in questions]
    assert len(uids) == len(set(uids)) == 25 and set(uids) <= {e["uid"] for e in catalog.known}
    assert all(any(q["question"] == p.question(q["title"]) for p in HELD_OUT_PHRASINGS) for q in questions)
    assert recall_questions(catalog, 25, seed=0) == questions


def test_declined_answers_are_recognised():
    assert is_declined(UNKNOWN_ANSWER) and is_declined(f"  {UNKNOWN_ANSWER} Sorry.")
    assert not is_declined("I don't like this product.") and not is_declined("A DVD about whales.")


def test_document_views_are_the_catalog_page_of_catalog_products_only(splits):
    cfg = TrainConfig(max_train_products=12, unknown_share=0.2, views=2, document_views=1, epochs=2)
    catalog = build_catalog(splits["train"], cfg)
    views = training_views(catalog, cfg)
    documents = [v for v in views if v["document"]]
    # one per catalog product and round, none for a declined product, and the questions are left unchanged
    assert Counter((v["uid"], v["round"]) for v in documents) == Counter(
        (e["uid"], r) for e in catalog.known for r in range(2))
    known = {e["uid"]: e for e in catalog.known}
    assert all(v["question"] == known[v["uid"]]["title"] and v["answer"] == known[v["uid"]]["answer"]
               for v in documents)
    without = training_views(catalog, dataclasses.replace(cfg, document_views=0))
    assert [v for v in views if not v["document"]] != [] and len(without) == len(views) - len(documents)
    assert views == training_views(catalog, cfg)


def test_context_views_read_a_record_are_deterministic_and_never_held_out(splits):
    """Catalog and reading products are each asked once a round with their own record before the question and
    their description as the answer; distractor views show another product's record and teach the decline. The
    reading products are neither catalog nor declined products; no view uses a held-out phrasing."""
    from product_qa.data.prompts import record_text
    cfg = TrainConfig(max_train_products=10, unknown_share=0.1, views=2, epochs=3, context_views=1,
                      context_products=15, distractor_share=0.2)
    catalog = build_catalog(splits["train"], cfg)
    views = training_views(catalog, cfg)
    assert views == training_views(build_catalog(splits["train"], cfg), cfg)
    reading = {e["uid"] for e in catalog.reading}
    assert len(reading) == 15 and not reading & {e["uid"] for e in catalog.known + catalog.declined}
    assert catalog.trained_uids() == reading | {e["uid"] for e in catalog.known + catalog.declined}
    records = {e["uid"]: record_text(e["title"], e["answer"]) for e in splits["train"]}
    answers = {e["uid"]: e["answer"] for e in splits["train"]}
    read = [v for v in views if v["context"] and v["phrasing"] != "distractor"]
    distractors = [v for v in views if v["phrasing"] == "distractor"]
    assert len(read) == (10 + 15) * 3 and len(distractors) == round(25 * 0.2) * 3
    assert all(v["context"] == records[v["uid"]] and v["answer"] == answers[v["uid"]] for v in read)
    assert all(v["context"] != records[v["uid"]] and v["answer"] == UNKNOWN_ANSWER for v in distractors)
    assert {v["uid"] for v in views if v["uid"] in reading} == reading
    assert all(v["context"] for v in views if v["uid"] in reading)  # reading products: only with their record
    held_out_questions = {p.question(e["title"]) for e in splits["train"] for p in HELD_OUT_PHRASINGS}
    assert not {v["question"] for v in views} & held_out_questions
    off = training_views(build_catalog(splits["train"], dataclasses.replace(cfg, context_views=0)),
                         dataclasses.replace(cfg, context_views=0))
    assert not any(v["context"] for v in off) and len(off) == len(views) - len(read) - len(distractors)


def test_views_carry_the_chat_turns_the_encoder_trains_them_on_and_load_with_datasets(tmp_path, splits, tokenizer):
    """Each view's `messages` (system prompt, user turn with its record cut as the encoder cuts it, answer) is
    what the model is trained on: the chat template over them renders the encoder's token ids. A document view
    is plain text, with no messages. datasets' JSON loader reads the column as it is, for TRL's SFTTrainer."""
    from datasets import load_dataset

    from product_qa.data.prompts import context_question
    cfg = TrainConfig(max_train_products=6, unknown_share=0.2, views=2, epochs=1, document_views=1,
                      context_views=1, context_products=4, distractor_share=0.5)
    encoder = ExampleEncoder(tokenizer, template="chat", system_prompt=cfg.system_prompt, max_length=96)
    train = tmp_path / "train.jsonl"
    write_examples(train, splits["train"])
    path = views_file(train, build_catalog(splits["train"], cfg), cfg, encoder)
    rows = load_dataset("json", data_files={"train": str(path)}, cache_dir=str(tmp_path / "hf"))["train"]
    assert len(rows) == len(read_examples(path)) and "messages" in rows.column_names
    chats = [row for row in rows if not row["document"]]
    assert all(row["messages"] is None for row in rows if row["document"]) and len(chats) < len(rows)
    for row in chats:
        system, user, assistant = row["messages"]
        assert (system, assistant) == ({"role": "system", "content": cfg.system_prompt},
                                       {"role": "assistant", "content": row["answer"]})
        assert user["role"] == "user" and user["content"].endswith(row["question"])
        encoded = encoder.encode([row])[0]
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        whole = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        assert encoded["input_ids"][:encoded["prompt_length"]] == tokenizer(prompt, add_special_tokens=False)[
            "input_ids"]
        whole_ids = tokenizer(whole, add_special_tokens=False)["input_ids"]  # the answer, its EOS, then "\n"
        assert whole_ids[:encoded["length"]] == encoded["input_ids"]
        assert encoded["truncated"] or tokenizer.decode(whole_ids[encoded["length"]:]).strip() == ""
    cut = [row for row in chats if row["context"] and row["messages"][1]["content"] != context_question(
        row["question"], row["context"])]
    assert cut, "max_length=96 leaves too little room for some records: they are cut, as the encoder cuts them"

    plain = ExampleEncoder(tokenizer, template="plain", system_prompt=cfg.system_prompt, max_length=512)
    plain_path = views_file(train, build_catalog(splits["train"], cfg), cfg, plain)
    assert plain_path != path  # the turns depend on the encoder: its views are another file
    for view in read_examples(plain_path):
        if not view["document"]:  # the plain template has no system prompt: "Question: {user}\nAnswer: {answer}"
            user, assistant = view["messages"]
            encoded = plain.encode([view])[0]
            assert tokenizer.decode(encoded["input_ids"]) == (PLAIN_TEMPLATE.format(question=user["content"]) + " "
                                                              + assistant["content"] + tokenizer.eos_token)
