"""The fine-tuning workflow, top to bottom: prepare the data, load the model, show the base model's answers,
measure, train, measure again, save, report. Runs the same on a CPU, one GPU, or several processes under
`torchrun` / `accelerate launch` (data preparation, answers and saving happen on the main process only)."""
from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path

import orjson
import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import set_seed

from product_qa.answering import metrics
from product_qa.data.catalog import is_declined, read_catalog, recall_questions, training_rounds, views_file
from product_qa.data.encoding import ExampleEncoder, perplexity, tokenized_split
from product_qa.data.examples import sample_indices
from product_qa.devices import best_device, select_precision
from product_qa.errors import UserError
from product_qa.answering.generation import (Generated, catalog_confidence_floor, decline_threshold, declined_when_unsure,
                                  generate_answers, with_answer_cap)
from product_qa.io_utils import commit_directory, prepare_output_dir, refuse_read_only, write_json_atomic
from product_qa.modeling import load_tokenizer, resolve_model_path
from product_qa.data.preparation import prepare
from product_qa.data.examples import output_paths
from product_qa.data.prompts import prompt_text, resolve_template
from product_qa.reporting import plot_loss_curves
from product_qa.runs import unfinished_run_dir
from product_qa.training.trainer import (EVAL_SETS, build_trainer, count_parameters, load_model, loss_history,
                                 prepare_run_dir, save_outputs, training_arguments, training_order, with_perplexity)

# peft still calls the old name inside transformers; the warning says nothing the user can act on.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def fine_tune(cfg, *, resume: bool = False, progress: bool = True) -> dict:
    # knows this process's rank under torchrun / accelerate launch. On a CPU the state must be asked for the CPU
    # (as the Trainer later does): else it sees no distributed run there and every rank takes itself for the main
    # one, each preparing, writing and swapping in the run's work directory under the others.
    state = PartialState(cpu=best_device() == "cpu")
    main = state.is_main_process
    train_cfg, model_cfg = cfg.train, cfg.model
    run_dir = Path(train_cfg.output_dir) / train_cfg.run_name
    work_dir = unfinished_run_dir(run_dir)  # the run is built here and replaces run_dir when it is done

    # 1. Data, the catalog, its views, model files and token ids: made once, by the main process, while the
    # others wait (they then read the files and the tokenized splits the main process wrote).
    with state.main_process_first():
        prepare(cfg.data, progress=progress and main)
        model_path = resolve_model_path(model_cfg.name, model_cfg.cache_dir)
        if main:  # train.output_dir created, and a read-only one (or run) refused, before any work
            prepare_output_dir(run_dir.parent)
            refuse_read_only(run_dir)
        checkpoint = prepare_run_dir(work_dir, resume) if main else None  # only the main process clears it
        tokenizer = load_tokenizer(model_cfg.name, model_cfg.cache_dir, model_cfg.trust_remote_code)
        template = resolve_template(tokenizer, train_cfg.prompt_template)
        encoder = ExampleEncoder(tokenizer, template=template, system_prompt=train_cfg.system_prompt,
                                 max_length=train_cfg.max_length)
        paths = output_paths(cfg.data)
        catalog = read_catalog(paths["train"], train_cfg)
        views = tokenized_split(views_file(paths["train"], catalog, train_cfg), encoder, processes=cfg.data.workers,
                                progress=progress and main)
        validation = tokenized_split(paths["validation"], encoder, processes=cfg.data.workers,
                                     progress=progress and main)
    if not main:  # the checkpoint the main process kept, read only
        checkpoint = prepare_run_dir(work_dir, resume, main=False)
    rounds = training_rounds(train_cfg.epochs)
    effective_batch = train_cfg.batch_size * train_cfg.gradient_accumulation_steps * state.num_processes
    train_set = views.select(training_order(views["length"], len(views) // rounds, effective_batch,
                                            train_cfg.group_by_length, train_cfg.seed))
    # what early stopping follows: the catalog asked with held-out phrasings (see config.TrainConfig)
    eval_sets = {"catalog": Dataset.from_list(encoder.encode(recall_questions(catalog, train_cfg.max_eval_examples,
                                                                              train_cfg.seed))),
                 "validation": _sampled(validation, train_cfg.max_eval_examples, train_cfg.seed)}
    decoding = with_answer_cap(cfg.generation, max(train_set["answer_tokens"]))  # the run's longest answer

    # 2. The model, at the precision this device does best.
    device = best_device()
    if device == "cuda" and torch.cuda.device_count() > 1 and state.num_processes == 1:
        raise UserError(f"{torch.cuda.device_count()} GPUs in one process: launch one process per GPU with "
                        f"`torchrun --nproc_per_node {torch.cuda.device_count()} fine_tuning_project.py`, or "
                        "pick one GPU with CUDA_VISIBLE_DEVICES=0")
    precision = select_precision(train_cfg.precision, device)
    set_seed(train_cfg.seed)  # LoRA's initial weights
    model = load_model(model_path, method=train_cfg.method, precision=precision, device=device,
                       train_cfg=train_cfg, trust_remote_code=model_cfg.trust_remote_code)
    trainable, total = count_parameters(model)
    args = training_arguments(train_cfg, work_dir, precision, device, len(train_set), rounds)
    trainer = build_trainer(model, tokenizer, train_set, eval_sets, args, train_cfg, progress and main)

    # 3. Before training: the base model's recall of the catalog and its losses (kept for a resumed run).
    questions = recall_questions(catalog, train_cfg.recall_questions, train_cfg.seed)
    baseline_path = work_dir / "baseline.json"
    if checkpoint is None:
        base_answers = ([a.text for a in _answers(trainer.model, tokenizer, questions, template, cfg, decoding)]
                        if main else [])
        losses = trainer.evaluate()
        baseline = {"losses": {name: losses[f"eval_{name}_loss"] for name in EVAL_SETS}, "answers": base_answers}
        if main:
            write_json_atomic(baseline_path, baseline)
    else:
        baseline = orjson.loads(baseline_path.read_bytes())

    # 4. Train. Seeded again here: the evaluation above draws random numbers, and a resumed run skips it, yet
    # both must train the same way.
    set_seed(train_cfg.seed)
    started = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except torch.cuda.OutOfMemoryError:
        raise UserError("CUDA out of memory: lower train.batch_size (raise train.gradient_accumulation_steps to "
                        "keep the effective batch), set train.gradient_checkpointing=True, or use "
                        "train.method=qlora") from None
    train_seconds = time.perf_counter() - started
    # the evaluations inside this session's trainer.train() (the baseline's is at step 0, a resumed run's earlier
    # ones before its checkpoint): the rest of train_seconds is the training loop itself
    resumed_at = int(checkpoint.rpartition("-")[2]) if checkpoint else 0
    eval_seconds = sum(e[f"eval_{name}_runtime"] for e in trainer.state.log_history for name in EVAL_SETS
                       if f"eval_{name}_runtime" in e and e["step"] > resumed_at)
    # The Trainer evaluates the last step too, so the losses after training are known: the best evaluation's when
    # the best checkpoint was loaded back, else the last one's. Evaluating again would cost a pass for nothing.
    history = loss_history(trainer.state.log_history)
    best = trainer.state.best_model_checkpoint if args.load_best_model_at_end else None
    final_step = int(best.rpartition("-")[2]) if best else history["train"][-1][0] if history["train"] else 0
    after = {name: next((loss for step, loss in reversed(history[name]) if step <= final_step), None)
             for name in EVAL_SETS}

    # 5. Save and report (main process).
    if not main:
        return {}
    save_outputs(trainer, tokenizer, work_dir, train_cfg.method, model_path, precision,
                 model_cfg.trust_remote_code)
    tuned = _answers(trainer.model, tokenizer, questions, template, cfg, decoding)
    # the decline threshold of this run, from its own catalog (saved in the report; ask.py and the evaluation use it)
    confidence_floor = catalog_confidence_floor([a.confidence for a in tuned])
    threshold = decline_threshold(cfg.generation.min_confidence, confidence_floor)
    tuned_answers = [declined_when_unsure(a, threshold).text for a in tuned]
    for name in EVAL_SETS:  # where training started
        history[name] = [(0, baseline["losses"][name]), *history[name]]
    plot_loss_curves(history, work_dir / "loss_curves.png", f"{train_cfg.run_name}: {train_cfg.method} on "
                                                         f"{model_cfg.name}")
    epochs_done = (trainer.state.epoch or 0.0) * rounds
    passes_done = epochs_done / rounds
    answer_tokens = sum(train_set["answer_tokens"])
    report = {
        "run_name": train_cfg.run_name, "run_dir": str(run_dir), "model": model_cfg.name, "model_path": model_path,
        "method": train_cfg.method, "precision": precision, "device": device, "template": template,
        "processes": state.num_processes, "trainable_parameters": trainable, "total_parameters": total,
        "catalog_products": len(catalog.known), "declined_products": len(catalog.declined),
        "views": train_cfg.views, "rounds": rounds,
        "train_examples": len(train_set), "truncated_examples": sum(train_set["truncated"]),
        "longest_answer_tokens": max(train_set["answer_tokens"]),  # the answer cap of generation.max_new_tokens=None
        "catalog_confidence_floor": confidence_floor,  # lowers generation.min_confidence for this run
        "decline_threshold": threshold,
        "steps": trainer.state.global_step, "epochs": round(epochs_done, 3),
        "answer_tokens_seen": round(answer_tokens * passes_done),
        "tokens_seen": round(sum(train_set["length"]) * passes_done),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds_in_training": round(eval_seconds, 1),
        "tokens_per_second": round(sum(train_set["length"]) * passes_done / result.metrics["train_runtime"], 1),
        "early_stopping_on": train_cfg.early_stopping_on, "best_checkpoint": _moved(best, work_dir, run_dir),
        "resumed_from": _moved(checkpoint, work_dir, run_dir),
        **{f"{name}_loss_before": baseline["losses"][name] for name in EVAL_SETS},
        **{f"{name}_loss_after": after[name] for name in EVAL_SETS},
        "perplexity_before": perplexity(baseline["losses"]["validation"]),
        "perplexity_after": perplexity(after["validation"]),
        "recall": recall_summary(questions, baseline["answers"], tuned_answers),
        "losses": history, "eval_perplexity": with_perplexity(history["validation"]),
        "sample_answers": [{"question": q["question"], "reference": q["answer"], "base": base, "fine_tuned": tuned}
                           for q, base, tuned in list(zip(questions, baseline["answers"], tuned_answers))[:3]],
    }
    write_json_atomic(work_dir / "config.json", dataclasses.asdict(cfg))
    write_json_atomic(work_dir / "training_report.json", report)
    commit_directory(work_dir, run_dir, unsynced=("checkpoints",))  # the finished run replaces the old one whole
    return report


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


def _sampled(dataset, limit: int | None, seed: int):
    """The seeded uniform sample of read_examples, taken from a tokenized split."""
    keep = sample_indices(len(dataset), limit, seed)
    return dataset if keep is None else dataset.select(keep)


def _answers(model, tokenizer, examples: list[dict], template: str, cfg, decoding) -> list[Generated]:
    prompts = [prompt_text(tokenizer, e["question"], template, cfg.train.system_prompt) for e in examples]
    return generate_answers(model, tokenizer, prompts, decoding)
