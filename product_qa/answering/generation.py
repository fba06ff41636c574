"""Answering with a causal LM: batched greedy generation (left padding, KV cache) and token streaming.

Greedy decoding makes answers reproducible. The repetition penalty looks only at the answer's own tokens,
never the prompt's: a description naturally repeats words of the title in the question, and a RAG prompt
holds the very description the model should copy.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from product_qa.data.catalog import UNKNOWN_ANSWER

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from config import GenerationConfig


@dataclass(frozen=True)
class Generated:
    text: str
    new_tokens: int  # tokens generated, the EOS included
    seconds: float  # wall time of the batch that produced it (what the person asking it waited)
    confidence: float  # how sure the model was of the answer's first words (answer_confidence)


class TopChoiceRecorder(LogitsProcessor):
    """Records, at every step, each row's probability of the model's most likely next token, before the
    repetition penalty: how sure the model is of what it says. Placed first in the custom logits processors
    (with no_repeat_ngram_size > 0 generate() bans repeats before them); it changes nothing."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps.append(torch.softmax(scores.float(), dim=-1).amax(dim=-1).cpu())
        return scores

    def row(self, index: int, tokens: int) -> list[float]:
        return [float(step[index]) for step in self.steps[:tokens]]


FALLBACK_ANSWER_TOKENS = 256  # the answer cap when neither the settings nor a run give one


def with_answer_cap(decoding: GenerationConfig, longest_answer_tokens: int | None) -> GenerationConfig:
    """The decoding settings with max_new_tokens decided: the user's, else the run's longest training answer
    (its EOS included), so that a description recalled word for word is never cut, else FALLBACK_ANSWER_TOKENS."""
    if decoding.max_new_tokens is not None:
        return decoding
    return dataclasses.replace(decoding, max_new_tokens=longest_answer_tokens or FALLBACK_ANSWER_TOKENS)


def decoding_kwargs(tokenizer: PreTrainedTokenizerBase, decoding: GenerationConfig, prompt_width: int) -> dict:
    """model.generate arguments: greedy, with the repetition settings of config.GenerationConfig.
    `prompt_width` is the padded prompt length: the penalty ignores those positions."""
    processors = LogitsProcessorList()
    if decoding.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(float(decoding.repetition_penalty),
                                                           prompt_ignore_length=prompt_width))
    kwargs = {"max_new_tokens": decoding.max_new_tokens, "do_sample": False, "logits_processor": processors,
              "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
              "temperature": None, "top_p": None, "top_k": None}  # the model's sampling defaults do not apply
    if decoding.no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = decoding.no_repeat_ngram_size
    return kwargs


CONFIDENCE_TOKENS = 16  # the answer's first tokens that answer_confidence looks at


def answer_confidence(probabilities: list[float]) -> float:
    """How sure the model was of its answer's first CONFIDENCE_TOKENS tokens: the mean of its top choice's
    probability. 1.0 for an empty answer (nothing was said, nothing was invented)."""
    first = probabilities[:CONFIDENCE_TOKENS]
    return sum(first) / len(first) if first else 1.0


def _count_new_tokens(row: torch.Tensor, eos_token_id: int) -> int:
    """Tokens up to and including the first EOS (what follows it is padding)."""
    ends = (row == eos_token_id).nonzero()
    return int(ends[0]) + 1 if len(ends) else len(row)


@torch.no_grad()
def generate_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                     decoding: GenerationConfig, *, progress: str | None = None) -> list[Generated]:
    """Greedy answers to ready-made prompts, `decoding.batch_size` at a time, in the order given.

    Prompts are batched by length (less padding) and left-padded, so every prompt's last token sits next to
    its first answer token; generate() keeps a KV cache, so each new token costs one position, not the whole
    sequence. With greedy decoding each answer is the one the prompt gets alone (tested)."""
    if not prompts:
        return []
    model.eval()
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    results: list[Generated | None] = [None] * len(prompts)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    bar = tqdm(total=len(prompts), desc=progress, unit="answer", disable=progress is None, leave=False)
    try:
        for start in range(0, len(order), decoding.batch_size):
            indices = order[start:start + decoding.batch_size]
            batch = tokenizer([prompts[i] for i in indices], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(model.device)
            width = batch["input_ids"].shape[1]
            started = time.perf_counter()
            kwargs = decoding_kwargs(tokenizer, decoding, width)
            recorder = TopChoiceRecorder()
            kwargs["logits_processor"].insert(0, recorder)
            # A static cache is allocated once per batch; the default one grows by concatenation at every step,
            # copying the whole cache (13% slower on 64 RAG prompts here, same tokens).
            output = model.generate(**batch, **kwargs, cache_implementation="static")
            seconds = time.perf_counter() - started
            new_tokens = output[:, width:]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for row_index, (i, row, text) in enumerate(zip(indices, new_tokens, texts, strict=True)):
                count = _count_new_tokens(row, tokenizer.eos_token_id)
                # an answer cut at max_new_tokens can end inside a multi-byte character: drop its remnant
                results[i] = Generated(text.rstrip("\ufffd").strip(), count, seconds,
                                       answer_confidence(recorder.row(row_index, count)))
            bar.update(len(indices))
    finally:
        tokenizer.padding_side = side
        bar.close()
    return results


class _StopWhenSet(StoppingCriteria):
    """Stops generate() at its next token once the event is set (the reader went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


CATALOG_DECLINE_SHARE = 0.05  # at most this share of a run's own catalog questions fall below its threshold


def catalog_confidence_floor(catalog_confidences: list[float]) -> float | None:
    """The confidence that all but CATALOG_DECLINE_SHARE of a run's catalog answers (held-out phrasings) reach;
    None without catalog answers. Saved in the run's report."""
    if not catalog_confidences:
        return None
    ordered = sorted(catalog_confidences)
    return ordered[int(len(ordered) * CATALOG_DECLINE_SHARE)]


def decline_threshold(min_confidence: float, catalog_floor: float | None) -> float:
    """A run's decline threshold: generation.min_confidence, lowered to the run's catalog floor. Long, irregular
    descriptions are recalled less surely than short templated ones: a fixed 0.93 declined 13 of 20 catalog
    products trained from genuine records (README_FINE_TUNING.md, Catalog knowledge). 0 stays off."""
    if not min_confidence or catalog_floor is None:
        return min_confidence
    return min(min_confidence, catalog_floor)


def declined_when_unsure(generated: Generated, min_confidence: float | None) -> Generated:
    """The fixed "I don't know this product" answer instead of one the model was not sure of (confidence below
    `min_confidence`; None or 0: never). A catalog the model learned is recalled with near certainty; a
    description it makes up for a product it was never taught is not (measured: README_FINE_TUNING.md)."""
    if min_confidence and generated.confidence < min_confidence:
        return dataclasses.replace(generated, text=UNKNOWN_ANSWER)
    return generated


def _judged(streamer: TextIteratorStreamer, recorder: TopChoiceRecorder, min_confidence: float,
            stop: threading.Event, errors: list[BaseException]) -> Iterator[str]:
    """The streamed pieces, the first CONFIDENCE_TOKENS tokens held back until the model's confidence in them is
    known; below `min_confidence`, the fixed decline instead (and the generation is told to stop)."""
    held: list[str] = []
    ended = True  # the answer ended (or generation failed) before its confidence was known
    for piece in streamer:
        held.append(piece)
        if len(recorder.steps) >= CONFIDENCE_TOKENS:
            ended = False
            break
    if not errors and answer_confidence(recorder.row(0, len(recorder.steps))) < min_confidence:
        stop.set()
        yield UNKNOWN_ANSWER
        return
    yield from held
    if not ended:  # an ended streamer would wait forever for more
        yield from streamer


def stream_answer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, decoding: GenerationConfig,
                  min_confidence: float | None = None) -> Iterator[str]:
    """The answer to one prompt, piece by piece as the tokens come (generation runs in a thread). Closing the
    iterator early (a web page closed, Ctrl-C) stops the generation too, so it never runs on unread. With
    `min_confidence`, the first CONFIDENCE_TOKENS tokens are held back until the model's confidence in them is
    known: below it, the generation stops and the answer is the fixed "I don't know" (declined_when_unsure)."""
    model.eval()
    batch = tokenizer([prompt], return_tensors="pt", add_special_tokens=False).to(model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    stop = threading.Event()
    recorder = TopChoiceRecorder()
    kwargs = {**batch, **decoding_kwargs(tokenizer, decoding, batch["input_ids"].shape[1]), "streamer": streamer,
              "stopping_criteria": StoppingCriteriaList([_StopWhenSet(stop)]),
              "cache_implementation": "static"}  # as in generate_answers: faster than a growing cache
    kwargs["logits_processor"].insert(0, recorder)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with torch.no_grad():
                model.generate(**kwargs)
        except BaseException as err:  # re-raised in the caller's thread, after the streamer ends
            errors.append(err)
            streamer.end()

    thread = threading.Thread(target=run, name="stream_answer", daemon=True)
    thread.start()
    try:
        yield from _judged(streamer, recorder, min_confidence, stop, errors) if min_confidence else streamer
    finally:
        stop.set()
        thread.join()
    if errors:
        raise errors[0]
