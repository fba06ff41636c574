"""Every setting of config.py checked once, before any work starts, for every stage alike.

Choices are `Literal[...]` fields in config.py: the configurator refuses any other value at the command line,
naming the allowed ones. Ranges and rules between fields are here, one function per section. The
configurator runs `check_config` after applying the --set overrides, so a bad value ends the run in one line
(exit code 2) whichever stage script was started, and never after minutes of work.
"""
from __future__ import annotations

import dataclasses
import math
import os
import reprlib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from product_qa.data.examples import SPLITS
from product_qa.data.prompts import PHRASING_LANGUAGES, view_phrasings
from product_qa.errors import UserError
from product_qa.io_utils import read_json
from product_qa.runs import check_run_name

if TYPE_CHECKING:
    from config import (
        AnalysisConfig,
        AppConfig,
        Config,
        DataConfig,
        EvalConfig,
        GenerationConfig,
        RagConfig,
        TrainConfig,
    )

# the systems that answer questions (product_qa/answering/systems.py), as eval.systems names them
ANSWERING_SYSTEMS = ("assistant", "base", "fine_tuned", "retrieval", "base_rag", "fine_tuned_rag")

# Upper bounds of the settings that multiply the work (the training examples built in memory, the tokens of each,
# the processes started). Far above any useful value, they turn a slip (train.epochs=1e6) into one line instead of
# minutes of filling memory.
MAX_EPOCHS = 100  # passes over the catalog: 6 memorize it (README_FINE_TUNING.md); each adds a round of views
MAX_VIEWS_PER_PRODUCT = 100  # document and context views per product and round (the recipe uses 0 and 1)
MAX_TOKENS = 32_768  # tokens of an example, an answer or a retrieved record: long-context models' windows
MAX_SYSTEM_PROMPT_CHARS = 4_000  # a page of text: it is in every prompt, so every example and answer pays for it
MAX_LORA_R = 1_024  # above the hidden size of the small models trained here: a larger rank only costs memory
MAX_WORKERS = 1_024  # processes that parse, clean and tokenize: more than any machine's cores


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 120


def shown(value: Any) -> str:
    """A value as an error line quotes it: its repr, cut in the middle past 120 characters (a value can be a
    megabyte long, and the line must stay one line a person reads)."""
    return _SHORT_REPR.repr(value)


def literal_choices(annotation: Any) -> tuple | None:
    """The allowed values of a Literal annotation (also inside Optional), else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        choices = literal_choices(arg)
        if choices is not None:
            return choices
    return None


def fits(annotation: Any, value: Any) -> bool:
    """The value is of the annotated type (a Literal's choices, an Optional's None, an int for a float)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(fits(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation in (int, float):  # finite, and within what JSON reports and numpy seeds hold
        number = isinstance(value, (int, float) if annotation is float else int) and not isinstance(value, bool)
        return number and math.isfinite(value) and abs(value) < 2**63
    return isinstance(value, origin or annotation)


def expected(annotation: Any) -> str:
    """What a value of this annotation must be, in words."""
    choices = literal_choices(annotation)
    if choices:
        return f"one of: {', '.join(map(str, choices))}"
    return f"a valid {getattr(annotation, '__name__', None) or str(annotation).replace('typing.', '')}"


def comma_separated(text: str) -> list[str]:
    """The items of a comma-separated setting ("train,validation"), spaces and empty items dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def check_types(section_name: str, section: Any) -> None:  # any section's dataclass
    """Each field of the section holds a value of its type (a choice of its Literal): settings also come from
    a run's config.json, which may come from anywhere."""
    hints = typing.get_type_hints(type(section))
    for field in dataclasses.fields(section):
        value = getattr(section, field.name)
        if not fits(hints[field.name], value):
            raise UserError(f"{section_name}.{field.name}={shown(value)} is not {expected(hints[field.name])}")


def _at_least(section: str, values: dict[str, Any], minimum: float, *, none_ok: bool = False) -> None:
    for name, value in values.items():
        if value is None and none_ok:
            continue
        if value is None or value < minimum:
            allowed = f"at least {minimum}" + (" (or None)" if none_ok else "")
            raise UserError(f"{section}.{name} must be {allowed}, got {value!r}")


def _at_most(section: str, values: dict[str, Any], maximum: float) -> None:
    for name, value in values.items():
        if value is not None and value > maximum:
            raise UserError(f"{section}.{name} must be at most {maximum:,}, got {value!r}")


def _fraction(section: str, name: str, value: float, *, low_open: bool = False, high_open: bool = True) -> None:
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise UserError(f"{section}.{name} must be in {interval}, got {value!r}")


def check_data(data: DataConfig) -> None:
    for name in ("validation_fraction", "test_fraction"):
        _fraction("data", name, getattr(data, name))
    if data.validation_fraction + data.test_fraction >= 1:
        raise UserError("data.validation_fraction + data.test_fraction must leave room for training (< 1)")
    for name in ("title_field", "content_field", "uid_field"):
        if not getattr(data, name).strip():
            raise UserError(f"data.{name} must name a field or column, got {getattr(data, name)!r}")
    if data.title_field == data.content_field:
        raise UserError(f"data.title_field and data.content_field must differ, both are {data.title_field!r}")
    _at_least("data", {"max_records": data.max_records}, 1, none_ok=True)
    _at_least("data", {"min_title_chars": data.min_title_chars, "min_content_chars": data.min_content_chars,
                       "workers": data.workers, "examples_per_reason": data.examples_per_reason}, 0)
    _at_least("data", {"block_mb": data.block_mb}, 1)
    _at_most("data", {"workers": data.workers}, MAX_WORKERS)
    for low, high in (("min_title_chars", "max_title_chars"), ("min_content_chars", "max_content_chars")):
        if getattr(data, high) < getattr(data, low):
            raise UserError(f"data.{high} must be at least data.{low}, got {getattr(data, high)} < "
                            f"{getattr(data, low)}")


def check_analysis(analysis: AnalysisConfig) -> None:
    _at_least("analysis", {"reservoir_size": analysis.reservoir_size, "top_k": analysis.top_k}, 1)
    _at_least("analysis", {"token_sample_size": analysis.token_sample_size}, 0)
    if analysis.counter_capacity < analysis.top_k:
        raise UserError(f"analysis.top_k must be at most analysis.counter_capacity, got top_k={analysis.top_k}, "
                        f"counter_capacity={analysis.counter_capacity}")
    _fraction("analysis", "max_length_coverage", analysis.max_length_coverage, low_open=True, high_open=False)


def check_train(train: TrainConfig) -> None:
    check_run_name(train.run_name, "train.run_name")
    _at_least("train", {"max_length": train.max_length, "batch_size": train.batch_size,
                        "eval_batch_size": train.eval_batch_size,
                        "gradient_accumulation_steps": train.gradient_accumulation_steps, "lora_r": train.lora_r,
                        "save_total_limit": train.save_total_limit,
                        "logging_steps": train.logging_steps}, 1)
    _at_least("train", {"max_train_products": train.max_train_products, "views": train.views,
                        "max_eval_examples": train.max_eval_examples,
                        "early_stopping_patience": train.early_stopping_patience}, 1, none_ok=True)
    _at_least("train", {"weight_decay": train.weight_decay, "recall_questions": train.recall_questions,
                        "assistant_questions": train.assistant_questions,
                        "document_views": train.document_views, "context_views": train.context_views,
                        "context_products": train.context_products}, 0)
    _at_most("train", {"epochs": train.epochs}, MAX_EPOCHS)
    _at_most("train", {"document_views": train.document_views, "context_views": train.context_views},
             MAX_VIEWS_PER_PRODUCT)
    _at_most("train", {"max_length": train.max_length}, MAX_TOKENS)
    _at_most("train", {"lora_r": train.lora_r}, MAX_LORA_R)
    if train.system_prompt is not None and len(train.system_prompt) > MAX_SYSTEM_PROMPT_CHARS:
        raise UserError(f"train.system_prompt must be at most {MAX_SYSTEM_PROMPT_CHARS:,} characters, got "
                        f"{len(train.system_prompt):,}")
    _fraction("train", "unknown_share", train.unknown_share)
    _fraction("train", "distractor_share", train.distractor_share)
    if not (0 < train.eval_steps < 1 or (train.eval_steps >= 1 and train.eval_steps == int(train.eval_steps))):
        raise UserError(f"train.eval_steps must be a share of the run between 0 and 1 or a whole number of steps, "
                        f"got {train.eval_steps!r}")
    if not {language.strip() for language in train.view_languages.split(",")} <= set(PHRASING_LANGUAGES):
        raise UserError(f"train.view_languages={train.view_languages!r}: choose from "
                        f"{', '.join(PHRASING_LANGUAGES)} (comma-separated)")
    pool = len(view_phrasings(train.view_languages))
    if train.views > pool:
        raise UserError(f"train.views={train.views} is more than the {pool} training phrasings in "
                        f"{train.view_languages!r}")
    if train.max_steps == 0 or train.max_steps < -1:
        raise UserError(f"train.max_steps must be -1 (use train.epochs) or at least 1, got {train.max_steps}")
    if train.max_steps == -1 and not train.epochs > 0:
        raise UserError(f"train.epochs must be more than 0, got {train.epochs} (a run must train)")
    for name in ("learning_rate", "lora_alpha"):
        if not getattr(train, name) > 0:
            raise UserError(f"train.{name} must be more than 0, got {getattr(train, name)!r}")
    _fraction("train", "warmup_ratio", train.warmup_ratio)
    _fraction("train", "lora_dropout", train.lora_dropout)
    modules = train.lora_target_modules
    if modules != "all-linear" and not all(part.isidentifier() for m in modules.split(",")
                                           for part in m.strip().split(".")):
        raise UserError(f"train.lora_target_modules must be all-linear or module names such as q_proj,v_proj, "
                        f"got {modules!r}")


def check_generation(generation: GenerationConfig) -> None:
    _at_least("generation", {"batch_size": generation.batch_size,
                             "max_question_chars": generation.max_question_chars}, 1)
    _at_least("generation", {"max_new_tokens": generation.max_new_tokens}, 1, none_ok=True)
    _at_most("generation", {"max_new_tokens": generation.max_new_tokens}, MAX_TOKENS)
    _at_least("generation", {"no_repeat_ngram_size": generation.no_repeat_ngram_size}, 0)
    _fraction("generation", "min_confidence", generation.min_confidence)
    if not generation.repetition_penalty > 0:
        raise UserError(f"generation.repetition_penalty must be more than 0, got {generation.repetition_penalty}")


def check_rag(rag: RagConfig) -> None:
    if rag.min_score is not None:
        _fraction("rag", "min_score", rag.min_score, high_open=False)
    _fraction("rag", "max_false_accept", rag.max_false_accept)
    splits = comma_separated(rag.index_splits)
    if not splits or not set(splits) <= set(SPLITS) or len(set(splits)) < len(splits):
        raise UserError(f"rag.index_splits={rag.index_splits!r}: name each of {', '.join(SPLITS)} at most once "
                        f"(comma-separated)")
    _at_least("rag", {"max_context_tokens": rag.max_context_tokens}, 1, none_ok=True)
    _at_most("rag", {"max_context_tokens": rag.max_context_tokens}, MAX_TOKENS)


def check_eval(evaluation: EvalConfig) -> None:
    if evaluation.run_name is not None:
        check_run_name(evaluation.run_name, "eval.run_name")
    _at_least("eval", {"catalog_questions": evaluation.catalog_questions,
                       "indexed_questions": evaluation.indexed_questions,
                       "unknown_questions": evaluation.unknown_questions,
                       "worst_examples": evaluation.worst_examples}, 0)
    _at_least("eval", {"test_questions": evaluation.test_questions}, 1)
    if evaluation.catalog_questions + evaluation.indexed_questions + evaluation.unknown_questions < 1:
        raise UserError("nothing to ask: set eval.catalog_questions, eval.indexed_questions or "
                        "eval.unknown_questions to at least 1")
    asked = comma_separated(evaluation.systems)
    if len(set(asked)) < len(asked):
        raise UserError(f"eval.systems={evaluation.systems!r} names a system twice")
    unknown = [s for s in asked if s not in ANSWERING_SYSTEMS]
    if unknown or not asked:
        raise UserError(f"eval.systems: unknown {', '.join(unknown) or '(none given)'}; choose from "
                        f"{', '.join(ANSWERING_SYSTEMS)}")


def check_app(app: AppConfig) -> None:
    if not 1 <= app.port <= 65535:
        raise UserError(f"app.port must be in 1..65535, got {app.port}")
    _at_least("app", {"max_queue": app.max_queue}, 1)


SECTION_CHECKS = {"data": check_data, "analysis": check_analysis, "train": check_train,
                  "generation": check_generation, "rag": check_rag, "eval": check_eval, "app": check_app}


def check_section(section_name: str, section: Any) -> None:  # any section's dataclass
    """One section's types, choices and ranges: the command line's, and a run folder's config.json alike."""
    check_types(section_name, section)
    if not 0 <= getattr(section, "seed", 0) < 2**32:  # what numpy and torch seed with
        raise UserError(f"{section_name}.seed must be in 0..{2**32 - 1}, got {section.seed}")
    if section_name in SECTION_CHECKS:
        SECTION_CHECKS[section_name](section)


def check_config(cfg: Config) -> None:
    """Every section's choices and ranges; the first problem found is raised as a UserError."""
    for field in dataclasses.fields(cfg):
        check_section(field.name, getattr(cfg, field.name))
    check_output_folders(cfg)


# ------------------------------------------------------------------------------------------ a run's report
@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range of a number of a run's training_report.json."""

    kind: type  # int or float (an int is a float too)
    low: float = 0
    high: float = math.inf
    low_open: bool = False  # low itself is outside
    none_ok: bool = False


_FRACTION, _COUNT, _AMOUNT = Bounds(float, 0, 1), Bounds(int), Bounds(float)
# The numbers of a run's report that the answering scripts and the model card use. The catalog's confidence floor
# lowers the decline threshold: at 0 or below the gate would never decline, so it is above 0 (or None: no floor).
RUN_REPORT_NUMBERS = {
    "catalog_confidence_floor": Bounds(float, 0, 1, low_open=True, none_ok=True),
    "decline_threshold": _FRACTION, "longest_answer_tokens": Bounds(int, 1, MAX_TOKENS),
    "epochs": Bounds(float, 0, MAX_EPOCHS), "steps": _COUNT, "catalog_products": _COUNT, "declined_products": _COUNT,
    "train_examples": _COUNT, "train_seconds": _AMOUNT, "tokens_per_second": _AMOUNT,
    **{f"{name}_loss_{when}": _AMOUNT for name in ("validation", "catalog") for when in ("before", "after")},
    "perplexity_before": _AMOUNT, "perplexity_after": _AMOUNT,
    "recall.questions": _COUNT, "recall.base.rougeL": Bounds(float, 0, 1, none_ok=True),
    "recall.fine_tuned.rougeL": Bounds(float, 0, 1, none_ok=True)}


def read_run_report(run_dir: Path) -> dict:
    """A run's training_report.json, its numbers checked (check_run_report); else one line naming the file."""
    path = run_dir / "training_report.json"
    report = read_json(path, "run's report")
    try:
        if not isinstance(report, dict):
            raise UserError("not a report object")
        check_run_report(report)
    except UserError as err:
        raise UserError(f"{path}: {err}; train the run again, or restore the file") from None
    return report


def check_run_report(report: dict) -> None:
    """The report's numbers are numbers in their ranges, as a run writes them; a report may come from anywhere
    (a run folder downloaded or edited), and a number a run writes is never left out of it, so a missing one is
    only a run older than that number (its readers do without it)."""
    for key, bounds in RUN_REPORT_NUMBERS.items():
        *parents, name = key.split(".")
        holder: Any = report
        for parent in parents:
            holder = holder.get(parent) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or name not in holder:
            continue
        value = holder[name]
        if value is None and bounds.none_ok:
            continue
        number = isinstance(value, bounds.kind if bounds.kind is int else (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and (value > bounds.low if bounds.low_open else value >= bounds.low)
                and value <= bounds.high):
            interval = f"{'(' if bounds.low_open else '['}{bounds.low:g}, {bounds.high:g}]"
            kind = "a whole number" if bounds.kind is int else "a number"
            raise UserError(f"{key}={value!r} is not {kind} in {interval}" + (" (or null)" if bounds.none_ok else ""))


def _real(folder: str) -> str:
    """The folder as the file system sees it: links followed, and its letter case where that does not count."""
    return os.path.normcase(os.path.realpath(folder))


def check_output_folders(cfg: Config) -> None:
    """Preparation and analysis replace their folder whole: no other output may live inside one (a runs folder
    inside the data folder was lost at the next preparation)."""
    replaced = {"data.output_dir": cfg.data.output_dir, "analysis.output_dir": cfg.analysis.output_dir}
    folders = {**replaced, "train.output_dir": cfg.train.output_dir, "eval.output_dir": cfg.eval.output_dir,
               "model.cache_dir": cfg.model.cache_dir, "rag.index_dir": cfg.rag.index_dir}
    for name, whole in replaced.items():
        root = _real(whole)
        for other, folder in folders.items():
            path = _real(folder)
            if other != name and (path == root or path.startswith(root.rstrip(os.sep) + os.sep)):
                raise UserError(f"{other}={folder!r} is inside {name}={whole!r}, which its stage replaces whole: "
                                "set them apart")
