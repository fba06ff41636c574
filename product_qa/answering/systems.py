"""The systems that answer a product question, each model loaded once and shared by test_pipeline.py (the
generation test and the evaluation) and ask.py.

- base: the foundation model, asked the question as it is;
- fine_tuned: the merged model of a fine-tuning run;
- retrieval: no model, the description of the training product the question names (RAG's retriever alone);
- base_rag / fine_tuned_rag: the model, given the retrieved description as context;
- assistant: routes each question (`Answerer.answer`): a matched product is answered by the fine-tuned model
  reading its record (the source named); with no match, a catalog product the model recalls with confidence is
  answered closed-book (its answer must be the description of the catalog product the index found closest);
  otherwise the fixed decline with the closest titles (or, for an ambiguous question, the titles that fit it).

The fine-tuned model is asked exactly as it was trained (chat template, system prompt), and the base model
the same way, so the two differ only in their weights. Answers with a retrieved context name their source
uid; when no indexed title matches the question well enough, they say so instead of describing another product.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from product_qa.answering.generation import (
    Generated,
    decline_threshold,
    declined_when_unsure,
    generate_answers,
    stream_answer,
    with_answer_cap,
)
from product_qa.answering.metrics import EXACT_ROUGE_L, rouge_scores
from product_qa.answering.retrieval import NO_MATCH_MESSAGE, Hit, ProductIndex
from product_qa.data.catalog import UNKNOWN_ANSWER, Catalog, is_declined, read_catalog
from product_qa.data.encoding import ExampleEncoder
from product_qa.data.examples import output_paths, prepared_data_fingerprint
from product_qa.data.prompts import prompt_text, record_text, resolve_template
from product_qa.devices import announce_answering
from product_qa.errors import UserError
from product_qa.io_utils import read_json
from product_qa.modeling import load_inference_model, load_tokenizer, resolve_model_path
from product_qa.runs import check_trained_data
from product_qa.settings import ANSWERING_SYSTEMS, check_section, read_run_report

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from config import Config, GenerationConfig, TrainConfig

Section = TypeVar("Section")  # a config section: DataConfig, ModelConfig, TrainConfig

SYSTEMS = ANSWERING_SYSTEMS
SYSTEM_LABELS = {"assistant": "assistant", "base": "base model", "fine_tuned": "fine-tuned",
                 "retrieval": "retrieval only",
                 "base_rag": "base + RAG", "fine_tuned_rag": "fine-tuned + RAG"}
MODEL_OF = {"base": "base", "fine_tuned": "fine_tuned", "base_rag": "base", "fine_tuned_rag": "fine_tuned"}
RAG_SYSTEMS = ("assistant", "retrieval", "base_rag", "fine_tuned_rag")  # those that search the index
ROUTES = ("record", "closed_book", "declined", "ambiguous")  # how the assistant answered
MODEL_ONLY_SYSTEMS = ("base", "fine_tuned")  # the models alone, asked the question as it is


@dataclass(frozen=True)
class Answer:
    system: str
    text: str  # the answer itself: what the metrics score
    source: Hit | None  # the retrieved product (RAG systems), matched or not
    new_tokens: int
    seconds: float  # what the person asking waited: its share of the retrieval, plus its batch's generation time
    confidence: float | None = None  # the model's confidence in its answer's first tokens (None: no model spoke)
    route: str | None = None  # the assistant's route (ROUTES)


def declined_text(hit: Hit | None) -> str:
    """The assistant's answer when it does not describe a product: the fixed decline and the closest titles, or,
    for an ambiguous question, the titles that fit it. The same sentence in every entry point."""
    if hit is not None and hit.ambiguous:
        return f"{AMBIGUOUS_START}: {'; '.join(hit.suggestions)}. Which one do you mean?"
    if hit is None or not hit.suggestions:
        return UNKNOWN_ANSWER
    return f"{UNKNOWN_ANSWER} Closest titles: {'; '.join(hit.suggestions)}."


AMBIGUOUS_START = "Several products fit this question"


def withheld(text: str) -> bool:
    """The answer describes no product: the decline, RAG's no-match message, or the assistant's question back."""
    return is_declined(text) or text == NO_MATCH_MESSAGE or text.startswith(AMBIGUOUS_START)


def _run_config(run_dir: Path) -> dict:
    saved = read_json(run_dir / "config.json", "run's settings")
    if not isinstance(saved, dict):
        raise UserError(f"{run_dir / 'config.json'}: not a settings object")
    return saved


def _run_section(current: Section, saved: dict, name: str, run_dir: Path) -> Section:
    """Config section `name` as the run saved it (`current`, today's, where the run saved none); settings added
    or removed since then take today's defaults. Its types, choices and ranges are checked as the command line's
    are (a run directory may come from anywhere)."""
    if name not in saved:
        return current
    if not isinstance(saved[name], dict):
        raise UserError(f"{run_dir / 'config.json'}: {name} is not a section of settings")
    names = {f.name for f in dataclasses.fields(current)}
    section = type(current)(**{key: value for key, value in saved[name].items() if key in names})
    try:
        check_section(name, section)
    except UserError as err:
        raise UserError(f"{run_dir / 'config.json'}: {err}") from None
    return section


def run_train_settings(cfg: Config, run_dir: Path) -> TrainConfig:
    """The training settings the run was trained with (its config.json: prompt template, system prompt), checked."""
    return _run_section(cfg.train, _run_config(run_dir), "train", run_dir)


def run_decoding(cfg: Config, train_cfg: TrainConfig, report: dict) -> GenerationConfig:
    """The decoding settings a run answers with: today's, the answer cap following the run's data where
    generation.max_new_tokens is None (its longest training answer, from its report, within its max_length)."""
    longest = report.get("longest_answer_tokens")  # None in a run older than it
    return with_answer_cap(cfg.generation, longest if longest is not None and longest <= train_cfg.max_length
                           else None)


# ------------------------------------------------------------------------------------------------ answerer
class Answerer:
    """Answers questions with any of SYSTEMS. The run's own settings (data, base model, prompt) come from its
    config.json, so a run is evaluated on the data and prompt it was trained with; decoding and RAG settings
    come from the current config."""

    def __init__(self, cfg: Config, run_dir: Path | None) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        saved = _run_config(run_dir) if run_dir else {}
        self.data_cfg = _run_section(cfg.data, saved, "data", run_dir)
        self.model_cfg = _run_section(cfg.model, saved, "model", run_dir)
        # a run directory is data, possibly downloaded: whether code may run, and where models are converted, are
        # the user's settings, never the run's
        self.model_cfg = dataclasses.replace(self.model_cfg, trust_remote_code=cfg.model.trust_remote_code,
                                             cache_dir=cfg.model.cache_dir)
        self.train_cfg = _run_section(cfg.train, saved, "train", run_dir)
        report = read_run_report(run_dir) if run_dir else {}  # its numbers checked before any is used
        self.decoding = run_decoding(cfg, self.train_cfg, report)
        # the fine-tuned model's decline threshold: the user's, lowered to what the run's own catalog reached
        self.min_confidence = decline_threshold(cfg.generation.min_confidence, report.get("catalog_confidence_floor"))
        self.tokenizer = load_tokenizer(self.model_cfg.name, self.model_cfg.cache_dir, self.model_cfg.trust_remote_code)
        self.template = resolve_template(self.tokenizer, self.train_cfg.prompt_template)
        self.encoder = ExampleEncoder(self.tokenizer, template=self.template,
                                      system_prompt=self.train_cfg.system_prompt, max_length=self.train_cfg.max_length)
        self._models: dict[str, PreTrainedModel] = {}
        self._index: ProductIndex | None = None
        self._catalog: Catalog | None = None
        # the fingerprint of the data the run was trained on (None: a run older than it), checked once, before
        # the catalog or the index is first read
        self._trained_on: object = report.get("data_fingerprint")
        self._data_checked = run_dir is None

    @property
    def systems(self) -> tuple[str, ...]:
        """The systems this answerer can run: the fine-tuned ones need a run (the assistant reads records with the
        base model until there is one, and then has no closed-book route)."""
        return SYSTEMS if self.run_dir else tuple(s for s in SYSTEMS if MODEL_OF.get(s) != "fine_tuned")

    def model_of(self, system: str) -> str:
        """Which model answers for `system`: base or fine_tuned."""
        if system == "assistant":
            return "fine_tuned" if self.run_dir else "base"
        return MODEL_OF[system]

    def load(self, systems: list[str]) -> None:
        """Load what these systems need now (models, index), so that answering time measures only answering."""
        for system in systems:
            if system in MODEL_OF or system == "assistant":
                self.model(self.model_of(system))
        if any(s in RAG_SYSTEMS for s in systems):
            _ = self.index  # built now

    def stand_in(self, system: str) -> str:
        """`system`, or before any fine-tuning run the base model's counterpart (fine_tuned -> base, fine_tuned_rag
        -> base_rag): what answers in the fine-tuned model's place (runs.no_run_note says so)."""
        return system if system in self.systems else system.replace("fine_tuned", "base")

    def check_system(self, system: str) -> None:
        if system not in SYSTEMS:
            raise UserError(f"unknown system {system!r}: choose from {', '.join(SYSTEMS)}")
        if system not in self.systems:
            raise UserError(f"no fine-tuned model yet (nothing under {self.cfg.train.output_dir}): run "
                            f"`python fine_tuning_project.py` first, or ask the base model")

    def clean(self, question: str) -> tuple[str, bool]:
        """The question with its spacing tidied, cut to generation.max_question_chars, and whether it was cut."""
        # a command-line argument that is not UTF-8 arrives with lone surrogates, which the tokenizer refuses
        question = " ".join(question.encode("utf-8", "replace").decode("utf-8").split())
        if not question:
            raise UserError('the question is empty: ask about a product, e.g. "What is the Girls Ballet Tutu Neon '
                            'Pink?"')
        limit = self.cfg.generation.max_question_chars
        return question[:limit], len(question) > limit

    def model(self, which: str) -> PreTrainedModel:
        if which not in self._models:
            path = (str(self.run_dir / "merged") if which == "fine_tuned"
                    else resolve_model_path(self.model_cfg.name, self.model_cfg.cache_dir))
            if not self._models:  # where the answers are computed, said once
                announce_answering()
            self._models[which] = load_inference_model(path, self.model_cfg.trust_remote_code)
        return self._models[which]

    @property
    def catalog(self) -> Catalog:
        """The products the run was taught (and those it was taught to decline), as its settings chose them."""
        if self._catalog is None:
            self._check_trained_data()
            self._catalog = read_catalog(output_paths(self.data_cfg)["train"], self.train_cfg)
        return self._catalog

    @property
    def index(self) -> ProductIndex:
        """The index of every product of the run's prepared data (rag.index_splits: the training split by
        default), built once per data set and saved beside it."""
        if self._index is None:
            self._check_trained_data()
            self._index = ProductIndex.open(self.data_cfg, self.cfg.rag)
        return self._index

    def _check_trained_data(self) -> None:
        """The run's prepared data is still the data it was trained on (the fingerprint its report recorded), so
        that its catalog, its index and its scores are about the products it was taught; else one line."""
        if self._data_checked:  # hashing the splits costs about 1.4 s at full size: once a process
            return
        check_trained_data(self._trained_on, prepared_data_fingerprint(self.data_cfg), self.data_cfg.output_dir,
                           self.run_dir, "prepare it again with the settings in the run's config.json, or train a "
                           "new run on it")
        self._data_checked = True

    def prompt(self, question: str, hit: Hit | None = None) -> str:
        """The prompt of `question`; with `hit`, its product's record comes first, cut as training's context
        views were (ExampleEncoder.with_context) unless rag.max_context_tokens says otherwise."""
        if hit is not None:
            question = self.encoder.with_context(question, record_text(hit.title, hit.description),
                                                 self.cfg.rag.max_context_tokens)
        return prompt_text(self.tokenizer, question, self.template, self.train_cfg.system_prompt)

    def answer(self, questions: list[str], system: str, progress: str | None = None) -> list[Answer]:
        """Answers to many questions with one system, batched."""
        self.check_system(system)
        hits: list[Hit | None] = [None] * len(questions)
        started = time.perf_counter()
        if system in RAG_SYSTEMS:
            hits = self.index.search(questions)
        retrieval_seconds = (time.perf_counter() - started) / max(len(questions), 1)
        if system == "retrieval":
            return [Answer(system, _retrieved_answer(hit), hit, 0, retrieval_seconds) for hit in hits]
        if system == "assistant":
            return self._assistant_answers(questions, hits, retrieval_seconds, progress)
        # Questions without a matching product get the no-match message; only the others reach the model.
        asked = [i for i, hit in enumerate(hits) if hit is None or hit.matched]
        by_question: dict[int, Generated] = {}
        if asked:
            generated = generate_answers(self.model(MODEL_OF[system]), self.tokenizer,
                                         [self.prompt(questions[i], hits[i]) for i in asked], self.decoding,
                                         progress=progress)
            if system == "fine_tuned":  # the model alone: it declines what it is unsure of
                generated = [declined_when_unsure(g, self.min_confidence) for g in generated]
            by_question = dict(zip(asked, generated, strict=True))
        return [Answer(system, by_question[i].text, hits[i], by_question[i].new_tokens,
                       by_question[i].seconds + retrieval_seconds, by_question[i].confidence) if i in by_question
                else Answer(system, NO_MATCH_MESSAGE, hits[i], 0, retrieval_seconds)
                for i in range(len(questions))]

    def _assistant_answers(self, questions: list[str], hits: list[Hit], retrieval_seconds: float,
                           progress: str | None) -> list[Answer]:
        """Matched questions: the model reads the record. The others, when there is a run: closed-book, kept only
        when the model is sure of it and it gives back the description of the catalog product the index found
        closest (`_recalls_closest`). The rest, and ambiguous questions, get declined_text."""
        model = self.model(self.model_of("assistant"))
        matched = [i for i, hit in enumerate(hits) if hit.matched]
        closed = [i for i, hit in enumerate(hits)
                  if not (hit.matched or hit.ambiguous or hit.conflict) and self.run_dir]
        by_question: dict[int, Generated] = {}
        if matched:
            by_question |= dict(zip(matched, generate_answers(
                model, self.tokenizer, [self.prompt(questions[i], hits[i]) for i in matched], self.decoding,
                progress=progress), strict=True))
        if closed:
            generated = generate_answers(model, self.tokenizer, [self.prompt(questions[i]) for i in closed],
                                         self.decoding, progress=progress)
            by_question |= dict(zip(closed, [declined_when_unsure(g, self.min_confidence) for g in generated],
                                    strict=True))
        answers = []
        for i, hit in enumerate(hits):
            got = by_question.get(i)
            seconds = (got.seconds if got else 0.0) + retrieval_seconds
            tokens, confidence = (got.new_tokens, got.confidence) if got else (0, None)
            if hit.matched:
                answers.append(Answer("assistant", got.text, hit, tokens, seconds, confidence, "record"))
            elif got and not is_declined(got.text) and self._recalls_closest(got.text, hit):
                answers.append(Answer("assistant", got.text, dataclasses.replace(hit, matched=True), tokens, seconds,
                                      confidence, "closed_book"))
            else:
                answers.append(Answer("assistant", declined_text(hit), hit, tokens, seconds, confidence,
                                      "ambiguous" if hit.ambiguous else "declined"))
        return answers

    def _recalls_closest(self, text: str, hit: Hit) -> bool:
        """A closed-book answer is given only where two signals agree: the model gives back a catalog product's
        description, and that product is the index's closest to the question, short of the threshold but not in
        conflict with it (a paraphrased title). A memorized description said for another title is declined."""
        known = self.recalled(text)
        return known is not None and known.uid == hit.uid and not hit.conflict

    def recalled(self, text: str) -> Hit | None:
        """The catalog product whose description `text` gives back (ROUGE-L >= metrics.EXACT_ROUGE_L), as the
        answer's source; None for a description the model made up, however sure of it it was."""
        known = self.catalog.known
        if not known:
            return None
        scores = [s["rougeL"] for s in rouge_scores([text] * len(known), [p["answer"] for p in known])]
        best = max(range(len(known)), key=scores.__getitem__)
        product = known[best]
        return (Hit(product["uid"], product["title"], product["answer"], scores[best], True)
                if scores[best] >= EXACT_ROUGE_L else None)

    def stream(self, question: str, system: str) -> tuple[Hit | None, Iterator[str]]:
        """The retrieved product (RAG systems) and the answer's pieces as they come."""
        self.check_system(system)
        hit = self.index.search([question])[0] if system in RAG_SYSTEMS else None
        if system == "assistant" and hit.matched:  # the record read streams in; any other route is one piece
            return hit, stream_answer(self.model(self.model_of("assistant")), self.tokenizer,
                                      self.prompt(question, hit), self.decoding)
        if system == "assistant":
            answer = self._assistant_answers([question], [hit], 0.0, None)[0]
            return answer.source, iter([answer.text])
        if system == "retrieval" or (hit is not None and not hit.matched):
            return hit, iter([_retrieved_answer(hit)])
        return hit, stream_answer(self.model(MODEL_OF[system]), self.tokenizer, self.prompt(question, hit),
                                  self.decoding, self.min_confidence if system == "fine_tuned" else None)


def _retrieved_answer(hit: Hit) -> str:
    """Retrieval's own answer: the matched product's description, or the no-match message."""
    return hit.description if hit.matched else NO_MATCH_MESSAGE
