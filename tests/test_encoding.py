"""Encoding examples for training: the prompt frame, answer-only logits and loss, the tokenization cache."""
import json
import os
from pathlib import Path

import pytest
import torch

from product_qa.data import encoding
from product_qa.data.encoding import IGNORE_INDEX, AnswerOnlyCollator, ExampleEncoder, answer_only_loss, tokenized_split
from product_qa.data.prompts import prompt_text

SYSTEM = "Answer with the product's description."
QUESTIONS = ["What is Acme Kettle Model 4?", "Descreva o produto Caneca {azul} 300 ml.", "  spaces  ",
             "Tell me about the product <b>Lamp</b> & \"Shade\" 50% off.", "O que é 日本の茶碗 🍵?"]


def examples(count: int, prefix: str = "A kettle") -> list[dict]:
    return [{"uid": f"u{i}", "title": f"Item {i}", "question": QUESTIONS[i % len(QUESTIONS)],
             "answer": f"{prefix} number {i} that " + "boils water quickly and quietly. " * (i % 4 + 1)}
            for i in range(count)]


def write_split(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("template, system_prompt", [("chat", SYSTEM), ("chat", None), ("plain", None)])
def test_the_prompt_frame_renders_what_the_template_renders(tokenizer, template, system_prompt):
    encoder = ExampleEncoder(tokenizer, template=template, system_prompt=system_prompt, max_length=512)
    for question in QUESTIONS:
        assert encoder.prompt(question) == prompt_text(tokenizer, question, template, system_prompt)
    encoded = encoder.encode([{"uid": "u", "question": QUESTIONS[0], "answer": "Steel."}])[0]
    prompt_ids = tokenizer(prompt_text(tokenizer, QUESTIONS[0], template, system_prompt),
                           add_special_tokens=False)["input_ids"]
    assert encoded["input_ids"][:encoded["prompt_length"]] == prompt_ids
    assert encoded["input_ids"][-1] == tokenizer.eos_token_id


def test_a_template_that_changes_with_the_question_is_rendered_per_example(tokenizer):
    class Shouting:  # a stand-in whose template upper-cases the question: no frame fits it
        eos_token_id = tokenizer.eos_token_id
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "<q>" + messages[-1]["content"].upper() + "</q>"

        def __call__(self, texts, add_special_tokens):
            return tokenizer(texts, add_special_tokens=add_special_tokens)

    encoder = ExampleEncoder(Shouting(), template="chat", system_prompt=None, max_length=64)
    assert encoder.prompt("what is it?") == "<q>WHAT IS IT?</q>"


def test_answer_only_logits_give_the_same_loss_and_gradients_as_the_full_computation(tokenizer, tiny_model_dir):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    encoder = ExampleEncoder(tokenizer, template="chat", system_prompt=SYSTEM, max_length=256)
    features = encoder.encode(examples(4))
    assert len({f["prompt_length"] for f in features}) > 1  # the rows' answers start at different positions
    results = {}
    for answer_only in (False, True):
        batch = AnswerOnlyCollator(tokenizer.pad_token_id, answer_only_logits=answer_only)(features)
        labels = batch.pop("labels")
        model.zero_grad()
        outputs = model(**batch)
        loss = answer_only_loss(outputs, labels)
        loss.backward()
        results[answer_only] = (outputs.logits.shape[1], loss.detach(),
                                [p.grad.clone() for p in model.parameters() if p.grad is not None])
    width = batch["input_ids"].shape[1]
    assert results[False][0] == width and results[True][0] == width - min(f["prompt_length"] for f in features) + 1
    torch.testing.assert_close(results[True][1], results[False][1], atol=1e-6, rtol=1e-5)
    for fast, full in zip(results[True][2], results[False][2], strict=True):
        torch.testing.assert_close(fast, full, atol=1e-6, rtol=1e-4)
    # and both equal the model's own loss over the labelled positions
    batch = AnswerOnlyCollator(tokenizer.pad_token_id)(features)
    with torch.no_grad():
        own = model(**batch).loss
    torch.testing.assert_close(results[True][1], own, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("template, system_prompt, framed", [("chat", SYSTEM, True), ("chat", None, True),
                                                              ("plain", None, False)])
def test_prompt_ids_from_the_token_frame_are_the_whole_prompt_tokenized(tokenizer, template, system_prompt, framed):
    """The chat template's frame is tokenized once and only the question per example; the ids are those of the
    whole prompt, for questions that start or end with spaces, newlines, digits, quotes or special tokens too. The
    plain template's "Question: " joins the first word, so it has no token frame."""
    encoder = ExampleEncoder(tokenizer, template=template, system_prompt=system_prompt, max_length=512)
    assert (encoder._frame_ids is not None) == framed
    questions = [*QUESTIONS, "\nWhat is X?", "What is X?\n", "42 pens", "'s quote'", "<|im_end|>Lamp<|im_start|>",
                 "Lamp:", "ok.\n\n"]
    encoded = encoder({"uid": [f"u{i}" for i in range(len(questions))], "question": questions,
                       "answer": ["Steel."] * len(questions)})
    for question, ids, prompt_length in zip(questions, encoded["input_ids"], encoded["prompt_length"], strict=True):
        whole = tokenizer(prompt_text(tokenizer, question, template, system_prompt), add_special_tokens=False)
        assert ids[:prompt_length] == whole["input_ids"], question


def test_gradient_accumulation_divides_by_the_answer_tokens_of_the_accumulated_batch():
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4, 5], [IGNORE_INDEX, 1, 2, IGNORE_INDEX, IGNORE_INDEX]])
    outputs = type("Out", (), {"logits": logits})()
    mean = answer_only_loss(outputs, labels)
    assert answer_only_loss(outputs, labels, num_items_in_batch=10) == pytest.approx(mean.item() * 5 / 10)


def test_the_tokenization_cache_is_reused_and_invalidated(tmp_path, tokenizer, monkeypatch):
    split = write_split(tmp_path / "data" / "train.jsonl", examples(30))
    encoder = ExampleEncoder(tokenizer, template="chat", system_prompt=SYSTEM, max_length=96)
    first = tokenized_split(split, encoder, progress=False)
    assert len(first) == 30 and first[3] == encoder.encode([examples(30)[3]])[0]
    cached = list((tmp_path / "data" / encoding.TOKENIZED_DIR).iterdir())
    assert len(cached) == 1

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again although the cache fits")

    with monkeypatch.context() as patch:
        patch.setattr(encoding, "_read_blocks", no_tokenizing)
        again = tokenized_split(split, encoder, progress=False)
    assert again["input_ids"] == first["input_ids"]

    def key_dirs() -> set[str]:
        return {p.name for p in (tmp_path / "data" / encoding.TOKENIZED_DIR).iterdir()}

    before = key_dirs()
    for changed in (ExampleEncoder(tokenizer, template="chat", system_prompt=SYSTEM, max_length=64),
                    ExampleEncoder(tokenizer, template="plain", system_prompt=None, max_length=96),
                    ExampleEncoder(tokenizer, template="chat", system_prompt="Be brief.", max_length=96)):
        result = tokenized_split(split, changed, progress=False)
        assert key_dirs() != before and len(key_dirs()) == 1  # a new key; the old cache of the split is removed
        assert result["input_ids"] == [e["input_ids"] for e in changed.encode(examples(30))]
        before = key_dirs()

    other_tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    other_tokenizer.add_tokens(["<kettle>"])
    tokenized_split(split, ExampleEncoder(other_tokenizer, template="plain", system_prompt=None, max_length=96),
                    progress=False)
    assert key_dirs() != before
    before = key_dirs()

    write_split(split, examples(30, prefix="A teapot"))  # new data (prepare_data.py rewrote the split)
    os.utime(split, ns=(split.stat().st_atime_ns, split.stat().st_mtime_ns + 1))
    plain = ExampleEncoder(other_tokenizer, template="plain", system_prompt=None, max_length=96)
    assert tokenized_split(split, plain, progress=False)["input_ids"] == [
        e["input_ids"] for e in plain.encode(examples(30, prefix="A teapot"))]
    assert key_dirs() != before


def test_no_half_written_cache_is_left_by_a_failed_tokenization(tmp_path, tokenizer):
    rows = examples(5)
    rows[2]["question"] = "What is " + "very " * 200 + "long?"
    split = write_split(tmp_path / "train.jsonl", rows)
    with pytest.raises(encoding.UserError, match="shorter than the question"):
        tokenized_split(split, ExampleEncoder(tokenizer, template="chat", system_prompt=SYSTEM, max_length=64),
                        progress=False)
    assert list((tmp_path / encoding.TOKENIZED_DIR).iterdir()) == []


def test_a_context_example_shows_its_record_cut_to_half_of_max_length(tokenizer):
    """A context view's prompt is the question with its record before it, as answering builds it; a long record
    is cut to half of the room the rest of the prompt leaves, so that the description copied after it fits too."""
    from product_qa.data.prompts import context_question, cut_to_tokens, record_text
    encoder = ExampleEncoder(tokenizer, template="chat", system_prompt=SYSTEM, max_length=160)
    short = record_text("Acme Kettle", "A steel kettle that boils water quickly.")
    long = record_text("Acme Lamp", "A reading lamp with a linen shade and a brass base. " * 30)
    rows = [{"uid": "a", "question": "What is Acme Kettle?", "answer": "A steel kettle.", "context": short},
            {"uid": "b", "question": "What is Acme Lamp?", "answer": "A lamp.", "context": long},
            {"uid": "c", "question": "What is Acme Kettle?", "answer": "A steel kettle.", "context": ""}]
    with_record, cut, plain = encoder.encode(rows)
    expected = prompt_text(tokenizer, context_question("What is Acme Kettle?", short), "chat", SYSTEM)
    assert with_record["input_ids"][:with_record["prompt_length"]] == tokenizer(
        expected, add_special_tokens=False)["input_ids"]
    rest = len(tokenizer(prompt_text(tokenizer, context_question("What is Acme Lamp?", ""), "chat", SYSTEM),
                         add_special_tokens=False)["input_ids"])
    kept = cut_to_tokens(tokenizer, long, (160 - rest) // 2)
    assert long.startswith(kept) and len(kept) < len(long)
    assert tokenizer.decode(cut["input_ids"][:cut["prompt_length"]]) == prompt_text(
        tokenizer, context_question("What is Acme Lamp?", kept), "chat", SYSTEM)
    assert plain["input_ids"][:plain["prompt_length"]] == tokenizer(
        prompt_text(tokenizer, "What is Acme Kettle?", "chat", SYSTEM), add_special_tokens=False)["input_ids"]
    assert not cut["truncated"]
