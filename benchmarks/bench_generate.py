"""Benchmark of answer generation (a benchmark, not a test): the same validation questions answered by the default
model one at a time (the baseline: what a loop over questions does) and in batches (left padding, KV cache,
what test_pipeline.py and the evaluation do), in generated tokens per second, measured in one run.
Target: batches of 16 at least 4x the tokens/s of one question at a time.

    python -m benchmarks.bench_generate [--questions 32] [--batch-sizes 1,8,16,32] [--max-new-tokens 64]

Every answer is greedy and stops at its EOS or at max_new_tokens, as in real use. The model is the latest
fine-tuning run's when there is one (it answers like the deployed model), else the base model.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from config import Config
from product_qa.answering.generation import generate_answers
from product_qa.answering.systems import Answerer
from product_qa.configurator import positive_int, positive_ints
from product_qa.data.examples import output_paths, read_examples
from product_qa.data.preparation import prepare
from product_qa.errors import run_cli
from product_qa.runs import latest_run

REPO = Path(__file__).resolve().parents[1]

TARGET_SPEEDUP = 4.0
TARGET_BATCH = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=positive_int, default=32)
    parser.add_argument("--batch-sizes", type=positive_ints, default=[1, 8, 16, 32])
    parser.add_argument("--max-new-tokens", type=positive_int, default=64)
    args = parser.parse_args()

    cfg = Config()
    prepare(cfg.data, progress=False)
    run_dir = latest_run(Path(cfg.train.output_dir))
    answerer = Answerer(cfg, run_dir)
    system = "fine_tuned" if run_dir else "base"
    model = answerer.model(system)
    examples = read_examples(output_paths(answerer.data_cfg)["validation"], args.questions, seed=0)
    prompts = [answerer.prompt(e["question"]) for e in examples]
    print(f"{system} model ({run_dir or answerer.model_cfg.name}), {len(prompts)} validation questions, "
          f"max_new_tokens={args.max_new_tokens}, greedy; {model.device}")

    generate_answers(model, answerer.tokenizer, prompts[:2], dataclasses.replace(cfg.generation, max_new_tokens=4))
    rates, outputs = {}, {}
    for batch_size in args.batch_sizes:
        decoding = dataclasses.replace(cfg.generation, batch_size=batch_size, max_new_tokens=args.max_new_tokens)
        started = time.perf_counter()
        answers = generate_answers(model, answerer.tokenizer, prompts, decoding)
        seconds = time.perf_counter() - started
        tokens = sum(a.new_tokens for a in answers)
        rates[batch_size], outputs[batch_size] = tokens / seconds, [a.text for a in answers]
        print(f"batch {batch_size:>3}: {tokens:>5} tokens in {seconds:6.1f} s = {rates[batch_size]:6.1f} tokens/s "
              f"({seconds / len(prompts):.2f} s per answer)")
    baseline = rates.get(1)
    if baseline:
        for batch_size, rate in rates.items():
            if batch_size != 1:
                same = sum(a == b for a, b in zip(outputs[batch_size], outputs[1], strict=True))
                print(f"batch {batch_size:>3} vs one at a time: {rate / baseline:.1f}x tokens/s; "
                      f"{same}/{len(prompts)} answers identical")
        if TARGET_BATCH in rates:
            ratio = rates[TARGET_BATCH] / baseline
            print(f"target: batch {TARGET_BATCH} >= {TARGET_SPEEDUP:.0f}x one at a time -> {ratio:.1f}x "
                  f"{'MET' if ratio >= TARGET_SPEEDUP else 'NOT MET'}")


if __name__ == "__main__":
    run_cli(main)
