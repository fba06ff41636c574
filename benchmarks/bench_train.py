"""Benchmark of how fast the main job learns, next to what a user would pick instead (a benchmark, not a test).

Three recipes train the same examples (the main job's training views of the bundled sample, from the same
prepared data), each in a process of its own, in one benchmark run:

- OURS: the main job, `fine_tuning_project.py`, with config.py's recipe;
- TRL: TRL's `SFTTrainer` on the same views, read through their `messages` column as prompt-completion pairs
  (its completion-only loss), with the same model, precision, LoRA settings, learning rate, schedule, batch size
  and passes; otherwise its documented defaults (`gradient_checkpointing` off, as in OURS: it saves memory a
  135M model does not need, at about 30% more compute);
- PADDED: the recipe of the public attempts at this task: the Hugging Face Trainer, every example padded to
  train.max_length, the loss on every token (prompt and padding-free answer alike).

For each: answer tokens (those a recipe is trained to produce) per second of training, the whole job's wall
time, catalog recall after training (the main job's recall questions, answered the same way for all three
models: greedy, closed book, no decline gate) and peak memory. It ends with two lines:

    learned-token rate vs TRL SFTTrainer: R.RRx (recall ours A.AAA, TRL B.BBB)
    learned-token rate vs padded recipe: R.RRx

    python -m benchmarks.bench_train [--set SECTION.FIELD=VALUE ...]   # settings for all three recipes

The sizes of tokenizing the real catalog are measured by benchmarks/bench_tokenize.py.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_prepare import measure
from config import Config
from product_qa.configurator import apply_overrides
from product_qa.errors import UserError, run_cli

REPO = Path(__file__).resolve().parents[1]
BENCH_RUNS = REPO / "outputs" / "bench" / "train"
RECIPES = ("OURS", "TRL", "PADDED")
# The assistant check after training answers questions none of the other recipes is asked: not part of the race.
# The same steps for all three: OURS does not stop once its catalog is learned (the others cannot), so the rate
# compares the same work (bench_knowledge.py measures what stopping saves).
WORKLOAD = ["train.assistant_questions=0", "train.report_to=none", "train.learned_catalog_loss=None"]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_features() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags) or "unknown"


@dataclass(frozen=True)
class Workload:
    """What every recipe trains: the main job's views and recall questions, and its training settings."""

    cfg: Config
    views: Path  # the main job's training views (JSON Lines with a messages column)
    passes: float  # passes over the views (train.epochs / rounds)
    answer_tokens: int  # answer tokens in one pass, EOS included, as the main job counts them
    longest_answer: int


def workload(cfg: Config) -> Workload:
    from product_qa.data.catalog import read_catalog, training_rounds, views_file
    from product_qa.data.encoding import ExampleEncoder
    from product_qa.data.examples import output_paths, read_examples
    from product_qa.data.preparation import prepare
    from product_qa.data.prompts import resolve_template
    from product_qa.modeling import load_tokenizer

    prepare(cfg.data, progress=False)
    train_path = output_paths(cfg.data)["train"]
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir)
    encoder = ExampleEncoder(tokenizer, template=resolve_template(tokenizer, cfg.train.prompt_template),
                             system_prompt=cfg.train.system_prompt, max_length=cfg.train.max_length)
    views = views_file(train_path, read_catalog(train_path, cfg.train), cfg.train, encoder)
    encoded = encoder.encode(read_examples(views))
    return Workload(cfg, views, cfg.train.epochs / training_rounds(cfg.train.epochs),
                    sum(e["answer_tokens"] for e in encoded), max(e["answer_tokens"] for e in encoded))


# --------------------------------------------------------------------------------- the other two recipes
def _lora_config(cfg: Config):
    from peft import LoraConfig

    targets = cfg.train.lora_target_modules
    return LoraConfig(r=cfg.train.lora_r, lora_alpha=cfg.train.lora_alpha, lora_dropout=cfg.train.lora_dropout,
                      target_modules=targets if targets == "all-linear" else targets.split(","), task_type="CAUSAL_LM")


def _shared_arguments(cfg: Config, passes: float, examples: int, device: str, precision: str, output_dir: Path
                      ) -> dict:
    """The TrainingArguments both other recipes share with the main job's (trainer.training_arguments)."""
    train = cfg.train
    steps = math.ceil(examples / (train.batch_size * train.gradient_accumulation_steps) * passes)
    return {"output_dir": str(output_dir), "num_train_epochs": passes, "per_device_train_batch_size": train.batch_size,
            "gradient_accumulation_steps": train.gradient_accumulation_steps, "learning_rate": train.learning_rate,
            "weight_decay": train.weight_decay, "warmup_steps": round(train.warmup_ratio * steps),
            "lr_scheduler_type": train.lr_scheduler, "bf16": precision == "bf16", "fp16": precision == "fp16",
            "use_cpu": device == "cpu", "seed": train.seed,
            "data_seed": train.seed, "logging_steps": train.logging_steps, "save_strategy": "no",
            "report_to": "none", "disable_tqdm": True}


def train_other(recipe: str, cfg: Config, out: Path) -> None:
    """TRL or PADDED: train on the main job's views, save the merged model to `out`, write out/result.json."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from product_qa.data.examples import read_examples
    from product_qa.devices import best_device, select_precision
    from product_qa.modeling import resolve_model_path

    work = workload(cfg)
    model_path = resolve_model_path(cfg.model.name, cfg.model.cache_dir)
    device = best_device()
    precision = select_precision(cfg.train.precision, device)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    rows = read_examples(work.views)
    if any(r.get("messages") is None for r in rows):
        raise UserError("the other recipes train chat turns only: run with train.document_views=0")
    arguments = _shared_arguments(cfg, work.passes, len(rows), device, precision, out / "checkpoints")
    if recipe == "TRL":
        from trl import SFTConfig, SFTTrainer

        # prompt-completion conversational data: TRL applies the chat template and trains the completion only
        data = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
        trainer = SFTTrainer(model=model, args=SFTConfig(**arguments, max_length=cfg.train.max_length,
                                                                gradient_checkpointing=False),
                             train_dataset=data, processing_class=tokenizer, peft_config=_lora_config(cfg))
    else:
        from peft import get_peft_model
        from transformers import DataCollatorForLanguageModeling

        texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
        data = Dataset.from_dict(tokenizer(texts, padding="max_length", truncation=True,
                                           max_length=cfg.train.max_length))
        trainer = Trainer(model=get_peft_model(model, _lora_config(cfg)), args=TrainingArguments(**arguments),
                          train_dataset=data, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    began = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - began
    trainer.model.merge_and_unload().save_pretrained(out / "merged")
    tokenizer.save_pretrained(out / "merged")
    result = {"train_seconds": train_seconds, "answer_tokens_seen": round(work.answer_tokens * work.passes)}
    (out / "result.json").write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------- the race
def run_recipe(recipe: str, overrides: list[str]) -> dict:
    """One recipe in a process of its own, timed from its start to its exit, its memory sampled meanwhile."""
    out = BENCH_RUNS / recipe.lower()
    shutil.rmtree(out, ignore_errors=True)
    settings = sum((["--set", s] for s in overrides), [])
    if recipe == "OURS":
        command = [sys.executable, "fine_tuning_project.py", "--no-progress", "--run-name", out.name,
                   "--set", f"train.output_dir={BENCH_RUNS}", *settings]
    else:
        command = [sys.executable, "-m", "benchmarks.bench_train", "--recipe", recipe, "--out", str(out), *settings]
    print(f"running {recipe}: {' '.join(command[1:])}", flush=True)
    seconds, peak = measure(command)
    if recipe != "OURS":
        return {**json.loads((out / "result.json").read_text()), "job_seconds": seconds, "peak_rss_mib": peak}
    report = json.loads((out / "training_report.json").read_text())
    return {"train_seconds": report["train_seconds"], "answer_tokens_seen": report["answer_tokens_seen"],
            "job_seconds": seconds, "peak_rss_mib": peak}


def recall(model_dir: Path, work: Workload) -> float:
    """Mean ROUGE-L of the model's greedy answers to the main job's recall questions (closed book)."""
    from product_qa.answering import metrics
    from product_qa.answering.generation import generate_answers, with_answer_cap
    from product_qa.data.catalog import read_catalog, recall_questions
    from product_qa.data.examples import output_paths
    from product_qa.data.prompts import prompt_text, resolve_template
    from product_qa.modeling import load_inference_model, load_tokenizer

    cfg = work.cfg
    catalog = read_catalog(output_paths(cfg.data)["train"], cfg.train)
    questions = recall_questions(catalog, cfg.train.recall_questions or 32, cfg.train.seed)
    tokenizer = load_tokenizer(str(model_dir), cfg.model.cache_dir)
    template = resolve_template(tokenizer, cfg.train.prompt_template)
    prompts = [prompt_text(tokenizer, q["question"], template, cfg.train.system_prompt) for q in questions]
    answers = generate_answers(load_inference_model(str(model_dir)), tokenizer, prompts,
                               with_answer_cap(cfg.generation, work.longest_answer))
    scores = metrics.rouge_scores([a.text for a in answers], [q["answer"] for q in questions])
    return sum(s["rougeL"] for s in scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="a setting for every recipe (repeatable)")
    parser.add_argument("--recipe", choices=RECIPES[1:], help=argparse.SUPPRESS)  # one recipe's own process
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    overrides = [*WORKLOAD, *args.overrides]
    cfg = apply_overrides(Config(), overrides)  # checked before any work
    if args.recipe:
        train_other(args.recipe, cfg, args.out)
        return
    import torch

    work = workload(cfg)  # prepared data and views made once, before the race
    print(f"CPU: {cpu_name()} ({cpu_features()}), {torch.get_num_threads()} threads; "
          f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; "
          f"{work.answer_tokens * work.passes:,.0f} answer tokens to learn", flush=True)
    header = f"{'':<8}{'job s':>8}{'train s':>9}{'answer tok':>12}{'ans tok/s':>11}{'peak MiB':>10}{'recall':>8}"
    jobs: dict[str, dict] = {}
    for recipe in RECIPES:  # each line as its recipe ends: a long race read in pieces
        job = jobs[recipe] = run_recipe(recipe, overrides)
        job["recall"] = recall(BENCH_RUNS / recipe.lower() / "merged", work)  # every model answered alike
        job["rate"] = job["answer_tokens_seen"] / job["train_seconds"]
        job["line"] = (f"{recipe:<8}{job['job_seconds']:>8.0f}{job['train_seconds']:>9.0f}"
                       f"{job['answer_tokens_seen']:>12,}{job['rate']:>11.1f}{job['peak_rss_mib']:>10,.0f}"
                       f"{job['recall']:>8.3f}")
        print(f"{header}\n{job['line']}", flush=True)
    print(f"\n{header}\n" + "\n".join(job["line"] for job in jobs.values()))
    ours, trl, padded = (jobs[name] for name in RECIPES)
    print(f"\nlearned-token rate vs TRL SFTTrainer: {ours['rate'] / trl['rate']:.2f}x "
          f"(recall ours {ours['recall']:.3f}, TRL {trl['recall']:.3f})")
    print(f"learned-token rate vs padded recipe: {ours['rate'] / padded['rate']:.2f}x")


if __name__ == "__main__":
    run_cli(main)
