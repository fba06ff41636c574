"""The index of every product at full size: built once, loaded by every process, asked as people ask.

Prepares the generated full-size trn.json (2,248,619 lines, as benchmarks/bench_prepare.py makes it), then, each in
its own process so that times and peak memory are its own:
1. builds the saved index of the training split (time, peak RSS, size on disk);
2. today's way before it, the same products read into memory and indexed there by every process that answers
   (time, peak RSS): the baseline;
3. starts a process that loads the saved index (time to ready, memory the index holds), asks 1,000 questions in
   the question forms of data/question_forms.py (training products; test-split products must be turned away):
   per form, what the index did (benchmarks/bench_forms.py), latency p50/p95 one at a time and batched;
4. answers 100 of them end to end with the assistant (the latest run's model, or --run; the base model without
   one).

Targets (issue "the whole catalog answered"; 2 cores): index built in <= 3 min and <= 2 GiB peak RSS; ready in
<= 5 s holding <= 1 GiB for the index; p95 <= 50 ms a question.

    python -m benchmarks.bench_catalog                      # full size (generating the file takes a while)
    python -m benchmarks.bench_catalog --records 200000     # a smaller file for a quick look
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from benchmarks.bench_forms import ask_forms, known_questions, print_table
from benchmarks.bench_prepare import BENCH_DIR, FULL_SIZE, generated_file, measure
from product_qa.configurator import positive_int
from product_qa.errors import run_cli

if TYPE_CHECKING:
    from config import Config
    from product_qa.answering.retrieval import ProductIndex

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = 1000


def non_negative_int(text: str) -> int:
    """An argparse type: 0 or more."""
    return 0 if text.strip() == "0" else positive_int(text)


def data_dir(records: int) -> Path:
    return BENCH_DIR / f"catalog_{records}"


def build_saved(records: int) -> None:
    """Step 1, in its own process: the saved index, built from scratch."""
    from config import DataConfig, RagConfig
    from product_qa.answering.retrieval import ProductIndex

    ProductIndex.open(DataConfig(output_dir=str(data_dir(records))), RagConfig())


def build_in_memory(records: int) -> None:
    """Step 2, the baseline, in its own process: every training product read into memory and indexed there."""
    from config import RagConfig
    from product_qa.answering.retrieval import ProductIndex
    from product_qa.data.examples import read_examples

    ProductIndex.build(read_examples(data_dir(records) / "train.jsonl"), RagConfig())


def ask(records: int, run: str | None, answered: int) -> dict:
    """Step 3 and 4, in its own process: load, then ask."""
    from config import Config, DataConfig, RagConfig
    from product_qa.answering.retrieval import ProductIndex
    from product_qa.data.examples import read_examples

    before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    index = ProductIndex.open(DataConfig(output_dir=str(data_dir(records))), RagConfig())
    ready = time.perf_counter() - started
    index.search(["warm up"])
    held = psutil.Process().memory_info().rss - before
    pick = random.Random(0)
    asked = []  # one form of each product, picked at random: (question, uid, title, form)
    for i in pick.sample(range(len(index)), min(QUESTIONS, len(index))):
        forms = known_questions([index.records[i]], 0)
        asked.append(forms[pick.randrange(len(forms))])
    test = read_examples(data_dir(records) / "test.jsonl", QUESTIONS // 4, 0)
    if not test:
        raise SystemExit("the test split is empty: nothing to ask about products outside the index")
    unknown = [(q, None, None, form) for q, _, _, form in known_questions(test, 0)]
    latencies = []
    for question, _, _, _ in asked:
        began = time.perf_counter()
        index.search([question])
        latencies.append(time.perf_counter() - began)
    began = time.perf_counter()
    index.search([q for q, _, _, _ in asked])
    batched = (time.perf_counter() - began) / len(asked)
    result = {"products": len(index), "ready_s": ready, "index_mib": held / 2**20, "threshold": index.min_score,
              "forms": {"indexed": ask_forms(index, asked), "unknown": ask_forms(index, unknown)},
              "p50_ms": statistics.median(latencies) * 1000,
              "p95_ms": statistics.quantiles(latencies, n=20)[18] * 1000, "batched_ms": batched * 1000}
    if answered:
        result |= end_to_end(index, [q for q, _, _, _ in asked[:answered]],
                             [uid for _, uid, _, _ in asked[:answered]], Config(), run)
    return result


def end_to_end(index: ProductIndex, questions: list[str], uids: list[str], cfg: Config, run: str | None) -> dict:
    """The assistant answering `questions` over the full-size index: seconds a question, right source."""
    from product_qa.answering.systems import Answerer
    from product_qa.runs import find_run

    run_dir = find_run(cfg, run)
    answerer = Answerer(cfg, run_dir)
    answerer._index = index  # the full-size index, not the run's own data's
    answerer.load(["assistant"])
    began = time.perf_counter()
    answers = answerer.answer(questions, "assistant")
    seconds = time.perf_counter() - began
    right = sum(a.source is not None and a.source.matched and a.source.uid == uid
                for a, uid in zip(answers, uids, strict=True))
    return {"end_to_end_s": seconds / len(questions), "end_to_end_right": right / len(questions),
            "end_to_end_model": answerer.model_of("assistant"), "run": str(run_dir) if run_dir else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=positive_int, default=FULL_SIZE, help="lines of the generated trn.json")
    parser.add_argument("--run", help="the run whose model answers end to end (default: the latest)")
    parser.add_argument("--answered", type=non_negative_int, default=100,
                        help="questions answered end to end (0: none)")
    parser.add_argument("--step", choices=("saved", "memory", "ask"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "saved":
        return build_saved(args.records)
    if args.step == "memory":
        return build_in_memory(args.records)
    if args.step == "ask":
        print(json.dumps(ask(args.records, args.run, args.answered)))
        return None

    raw = generated_file(args.records)
    folder = data_dir(args.records)
    print(f"CPU: {psutil.cpu_count()} cores; preparing {raw.name} -> {folder} (reused when up to date)", flush=True)
    subprocess.run([sys.executable, "prepare_data.py", "--data", str(raw), "--no-progress", "--set",
                    f"data.output_dir={folder}"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(folder / "index", ignore_errors=True)
    step = [sys.executable, "-m", "benchmarks.bench_catalog", "--records", str(args.records), "--step"]
    saved_s, saved_mib = measure([*step, "saved"])
    disk_mib = sum(p.stat().st_size for p in (folder / "index").rglob("*") if p.is_file()) / 2**20
    memory_s, memory_mib = measure([*step, "memory"])
    asked = subprocess.run([*step, "ask", "--answered", str(args.answered), *(["--run", args.run] if args.run else [])],
                           cwd=REPO, check=True, capture_output=True, text=True)
    result = json.loads(asked.stdout.strip().splitlines()[-1])

    print(f"\nindexed products: {result['products']:,} (acceptance threshold {result['threshold']:.2f})")
    print(f"{'index':<34}{'build s':>10}{'peak RSS MiB':>14}{'on disk MiB':>13}")
    print(f"{'saved, loaded by every process':<34}{saved_s:>10.1f}{saved_mib:>14,.0f}{disk_mib:>13,.0f}")
    print(f"{'in memory, built by every process':<34}{memory_s:>10.1f}{memory_mib:>14,.0f}{'-':>13}")
    print(f"{QUESTIONS:,} indexed products, each in one form picked at random; test-split products in every form:")
    print_table({name: {form: Counter(counts) for form, counts in tally.items()}
                 for name, tally in result["forms"].items()})
    if args.answered:
        print(f"assistant end to end ({result['end_to_end_model']} model): {result['end_to_end_s']:.2f} s a "
              f"question, right source {result['end_to_end_right']:.0%} of {args.answered}")
    print(f"build: {saved_s:.0f} s (target <= 180 s), peak RSS {saved_mib:,.0f} MiB (target <= 2048 MiB); "
          f"the in-memory baseline {memory_s / saved_s:.2f}x its time, paid by every process")
    print(f"ready in {result['ready_s']:.1f} s (target <= 5 s) holding {result['index_mib']:,.0f} MiB "
          f"(target <= 1024 MiB); latency p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms "
          f"(target <= 50 ms), batched {result['batched_ms']:.1f} ms a question")


if __name__ == "__main__":
    run_cli(main)
