"""Benchmark of training throughput (a benchmark, not a test): the same model, data and number of steps run
three ways, each reported in answer tokens per second (the tokens that carry the loss):

1. our batching: length-grouped batches padded to their longest example (what fine_tuning_project.py does);
2. every example padded to a fixed length: 512 tokens, as most public attempts do, and our max_length;
3. bf16 autocast against fp32 (on a CPU without native bf16 the bf16 run is cut to one small step).

It also prints model FLOPs utilization (MFU) against a matmul peak measured in the same run.

    python benchmarks/bench_train.py [--steps 3] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config import Config  # noqa: E402
from product_qa.modeling import load_tokenizer, resolve_model_path  # noqa: E402
from product_qa.preparation import output_paths, prepare  # noqa: E402
from product_qa.prompts import resolve_template  # noqa: E402
from product_qa.training import (AnswerOnlyCollator, cpu_supports_bf16, encode_example, load_model,  # noqa: E402
                                 read_examples, training_device)

PUBLIC_PAD_LENGTH = 512


def matmul_peak_flops(dtype: torch.dtype, device: str, size: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def batches(features: list[dict], batch_size: int, steps: int, grouped: bool, seed: int) -> list[list[dict]]:
    """The batches of `steps` steps: length-grouped (the Trainer's sampler) or in random order."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    generator = torch.Generator().manual_seed(seed)
    if grouped:
        order = list(LengthGroupedSampler(batch_size, lengths=[f["length"] for f in features], generator=generator))
    else:
        order = torch.randperm(len(features), generator=generator).tolist()
    return [[features[i] for i in order[s * batch_size:(s + 1) * batch_size]] for s in range(steps)]


def run(model_path: str, cfg, features, *, steps, batch_size, pad_to, grouped, precision, device) -> dict:
    """Train LoRA for `steps` steps; return answer tokens/s, all real tokens/s and seconds."""
    torch.manual_seed(0)
    model = load_model(model_path, method="lora", precision=precision, device=device, train_cfg=cfg.train,
                       trust_remote_code=False).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.learning_rate)
    collate = AnswerOnlyCollator(pad_token_id=0, pad_to=pad_to)
    work = batches(features, batch_size, steps, grouped, seed=0)
    answer_tokens = real_tokens = padded_tokens = 0
    started = time.perf_counter()
    for batch_features in work:
        batch = {k: v.to(device) for k, v in collate(batch_features).items()}
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        answer_tokens += int((batch["labels"] != -100).sum())
        real_tokens += int(batch["attention_mask"].sum())
        padded_tokens += batch["input_ids"].numel()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "answer_tokens_per_s": answer_tokens / seconds,
            "real_tokens_per_s": real_tokens / seconds, "padding_share": 1 - real_tokens / padded_tokens,
            "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    cfg = Config()
    prepare(cfg.data, progress=False)
    model_path = resolve_model_path(cfg.model.name, cfg.model.cache_dir)
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir)
    template = resolve_template(tokenizer, cfg.train.prompt_template)
    examples = read_examples(output_paths(cfg.data)["train"])
    features = [encode_example(tokenizer, e, template=template, system_prompt=cfg.train.system_prompt,
                               max_length=cfg.train.max_length) for e in examples]
    device = training_device()
    torch.set_num_threads(torch.get_num_threads())
    peak = matmul_peak_flops(torch.float32, device)
    native_bf16 = device == "cuda" or cpu_supports_bf16()
    print(f"device {device}, {torch.get_num_threads()} threads, fp32 matmul peak {peak / 1e9:,.0f} GFLOP/s, "
          f"bf16 matmul {matmul_peak_flops(torch.bfloat16, device, size=1024, repeats=2) / 1e9:,.1f} GFLOP/s, "
          f"native bf16: {native_bf16}; {args.steps} steps of {args.batch_size} examples", flush=True)

    common = {"steps": args.steps, "batch_size": args.batch_size, "device": device}
    fp32 = "fp32" if device == "cpu" else "bf16"
    runs = {"ours: length-grouped, padded to the batch's longest": run(
        model_path, cfg, features, pad_to=None, grouped=True, precision=fp32, **common)}
    for length in sorted({cfg.train.max_length, PUBLIC_PAD_LENGTH}):
        name = f"every example padded to {length}" + (" (max_length)" if length == cfg.train.max_length else "") + (
            " (public attempts)" if length == PUBLIC_PAD_LENGTH else "")
        runs[name] = run(model_path, cfg, features, pad_to=length, grouped=False, precision=fp32, **common)
    baselines = list(runs)[1:]
    if device == "cpu":
        small = {**common, "steps": args.steps if native_bf16 else 1, "batch_size": args.batch_size if native_bf16
                 else 2}
        runs["ours, bf16 autocast" + ("" if native_bf16 else " (1 step of 2: emulated bf16 is slow)")] = run(
            model_path, cfg, features, pad_to=None, grouped=True, precision="bf16", **small)

    print(f"\n{'run':<62}{'answer tok/s':>13}{'all tok/s':>11}{'padding':>9}{'MFU':>7}")
    for name, result in runs.items():
        # LoRA: the forward pass (2 FLOPs per parameter and token) and the backward pass through the activations
        # (2 more); the adapters' own weight gradients are negligible.
        mfu = 4 * result["parameters"] * result["real_tokens_per_s"] / peak
        print(f"{name:<62}{result['answer_tokens_per_s']:>13,.1f}{result['real_tokens_per_s']:>11,.1f}"
              f"{result['padding_share']:>9.0%}{mfu:>7.1%}")
    ours, names = runs[next(iter(runs))], list(runs)
    for name in baselines:
        print(f"ours vs '{name}': {ours['answer_tokens_per_s'] / runs[name]['answer_tokens_per_s']:.1f}x "
              "answer tokens/s (target >= 3x)")
    if device == "cpu":
        print(f"bf16 vs fp32: {runs[names[-1]]['answer_tokens_per_s'] / ours['answer_tokens_per_s']:.3f}x")


if __name__ == "__main__":
    main()
