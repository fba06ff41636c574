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
from transformers import set_seed

from product_qa.encoding import ExampleEncoder, perplexity, read_examples, sample_indices, tokenized_split
from product_qa.errors import UserError
from product_qa.generation import generate_answers
from product_qa.io_utils import write_json_atomic
from product_qa.modeling import load_tokenizer, resolve_model_path
from product_qa.preparation import output_paths, prepare
from product_qa.prompts import prompt_text, resolve_template
from product_qa.reporting import plot_loss_curves
from product_qa.training import (build_trainer, count_parameters, load_model, loss_history, prepare_run_dir,
                                 save_outputs, select_precision, training_arguments, training_device,
                                 with_perplexity)

# peft still calls the old name inside transformers; the warning says nothing the user can act on.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def fine_tune(cfg, *, resume: bool = False, progress: bool = True) -> dict:
    state = PartialState()  # knows this process's rank under torchrun / accelerate launch
    main = state.is_main_process
    train_cfg, model_cfg = cfg.train, cfg.model
    run_dir = Path(train_cfg.output_dir) / train_cfg.run_name

    # 1. Data, model files and token ids: made once, by the main process, while the others wait (they then read
    # the tokenized splits from the cache the main process wrote).
    with state.main_process_first():
        prepare(cfg.data, progress=progress and main)
        model_path = resolve_model_path(model_cfg.name, model_cfg.cache_dir)
        checkpoint = prepare_run_dir(run_dir, resume) if main else None
        tokenizer = load_tokenizer(model_cfg.name, model_cfg.cache_dir, model_cfg.trust_remote_code)
        template = resolve_template(tokenizer, train_cfg.prompt_template)
        encoder = ExampleEncoder(tokenizer, template=template, system_prompt=train_cfg.system_prompt,
                                 max_length=train_cfg.max_length)
        paths = output_paths(cfg.data)
        splits = {split: tokenized_split(paths[split], encoder, processes=cfg.data.workers, progress=progress and main)
                  for split in ("train", "validation")}
        train_set = _sampled(splits["train"], train_cfg.max_train_examples, train_cfg.seed)
        eval_set = _sampled(splits["validation"], train_cfg.max_eval_examples, train_cfg.seed)
    if resume and not main:
        checkpoint = prepare_run_dir(run_dir, resume)
    eval_examples = read_examples(paths["validation"], train_cfg.max_eval_examples, train_cfg.seed)

    # 2. The model, at the precision this device does best.
    device = training_device()
    if device == "cuda" and torch.cuda.device_count() > 1 and state.num_processes == 1:
        raise UserError(f"{torch.cuda.device_count()} GPUs in one process: launch one process per GPU with "
                        f"`torchrun --nproc_per_node {torch.cuda.device_count()} fine_tuning_project.py`, or "
                        "pick one GPU with CUDA_VISIBLE_DEVICES=0")
    precision = select_precision(train_cfg.precision, device)
    set_seed(train_cfg.seed)  # LoRA's initial weights
    model = load_model(model_path, method=train_cfg.method, precision=precision, device=device,
                       train_cfg=train_cfg, trust_remote_code=model_cfg.trust_remote_code)
    trainable, total = count_parameters(model)
    args = training_arguments(train_cfg, run_dir, precision, device, len(train_set))
    trainer = build_trainer(model, tokenizer, train_set, eval_set, args, train_cfg, progress and main)

    # 3. Before training: the base model's answers and validation loss (kept for a resumed run).
    questions = eval_examples[: train_cfg.base_answer_examples]
    baseline_path = run_dir / "baseline.json"
    if checkpoint is None:
        base_answers = _answers(trainer.model, tokenizer, questions, template, cfg) if main else []
        baseline = {"eval_loss": trainer.evaluate()["eval_loss"], "answers": base_answers}
        if main:
            write_json_atomic(baseline_path, baseline)
    else:
        baseline = orjson.loads(baseline_path.read_bytes())

    # 4. Train. Seeded again here: the evaluation above draws random numbers (its length-grouped sampler), and a
    # resumed run skips it, yet both must see the training data in the same order.
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
    eval_seconds = sum(e["eval_runtime"] for e in trainer.state.log_history
                       if "eval_runtime" in e and e["step"] > resumed_at)
    # The Trainer evaluates the last step too, so the loss after training is known: the best evaluation's when
    # the best checkpoint was loaded back, else the last one's. Evaluating again would cost a pass for nothing.
    evaluations = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e and e["step"] > 0]
    best_loaded = args.load_best_model_at_end and trainer.state.best_model_checkpoint is not None
    after = trainer.state.best_metric if best_loaded else evaluations[-1]

    # 5. Save and report (main process).
    if not main:
        return {}
    save_outputs(trainer, tokenizer, run_dir, train_cfg.method, model_path, precision,
                 model_cfg.trust_remote_code)
    tuned_answers = _answers(trainer.model, tokenizer, questions, template, cfg)
    history = loss_history(trainer.state.log_history)
    history["eval"] = [(0, baseline["eval_loss"]), *history["eval"]]  # where training started
    plot_loss_curves(history, run_dir / "loss_curves.png", f"{train_cfg.run_name}: {train_cfg.method} on "
                                                         f"{model_cfg.name}")
    epochs_done = trainer.state.epoch or 0.0
    answer_tokens = sum(train_set["answer_tokens"])
    report = {
        "run_name": train_cfg.run_name, "run_dir": str(run_dir), "model": model_cfg.name, "model_path": model_path,
        "method": train_cfg.method, "precision": precision, "device": device, "template": template,
        "processes": state.num_processes, "trainable_parameters": trainable, "total_parameters": total,
        "train_examples": len(train_set), "eval_examples": len(eval_set),
        "truncated_examples": sum(train_set["truncated"]),
        "steps": trainer.state.global_step, "epochs": round(epochs_done, 3),
        "answer_tokens_seen": round(answer_tokens * epochs_done),
        "tokens_seen": round(sum(train_set["length"]) * epochs_done),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds_in_training": round(eval_seconds, 1),
        "tokens_per_second": round(sum(train_set["length"]) * epochs_done / result.metrics["train_runtime"], 1),
        "eval_loss_before": baseline["eval_loss"], "eval_loss_after": after,
        "perplexity_before": perplexity(baseline["eval_loss"]), "perplexity_after": perplexity(after),
        "best_checkpoint": trainer.state.best_model_checkpoint, "resumed_from": checkpoint,
        "losses": history, "eval_perplexity": with_perplexity(history["eval"]),
        "sample_answers": [{"question": q["question"], "reference": q["answer"], "base": base, "fine_tuned": tuned}
                           for q, base, tuned in zip(questions, baseline["answers"], tuned_answers)],
    }
    write_json_atomic(run_dir / "config.json", dataclasses.asdict(cfg))
    write_json_atomic(run_dir / "training_report.json", report)
    return report


def _sampled(dataset, limit: int | None, seed: int):
    """The seeded uniform sample of read_examples, taken from a tokenized split."""
    keep = sample_indices(len(dataset), limit, seed)
    return dataset if keep is None else dataset.select(keep)


def _answers(model, tokenizer, examples: list[dict], template: str, cfg) -> list[str]:
    prompts = [prompt_text(tokenizer, e["question"], template, cfg.train.system_prompt) for e in examples]
    return [answer.text for answer in generate_answers(model, tokenizer, prompts, cfg.generation)]
