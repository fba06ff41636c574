"""The fine-tuning workflow, top to bottom: prepare the data, load the model, show the base model's answers,
measure, train, measure again, save, report. Runs the same on a CPU, one GPU, or several processes under
`torchrun` / `accelerate launch` (data preparation, answers and saving happen on the main process only)."""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import set_seed

from product_qa.answering import metrics
from product_qa.answering.generation import (
    Generated,
    catalog_confidence_floor,
    decline_threshold,
    declined_when_unsure,
    generate_answers,
    with_answer_cap,
)
from product_qa.answering.model_card import write_model_cards
from product_qa.data.catalog import Catalog, is_declined, read_catalog, recall_questions, training_rounds, views_file
from product_qa.data.encoding import ExampleEncoder, perplexity, tokenized_split
from product_qa.data.examples import output_paths, prepared_data_fingerprint, sample_indices
from product_qa.data.preparation import prepare
from product_qa.data.prompts import prompt_text, resolve_template
from product_qa.devices import announce, best_device, select_precision
from product_qa.errors import UserError
from product_qa.io_utils import (
    prepare_output_dir,
    read_json,
    recover_directory,
    refuse_foreign_directory,
    refuse_read_only,
    write_json_atomic,
)
from product_qa.locks import data_lock, run_lock
from product_qa.modeling import load_tokenizer, resolve_model_path
from product_qa.reporting import terminal_text
from product_qa.runs import check_trained_data, finish_run, unfinished_run_dir
from product_qa.training.report import plot_loss_curves
from product_qa.training.trainer import (
    EVAL_SETS,
    ModelChoice,
    StopWhenCatalogLearned,
    TrainingSets,
    TrainingStarted,
    build_trainer,
    check_logging_possible,
    checkpoint_step,
    count_parameters,
    load_model,
    loss_history,
    prepare_run_dir,
    save_outputs,
    tensorboard_logs,
    training_arguments,
    training_order,
    with_perplexity,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments

    from config import Config, GenerationConfig, TrainConfig

# peft still calls the old name inside transformers; the warning says nothing the user can act on.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass(frozen=True)
class RunInputs:
    """What a run trains from, the same on every process: the model files, the checkpoint it resumes from, the
    prompt, the catalog, the tokenized examples and how answers are decoded."""

    model_path: str
    checkpoint: str | None  # None: a fresh start
    tokenizer: PreTrainedTokenizerBase
    template: str
    catalog: Catalog
    sets: TrainingSets
    rounds: int  # passes over the catalog that the training examples are laid out for
    decoding: GenerationConfig  # with the answer cap of this run's longest answer
    data_fingerprint: str  # examples.prepared_data_fingerprint of the data read


@dataclass
class Trained:
    """What trainer.train() left behind."""

    seconds: float  # wall time of trainer.train()
    eval_seconds: float  # the evaluations inside it
    runtime: float  # the Trainer's own train_runtime
    resumed_at: int  # the optimizer steps done before this session (a resumed run's checkpoint), else 0
    history: dict[str, list]  # loss_history, the baseline's step 0 added before the report
    best: str | None  # the best checkpoint, when it was loaded back at the end
    after: dict[str, float | None]  # each evaluation set's loss after training


@dataclass(frozen=True)
class Tuned:
    """The fine-tuned model's answers to the recall questions, and the decline threshold they set."""

    answers: list[str]
    confidence_floor: float | None  # lowers generation.min_confidence for this run
    threshold: float


def fine_tune(cfg: Config, *, resume: bool = False, progress: bool = True) -> dict:
    """Train the run cfg.train names and save it under train.output_dir; the report (empty on the other ranks)."""
    # PartialState knows this process's rank under torchrun / accelerate launch. On a CPU it must be asked for the
    # CPU (as the Trainer later does): else it sees no distributed run there and every rank takes itself for the
    # main one, each preparing, writing and swapping in the run's work directory under the others.
    _refuse_sharded_launch()
    check_logging_possible(cfg.train.report_to)
    state = PartialState(cpu=best_device() == "cpu")
    run_dir = _run_dir(cfg.train)
    if not state.is_main_process:  # the main process holds the run's lock for all of them
        return _fine_tune(cfg, state, resume, progress)
    prepare_output_dir(run_dir.parent)  # train.output_dir created, and a read-only one (or run) refused, before
    refuse_read_only(run_dir)           # any work and before the lock file is made there
    with run_lock(run_dir):  # a second training of this run stops here, before it clears the work directory
        recover_directory(run_dir)  # the previous run set aside by a killed swap, if the new one never arrived
        return _fine_tune(cfg, state, resume, progress)


def _fine_tune(cfg: Config, state: PartialState, resume: bool, progress: bool) -> dict:
    """fine_tune's work, under the run's lock."""
    main = state.is_main_process
    device, precision = _device_and_precision(cfg.train, state)  # said first: where the run trains, and how
    run_dir = _run_dir(cfg.train)
    work_dir = unfinished_run_dir(run_dir)  # the run is built here and replaces run_dir when it is done
    refuse_foreign_directory(run_dir, "training_report.json")  # replaced whole at the end: only a run of ours

    inputs = _prepare_inputs(cfg, state, work_dir, resume, progress and main)  # 1. data, catalog, tokens
    choice = ModelChoice(inputs.model_path, precision, device, cfg.model.trust_remote_code)  # 2. the model
    set_seed(cfg.train.seed)  # LoRA's initial weights
    model = load_model(choice, cfg.train)
    trainable, total = count_parameters(model)
    args = training_arguments(cfg.train, work_dir, choice.precision, choice.device, len(inputs.sets.train),
                              inputs.rounds)
    trainer = build_trainer(model, inputs.tokenizer, inputs.sets, args, cfg.train, progress and main)
    if main and cfg.train.report_to == "tensorboard":
        trainer.add_callback(tensorboard_logs(work_dir / "logs"))
    questions = recall_questions(inputs.catalog, cfg.train.recall_questions, cfg.train.seed)
    # 3. the base model's recall, losses
    baseline = _baseline(trainer, inputs, questions, cfg.train, work_dir, cfg.data.output_dir, main)
    trained = _train(trainer, args, inputs.checkpoint, cfg.train.seed)  # 4. train

    # 5. Save and report (main process).
    if not main:
        return {}
    save_outputs(trainer, inputs.tokenizer, work_dir, choice, cfg.train.method)
    tuned = _tuned_answers(trainer.model, inputs, questions, cfg)
    for name in EVAL_SETS:  # where training started
        trained.history[name] = [(0, baseline["losses"][name]), *trained.history[name]]
    plot_loss_curves(trained.history, work_dir / "loss_curves.png", f"{cfg.train.run_name}: {cfg.train.method} on "
                                                                    f"{cfg.model.name}")
    report = {**_setup_facts(cfg, inputs, choice, state.num_processes, (trainable, total)),
              "catalog_confidence_floor": tuned.confidence_floor,  # lowers generation.min_confidence for this run
              "decline_threshold": tuned.threshold,
              **_training_facts(cfg.train, inputs, trainer, trained, work_dir),
              **_loss_facts(baseline, trained),
              "recall": recall_summary(questions, baseline["answers"], tuned.answers),
              "losses": trained.history, "eval_perplexity": with_perplexity(trained.history["validation"]),
              "sample_answers": _sample_answers(questions, baseline["answers"], tuned.answers)}
    write_json_atomic(work_dir / "config.json", dataclasses.asdict(cfg))
    write_json_atomic(work_dir / "training_report.json", report)
    if cfg.train.assistant_questions:  # 6. the assistant next to the base model, on the three question sets
        report["assistant"] = assistant_check(cfg, work_dir, progress)
        write_json_atomic(work_dir / "training_report.json", report)
    write_model_cards(work_dir)  # from the report and settings just written: a fresh run has all the card needs
    finish_run(work_dir, run_dir, unsynced=("checkpoints",))  # the finished run replaces the old one whole
    return report


ASSISTANT_CHECK_SYSTEMS = ("base", "assistant")
ASSISTANT_CHECK_FIGURES = ("rougeL", "exact", "right_product", "declined", "wrong_product")


def assistant_check(cfg: Config, run_dir: Path, progress: bool) -> dict:
    """The evaluation in small (train.assistant_questions products of each set, each asked in a held-out phrasing
    and one other form): the base model and the assistant on the catalog, indexed and unknown sets, for the
    summary. It runs on the finished run before it replaces the old one (so the run is replaced whole); a failure
    here is noted in the report and loses nothing. `python test_pipeline.py --evaluate` measures every system on
    more questions."""
    from product_qa.answering.evaluation import evaluate

    few = cfg.train.assistant_questions
    small = dataclasses.replace(cfg, eval=dataclasses.replace(
        cfg.eval, catalog_questions=few, indexed_questions=few, unknown_questions=few, perplexity=False,
        systems=",".join(ASSISTANT_CHECK_SYSTEMS)))
    try:
        report = evaluate(small, run_dir, progress=progress)
    except (UserError, RuntimeError, OSError) as err:  # the run is whole: say why the check failed, and keep the run
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        print(f"note: the assistant check after training did not run: {terminal_text(reason)}", file=sys.stderr)
        return {"error": reason}
    return {set_name: {"questions": result["questions"],
                       **{system: {k: entry["summary"].get(k) for k in ASSISTANT_CHECK_FIGURES}
                          for system, entry in result["systems"].items()}}
            for set_name, result in report["sets"].items()}


def _refuse_sharded_launch() -> None:
    """FSDP and DeepSpeed shard the model: saving it and answering after training would need every rank, and
    neither runs on a CPU with the pinned torch and accelerate (accelerate falls back to DDP there), so neither is
    tested. Refused before any work rather than half-supported."""
    for name, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(variable, "").lower() in ("1", "true", "yes"):  # set by accelerate launch's config
            raise UserError(f"{name} is not supported: saving and the answers after training are tested under DDP "
                            "only; launch with `torchrun --nproc_per_node N fine_tuning_project.py` (DDP)")


def _run_dir(train: TrainConfig) -> Path:
    return Path(train.output_dir) / train.run_name


# ------------------------------------------------------------------------------------- 1. inputs, 2. model
def _prepare_inputs(cfg: Config, state: PartialState, work_dir: Path, resume: bool, progress: bool) -> RunInputs:
    """Data, the catalog, its views, model files and token ids: made once, by the main process, while the others
    wait (they then read the files and the tokenized splits the main process wrote)."""
    main, train = state.is_main_process, cfg.train
    # the data folder is locked while it is read and the views are written beside it: a preparation waits
    with state.main_process_first(), data_lock(Path(cfg.data.output_dir)):
        prepare(cfg.data, progress=progress)
        data_fingerprint = prepared_data_fingerprint(cfg.data)  # what the run is trained on, for every later stage
        model_path = resolve_model_path(cfg.model.name, cfg.model.cache_dir)
        checkpoint = prepare_run_dir(work_dir, resume) if main else None  # only the main process clears it
        tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir, cfg.model.trust_remote_code)
        template = resolve_template(tokenizer, train.prompt_template)
        encoder = ExampleEncoder(tokenizer, template=template, system_prompt=train.system_prompt,
                                 max_length=train.max_length)
        paths = output_paths(cfg.data)
        catalog = read_catalog(paths["train"], train)
        views = tokenized_split(views_file(paths["train"], catalog, train, encoder), encoder, progress=progress)
        validation = tokenized_split(paths["validation"], encoder, progress=progress)
    if not main:  # the checkpoint the main process kept, read only
        checkpoint = prepare_run_dir(work_dir, resume, main=False)
    rounds = training_rounds(train.epochs)
    effective_batch = train.batch_size * train.gradient_accumulation_steps * state.num_processes
    train_set = views.select(training_order(views["length"], len(views) // rounds, effective_batch,
                                            train.group_by_length, train.seed))
    # what early stopping follows: the catalog asked with held-out phrasings (see config.TrainConfig)
    eval_sets = {"catalog": Dataset.from_list(encoder.encode(recall_questions(catalog, train.max_eval_examples,
                                                                              train.seed))),
                 "validation": _sampled(validation, train.max_eval_examples, train.seed)}
    decoding = with_answer_cap(cfg.generation, max(train_set["answer_tokens"]))  # the run's longest answer
    return RunInputs(model_path, checkpoint, tokenizer, template, catalog, TrainingSets(train_set, eval_sets), rounds,
                     decoding, data_fingerprint)


def _sampled(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """The seeded uniform sample of read_examples, taken from a tokenized split."""
    keep = sample_indices(len(dataset), limit, seed)
    return dataset if keep is None else dataset.select(keep)


def _device_and_precision(train: TrainConfig, state: PartialState) -> tuple[str, str]:
    """This device, and the precision it does best, printed by the main process; one process driving several
    GPUs is refused (DataParallel would scale the answer-only loss by the GPU count)."""
    device = best_device()
    if device == "cuda" and torch.cuda.device_count() > 1 and state.num_processes == 1:
        raise UserError(f"{torch.cuda.device_count()} GPUs in one process: launch one process per GPU with "
                        f"`torchrun --nproc_per_node {torch.cuda.device_count()} fine_tuning_project.py`, or "
                        "pick one GPU with CUDA_VISIBLE_DEVICES=0")
    precision = select_precision(train.precision, device)
    if state.is_main_process:
        announce(device, precision, sys.stdout)
    return device, precision


# --------------------------------------------------------------------------------- 3. before, 4. training
def _baseline(trainer: Trainer, inputs: RunInputs, questions: list[dict], train: TrainConfig, work_dir: Path,
              data_dir: str, main: bool) -> dict:
    """The base model's answers to the recall questions and its losses, measured before training, or read
    back from the work directory when the run resumes (its model is no longer the base one)."""
    baseline_path = work_dir / "baseline.json"
    if inputs.checkpoint is not None:
        baseline = read_json(baseline_path, "base model's measurements of the run being resumed")
        check_trained_data(baseline.get("data_fingerprint") if isinstance(baseline, dict) else None,
                           inputs.data_fingerprint, data_dir, work_dir,
                           "prepare it as it was, or train again without --resume")
        return baseline
    base_answers = ([a.text for a in _answers(trainer.model, inputs, questions, train.system_prompt)]
                    if main else [])
    losses = trainer.evaluate()
    baseline = {"losses": {name: losses[f"eval_{name}_loss"] for name in EVAL_SETS}, "answers": base_answers,
                "data_fingerprint": inputs.data_fingerprint}
    if main:
        write_json_atomic(baseline_path, baseline)
    return baseline


def _train(trainer: Trainer, args: TrainingArguments, checkpoint: str | None, seed: int) -> Trained:
    # Seeded again here: the evaluation before it draws random numbers, and a resumed run skips it, yet both
    # must train the same way.
    set_seed(seed)
    started = TrainingStarted()
    trainer.add_callback(started)
    began = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except torch.cuda.OutOfMemoryError:
        raise UserError("CUDA out of memory: lower train.batch_size (raise train.gradient_accumulation_steps to "
                        "keep the effective batch), set train.gradient_checkpointing=True, or use "
                        "train.method=qlora") from None
    except (RuntimeError, ValueError) as err:
        if checkpoint is None or started.started:  # not the checkpoint's: a failure of the training itself
            raise
        # a checkpoint saved with other settings (another lora_r: its tensors do not fit) or missing its weights
        reason = str(err).splitlines()[0][:160]
        raise UserError(f"--resume: {checkpoint} cannot be loaded with these settings ({reason}); resume with the "
                        "settings the run started with, or train again without --resume") from None
    seconds = time.perf_counter() - began
    # the evaluations inside this session's trainer.train() (the baseline's is at step 0, a resumed run's earlier
    # ones before its checkpoint): the rest of the time is the training loop itself
    resumed_at = checkpoint_step(checkpoint) if checkpoint else 0
    eval_seconds = sum(e[f"eval_{name}_runtime"] for e in trainer.state.log_history for name in EVAL_SETS
                       if f"eval_{name}_runtime" in e and e["step"] > resumed_at)
    # The Trainer evaluates the last step too, so the losses after training are known: the best evaluation's when
    # the best checkpoint was loaded back, else the last one's. Evaluating again would cost a pass for nothing.
    history = loss_history(trainer.state.log_history)
    best = trainer.state.best_model_checkpoint if args.load_best_model_at_end else None
    final_step = checkpoint_step(best) if best else trainer.state.global_step  # not the last logged loss's
    after = {name: next((loss for step, loss in reversed(history[name]) if step <= final_step), None)
             for name in EVAL_SETS}
    return Trained(seconds, eval_seconds, result.metrics["train_runtime"], resumed_at, history, best, after)


# ------------------------------------------------------------------------------------------- 5. the report
def _answers(model: PreTrainedModel, inputs: RunInputs, examples: list[dict], system_prompt: str | None
             ) -> list[Generated]:
    prompts = [prompt_text(inputs.tokenizer, e["question"], inputs.template, system_prompt) for e in examples]
    return generate_answers(model, inputs.tokenizer, prompts, inputs.decoding)


def _tuned_answers(model: PreTrainedModel, inputs: RunInputs, questions: list[dict], cfg: Config) -> Tuned:
    """The fine-tuned model's answers, and the decline threshold of this run, from its own catalog (saved in the
    report; ask.py and the evaluation use it)."""
    tuned = _answers(model, inputs, questions, cfg.train.system_prompt)
    confidence_floor = catalog_confidence_floor([a.confidence for a in tuned])
    threshold = decline_threshold(cfg.generation.min_confidence, confidence_floor)
    return Tuned([declined_when_unsure(a, threshold).text for a in tuned], confidence_floor, threshold)


def _setup_facts(cfg: Config, inputs: RunInputs, choice: ModelChoice, processes: int,
                 parameters: tuple[int, int]) -> dict:
    """The report's first part: what was trained, how, and on what."""
    train_set = inputs.sets.train
    return {
        "run_name": cfg.train.run_name, "run_dir": str(_run_dir(cfg.train)), "model": cfg.model.name,
        "model_path": inputs.model_path, "method": cfg.train.method, "precision": choice.precision,
        "device": choice.device, "template": inputs.template, "processes": processes,
        "trainable_parameters": parameters[0], "total_parameters": parameters[1],
        "catalog_products": len(inputs.catalog.known), "declined_products": len(inputs.catalog.declined),
        "reading_products": len(inputs.catalog.reading),
        "views": cfg.train.views, "rounds": inputs.rounds, "data_fingerprint": inputs.data_fingerprint,
        "train_examples": len(train_set), "truncated_examples": sum(train_set["truncated"]),
        "longest_answer_tokens": max(train_set["answer_tokens"]),  # the answer cap of generation.max_new_tokens=None
    }


def _training_facts(train: TrainConfig, inputs: RunInputs, trainer: Trainer, trained: Trained, work_dir: Path
                    ) -> dict:
    """How far training went, what it saw and how fast, and its checkpoints (at their place once the run moved)."""
    run_dir, train_set = _run_dir(train), inputs.sets.train
    epochs_done = (trainer.state.epoch or 0.0) * inputs.rounds
    passes_done = epochs_done / inputs.rounds
    return {
        "steps": trainer.state.global_step, "epochs": round(epochs_done, 3),
        "answer_tokens_seen": round(sum(train_set["answer_tokens"]) * passes_done),
        "tokens_seen": round(sum(train_set["length"]) * passes_done),
        "train_seconds": round(trained.seconds, 1),
        "eval_seconds_in_training": round(trained.eval_seconds, 1),
        # this session's tokens over this session's time: a run resumed at step k did only the steps after it
        "tokens_per_second": round(sum(train_set["length"]) * passes_done / trained.runtime
                                   * max(trainer.state.global_step - trained.resumed_at, 0)
                                   / max(trainer.state.global_step, 1), 1),
        "early_stopping_on": train.early_stopping_on, "best_checkpoint": _moved(trained.best, work_dir, run_dir),
        "learned_at_step": next((c.stopped_at for c in trainer.callback_handler.callbacks
                                 if isinstance(c, StopWhenCatalogLearned)), None),
        "resumed_from": _moved(inputs.checkpoint, work_dir, run_dir),
    }


def _loss_facts(baseline: dict, trained: Trained) -> dict:
    return {**{f"{name}_loss_before": baseline["losses"][name] for name in EVAL_SETS},
            **{f"{name}_loss_after": trained.after[name] for name in EVAL_SETS},
            "perplexity_before": perplexity(baseline["losses"]["validation"]),
            "perplexity_after": perplexity(trained.after["validation"])}


def _sample_answers(questions: list[dict], base: list[str], tuned: list[str], shown: int = 3) -> list[dict]:
    """The first recall questions with both models' answers, for the summary."""
    return [{"question": q["question"], "reference": q["answer"], "base": before, "fine_tuned": after}
            for q, before, after in list(zip(questions, base, tuned, strict=True))[:shown]]


def _moved(checkpoint: str | None, work_dir: Path, run_dir: Path) -> str | None:
    """A checkpoint's path once the run has moved from its work directory to its own."""
    return None if checkpoint is None else str(run_dir / Path(checkpoint).relative_to(work_dir))


def recall_summary(questions: list[dict], base: list[str], tuned: list[str]) -> dict:
    """ROUGE-L of each model's answers to catalog products asked anew, the share recalled (ROUGE-L of 0.9 or
    more) and the share declined."""
    references = [q["answer"] for q in questions]
    summary: dict = {"questions": len(questions)}
    for name, answers in (("base", base), ("fine_tuned", tuned)):
        scores = [s["rougeL"] for s in metrics.rouge_scores(answers, references)]
        summary[name] = {"rougeL": sum(scores) / len(scores) if scores else None,
                         "exact": sum(s >= metrics.EXACT_ROUGE_L for s in scores) / len(scores) if scores else None,
                         "declined": sum(map(is_declined, answers)) / len(answers) if answers else None}
    return summary
