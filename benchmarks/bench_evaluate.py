"""Benchmark of the evaluation (a benchmark, not a test): N questions (default 200) through every system on the
default model, as `python test_pipeline.py --evaluate` runs them. Target: 200 questions in 10 minutes or less
on this CPU. Every unseen (test-split) product is asked, up to half of N; seen products make up the rest.

Baseline, in the same run: the same systems answering a few questions one at a time
(generation.batch_size=1, what a loop over questions does), seen and unseen in the same proportions, scaled
to N questions. The comparison counts the time spent answering and scoring (the evaluation's own clock, which
starts once the models and the index are loaded), not the start-up before it.

    python -m benchmarks.bench_evaluate [--questions 200] [--baseline-questions 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from config import Config
from product_qa.answering.evaluation import evaluate
from product_qa.configurator import positive_int
from product_qa.data.examples import output_paths, read_examples
from product_qa.data.preparation import prepare
from product_qa.errors import run_cli
from product_qa.runs import latest_run

REPO = Path(__file__).resolve().parents[1]

TARGET_SECONDS = 600


def run(cfg: Config, run_dir: Path | None, seen: int, unseen: int, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        # each product is asked twice (a held-out phrasing and another form): half as many products
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, catalog_questions=seen // 2,
                                                                indexed_questions=0, unknown_questions=unseen // 2,
                                                                output_dir=out),
                                  generation=dataclasses.replace(cfg.generation, batch_size=batch_size))
        return evaluate(cfg, run_dir, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=positive_int, default=200)
    parser.add_argument("--baseline-questions", type=positive_int, default=8)
    args = parser.parse_args()

    cfg = Config()
    prepare(cfg.data, progress=False)
    run_dir = latest_run(Path(cfg.train.output_dir))
    unseen = min(len(read_examples(output_paths(cfg.data)["test"])), args.questions // 2)  # the sample has 24
    seen = args.questions - unseen
    print(f"run {run_dir or '(none: base model only)'}; {seen} seen + {unseen} unseen questions; "
          f"batch {cfg.generation.batch_size}, max_new_tokens {cfg.generation.max_new_tokens}")

    started = time.perf_counter()
    report = run(cfg, run_dir, seen, unseen, cfg.generation.batch_size)
    total = time.perf_counter() - started
    for set_name, result in report["sets"].items():
        for system, entry in result["systems"].items():
            summary = entry["summary"]
            print(f"  {set_name:>6} {system:<15} {summary['seconds']:7.1f} s answering, "
                  f"{summary['new_tokens']:>6} tokens")
    ours = report["seconds"]
    print(f"batched: {args.questions} questions, every system: {total:.0f} s in all ({ours:.0f} s answering and "
          f"scoring, {ours / args.questions:.2f} s per question)")

    baseline_unseen = round(args.baseline_questions * unseen / args.questions)
    baseline = run(cfg, run_dir, args.baseline_questions - baseline_unseen, baseline_unseen, 1)
    scaled = baseline["seconds"] / args.baseline_questions * args.questions
    print(f"one at a time: {args.baseline_questions} questions in {baseline['seconds']:.0f} s -> "
          f"{scaled:.0f} s for {args.questions}; batched is {scaled / ours:.1f}x faster")
    print(f"target: {args.questions} questions <= {TARGET_SECONDS} s -> {total:.0f} s in all "
          f"({total / TARGET_SECONDS:.2f} of the budget) {'MET' if total <= TARGET_SECONDS else 'NOT MET'}")


if __name__ == "__main__":
    run_cli(main)
