"""Benchmark of how fast the main job learns (a benchmark, not a test).

The main job (`fine_tuning_project.py` on the bundled sample) runs twice in one benchmark run, as a separate
process each time, from the same prepared data:

- NEW: the speed settings of config.py;
- TODAY: the settings before the training-speed work, reached through `--set` (TODAY_SETTINGS below).

For each it reports answer tokens (those that carry the loss) per second of training and of the training loop
alone (training minus the evaluations inside it), answer tokens learned per minute of the whole job (start-up,
data, tokenization, evaluations, sample answers and saving included), the final validation loss, and the
model FLOPs utilization (MFU) of the training loop against a matmul peak measured here at the model's own
shapes, in the precision used. It ends with two lines:

    main job: answer tokens learned per minute NEW vs TODAY (R.RRx)
    training loop MFU: P% (PRECISION on CPU NAME)

    python -m benchmarks.bench_train [--set SECTION.FIELD=VALUE ...]   # extra settings for both jobs

The sizes of tokenizing the real catalog are measured by benchmarks/bench_tokenize.py.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from config import Config
from product_qa.configurator import apply_overrides
from product_qa.data.catalog import VIEWS_DIR
from product_qa.data.encoding import TOKENIZED_DIR, ExampleEncoder
from product_qa.data.examples import output_paths, read_examples
from product_qa.data.preparation import prepare
from product_qa.data.prompts import resolve_template
from product_qa.devices import best_device, select_precision
from product_qa.errors import run_cli
from product_qa.modeling import load_tokenizer, resolve_model_path

REPO = Path(__file__).resolve().parents[1]

# The defaults before the training-speed work. Evaluation gathering every logit (prediction_loss_only=False)
# is not a setting: it was pure waste, so it is gone from both.
TODAY_SETTINGS = ["train.lora_dropout=0.05", "train.answer_only_logits=False"]
# The workload both jobs train, as the speed work measured it: every training product of the sample once, in
# its one prepared phrasing, at LoRA rank 16 (the knowledge recipe of config.py is measured by
# bench_knowledge.py; this benchmark compares the speed settings).
WORKLOAD = ["train.max_train_products=None", "train.unknown_share=0.0", "train.views=1", "train.epochs=1",
            "train.lora_r=16", "train.lora_alpha=32", "train.learning_rate=3e-4", "train.recall_questions=0",
            "train.early_stopping_on=validation"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_features() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags) or "unknown"


def layer_matmul_peak(model_config, rows: int, dtype: torch.dtype, device: str, seconds: float = 3.0) -> float:
    """FLOP/s of one decoder layer's matrix products (q, k, v, o, gate, up, down) on `rows` tokens: the peak
    this machine reaches at the model's own shapes."""
    hidden, mlp = model_config.hidden_size, model_config.intermediate_size
    kv = model_config.num_key_value_heads * (hidden // model_config.num_attention_heads)
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden), (hidden, mlp), (hidden, mlp),
              (mlp, hidden)]
    weights = [torch.randn(k, n, dtype=dtype, device=device) for k, n in shapes]
    inputs = {k: torch.randn(rows, k, dtype=dtype, device=device) for k in (hidden, mlp)}
    flops_per_layer = sum(2 * rows * k * n for k, n in shapes)
    for w in weights:  # warm-up
        inputs[w.shape[0]] @ w
    layers, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for w in weights:
            inputs[w.shape[0]] @ w
        layers += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return flops_per_layer * layers / (time.perf_counter() - started)


def example_flops(model_config, length: int, answer_tokens: int, trainable: int, full: bool) -> float:
    """The FLOPs one training example needs (forward and backward), counting only useful work:
    - each frozen weight of the decoder's linear layers: 2 FLOPs per token forward, 2 for the input gradient
      (6 when it is trained: full fine-tuning); each LoRA weight 6;
    - the output layer only on the answer tokens (the only logits the loss needs), 4 per weight, 6 if trained;
    - causal attention (scores and weighted sum, the lower triangle): 2 * length^2 * width per layer forward,
      three times that with the backward pass.
    The embedding lookup costs no FLOPs."""
    c = model_config
    hidden, width = c.hidden_size, c.hidden_size
    kv = c.num_key_value_heads * (hidden // c.num_attention_heads)
    linear = c.num_hidden_layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * c.intermediate_size)
    output = c.vocab_size * hidden
    per_weight = 6 if full else 4
    lora = 0 if full else trainable
    return (per_weight * linear * length + 6 * lora * length + per_weight * output * answer_tokens
            + 3 * 2 * c.num_hidden_layers * length**2 * width)


def run_job(name: str, settings: list[str], data_dir: Path, runs_dir: Path) -> dict:
    """The main job as a user runs it, timed from process start to exit; its training report."""
    for folder in (data_dir, data_dir / VIEWS_DIR):  # both jobs tokenize
        shutil.rmtree(folder / TOKENIZED_DIR, ignore_errors=True)
    command = [sys.executable, "fine_tuning_project.py", "--no-progress", "--run-name", name,
               *sum((["--set", s] for s in settings), [])]
    print(f"running {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    report = json.loads((runs_dir / name / "training_report.json").read_text())
    return {**report, "job_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="a setting for both jobs (repeatable)")
    args = parser.parse_args()

    args.overrides = [*WORKLOAD, *args.overrides]
    cfg = apply_overrides(Config(), args.overrides)
    prepare(cfg.data, progress=False)
    model_path = resolve_model_path(cfg.model.name, cfg.model.cache_dir)
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(model_path)
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir)
    encoder = ExampleEncoder(tokenizer, template=resolve_template(tokenizer, cfg.train.prompt_template),
                             system_prompt=cfg.train.system_prompt, max_length=cfg.train.max_length)
    examples = encoder.encode(read_examples(output_paths(cfg.data)["train"]))
    device = best_device()
    precision = select_precision(cfg.train.precision, device)
    mean_length = sum(e["length"] for e in examples) / len(examples)
    rows = round(cfg.train.batch_size * mean_length)
    peak = layer_matmul_peak(model_config, rows, DTYPES[precision], device)
    cpu = cpu_name()
    print(f"CPU: {cpu} ({cpu_features()}), {torch.get_num_threads()} threads; device {device}, precision "
          f"{precision}; matmul peak at the model's shapes ({rows} tokens x hidden {model_config.hidden_size}, "
          f"MLP {model_config.intermediate_size}): {peak / 1e9:,.1f} GFLOP/s", flush=True)

    dirs = Path(cfg.data.output_dir), Path(cfg.train.output_dir)
    jobs = {"TODAY": run_job("bench-today", [*args.overrides, *TODAY_SETTINGS], *dirs),
            "NEW": run_job("bench-new", args.overrides, *dirs)}
    # a shared machine gives less at times: the peak is the best of the readings before and after the jobs
    peak = max(peak, layer_matmul_peak(model_config, rows, DTYPES[precision], device))
    print(f"matmul peak at the model's shapes, best of two readings: {peak / 1e9:,.1f} GFLOP/s")

    header = (f"\n{'':<7}{'job s':>8}{'train s':>9}{'evals s':>9}{'loop s':>8}{'answer tok':>12}"
              f"{'ans tok/s train':>17}{'ans tok/s loop':>16}{'ans tok/min job':>17}{'MFU loop':>10}{'val loss':>10}")
    print(header)
    summary = {}
    for name, job in jobs.items():
        loop = job["train_seconds"] - job["eval_seconds_in_training"]
        flops = job["epochs"] * sum(example_flops(model_config, e["length"], e["answer_tokens"],
                                                  job["trainable_parameters"], job["method"] == "full")
                                    for e in examples)
        summary[name] = {"per_min": job["answer_tokens_seen"] / job["job_seconds"] * 60, "mfu": flops / loop / peak}
        print(f"{name:<7}{job['job_seconds']:>8.0f}{job['train_seconds']:>9.0f}{job['eval_seconds_in_training']:>9.0f}"
              f"{loop:>8.0f}{job['answer_tokens_seen']:>12,}{job['answer_tokens_seen'] / job['train_seconds']:>17.1f}"
              f"{job['answer_tokens_seen'] / loop:>16.1f}{summary[name]['per_min']:>17,.0f}"
              f"{summary[name]['mfu']:>10.1%}{job['validation_loss_after']:>10.3f}")
    quality = jobs["NEW"]["validation_loss_after"] / jobs["TODAY"]["validation_loss_after"] - 1
    print(f"\nfinal validation loss NEW vs TODAY: {quality:+.1%} (target: no more than 2% worse)")
    print(f"main job: answer tokens learned per minute {summary['NEW']['per_min']:,.0f} vs "
          f"{summary['TODAY']['per_min']:,.0f} ({summary['NEW']['per_min'] / summary['TODAY']['per_min']:.2f}x)")
    print(f"training loop MFU: {summary['NEW']['mfu']:.0%} ({precision} on CPU {cpu})"
          if device == "cpu" else f"training loop MFU: {summary['NEW']['mfu']:.0%} ({precision} on "
          f"{torch.cuda.get_device_name()})")


if __name__ == "__main__":
    run_cli(main)
