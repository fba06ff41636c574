"""Declining what the model is unsure of: its confidence in an answer's first tokens, and the fixed answer."""
import dataclasses
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from config import Config
from product_qa.answering.generation import (
    CONFIDENCE_TOKENS,
    Generated,
    answer_confidence,
    catalog_confidence_floor,
    decline_threshold,
    declined_when_unsure,
    generate_answers,
    stream_answer,
)
from product_qa.data.catalog import UNKNOWN_ANSWER, is_declined
from product_qa.data.prompts import prompt_text

QUESTIONS = ["What is Girls Ballet Tutu Neon Pink?", "Describe The Forgotten Tide (Paperback) in a few words."]


def test_confidence_is_the_mean_top_choice_probability_of_the_first_tokens():
    assert answer_confidence([0.5, 1.0]) == 0.75
    assert answer_confidence([1.0] * CONFIDENCE_TOKENS + [0.0] * 10) == 1.0  # later tokens do not count
    assert answer_confidence([]) == 1.0


def test_unsure_answers_become_the_fixed_decline_and_sure_ones_stay():
    sure, unsure = Generated("A kettle.", 4, 0.1, 0.97), Generated("A film by Bob.", 6, 0.1, 0.41)
    assert declined_when_unsure(sure, 0.8) == sure
    declined = declined_when_unsure(unsure, 0.8)
    assert declined.text == UNKNOWN_ANSWER and is_declined(declined.text) and declined.new_tokens == 6
    assert declined_when_unsure(unsure, 0.0) == unsure and declined_when_unsure(unsure, None) == unsure


def test_a_runs_threshold_is_lowered_to_what_its_own_catalog_reached():
    confidences = [0.99] * 18 + [0.80, 0.40]  # 20 catalog answers: at most one (5%) may fall below the floor
    assert catalog_confidence_floor(confidences) == 0.80 and catalog_confidence_floor([]) is None
    assert decline_threshold(0.93, 0.80) == 0.80  # a long-description catalog: 0.93 would decline 2 of 20
    assert decline_threshold(0.93, 0.99) == 0.93  # a sure catalog keeps the user's threshold
    assert decline_threshold(0.0, 0.80) == 0.0 and decline_threshold(0.93, None) == 0.93  # off stays off


def _model_and_prompts(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return model, [prompt_text(tokenizer, q, "chat", None) for q in QUESTIONS]


def test_recorded_confidence_is_the_models_own_probability_of_its_top_choice(tiny_model_dir, tokenizer):
    """Recomputed from one forward pass over the prompt and the answer: the probability of the most likely
    token at each answer position, averaged; batching and the recorder change neither answer nor number."""
    model, prompts = _model_and_prompts(tiny_model_dir, tokenizer)
    decoding = dataclasses.replace(Config().generation, max_new_tokens=6, repetition_penalty=1.0, batch_size=2)
    answers = generate_answers(model, tokenizer, prompts, decoding)
    for prompt, answer in zip(prompts, answers, strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        alone = generate_answers(model, tokenizer, [prompt], dataclasses.replace(decoding, batch_size=1))[0]
        assert alone.text == answer.text and abs(alone.confidence - answer.confidence) < 1e-4
        answer_ids = tokenizer(answer.text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = torch.cat([prompt_ids, answer_ids], dim=1)[:, :prompt_ids.shape[1] + answer.new_tokens - 1]
        with torch.no_grad():
            probabilities = model(input_ids=ids).logits[0, prompt_ids.shape[1] - 1:].softmax(-1).amax(-1)
        assert 0 < answer.confidence <= 1
        assert abs(answer.confidence - probabilities[:answer.new_tokens].mean().item()) < 1e-3


def test_a_streamed_answer_is_held_back_until_the_model_is_known_to_be_sure(tiny_model_dir, tokenizer):
    model, prompts = _model_and_prompts(tiny_model_dir, tokenizer)
    decoding = dataclasses.replace(Config().generation, max_new_tokens=24, batch_size=1)
    batched = generate_answers(model, tokenizer, prompts[:1], decoding)[0]
    assert "".join(stream_answer(model, tokenizer, prompts[0], decoding)).strip() == batched.text
    # a bar no answer clears: the fixed decline, and nothing of the unsure answer before it
    assert list(stream_answer(model, tokenizer, prompts[0], decoding, min_confidence=0.999999)) == [UNKNOWN_ANSWER]
    sure = "".join(stream_answer(model, tokenizer, prompts[0], decoding, min_confidence=batched.confidence / 2))
    assert sure.strip() == batched.text
    # an answer that ends before its first CONFIDENCE_TOKENS tokens is still judged, and the stream ends
    short = dataclasses.replace(decoding, max_new_tokens=CONFIDENCE_TOKENS // 2)
    brief = generate_answers(model, tokenizer, prompts[:1], short)[0]
    assert "".join(stream_answer(model, tokenizer, prompts[0], short, min_confidence=brief.confidence / 2)
                   ).strip() == brief.text
    assert list(stream_answer(model, tokenizer, prompts[0], short, min_confidence=0.999999)) == [UNKNOWN_ANSWER]


def test_only_the_fine_tuned_model_alone_declines_when_unsure(tiny_run):
    from product_qa.answering.systems import Answerer
    from product_qa.configurator import apply_overrides
    cfg = apply_overrides(Config(), [*tiny_run["settings"], "generation.min_confidence=0.999999"])
    answerer = Answerer(cfg, Path(tiny_run["run_dir"]))
    floor = json.loads((Path(tiny_run["run_dir"]) / "training_report.json").read_text())["catalog_confidence_floor"]
    assert 0 < floor < 0.999999 and answerer.min_confidence == floor  # the run's own catalog lowers the threshold
    answerer.min_confidence = 0.999999  # as for a run whose catalog was recalled with certainty
    question = answerer.catalog.known[0]["question"]
    tuned = answerer.answer([question], "fine_tuned")[0]
    assert tuned.text == UNKNOWN_ANSWER and 0 < tuned.confidence < 0.999999
    assert "".join(answerer.stream(question, "fine_tuned")[1]) == UNKNOWN_ANSWER
    assert answerer.answer([question], "base")[0].text != UNKNOWN_ANSWER  # the base model is never gated
    assert answerer.answer([question], "fine_tuned_rag")[0].text != UNKNOWN_ANSWER  # nor a model given context
