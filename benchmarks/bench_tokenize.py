"""Benchmark of tokenizing the real catalog's training split (a benchmark, not a test).

1. Prepares a generated full-size trn.json (2,248,619 records with the real file's length distribution, as
   benchmarks/bench_prepare.py makes it), which gives about as many training examples as the real file.
2. Tokenizes its train.jsonl the way the main job does (`encoding.tokenized_split`: one process streams the
   split through the encoder block by block into one Arrow file, the tokenizer's threads on every core),
   timing it with its peak RSS, then again to time the cache being reused.
3. Times the path before it (datasets.map in one worker process per core, then save_to_disk) at a smaller
   size, and ours at that same size.

    python -m benchmarks.bench_tokenize [--examples 1300000] [--baseline-examples 100000]

Targets on a 2-core CPU: 1.3M examples in <= 90 s with peak RSS <= 2 GiB; the cache reused in <= 5 s.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import time
from pathlib import Path

from benchmarks.bench_prepare import BENCH_DIR, FULL_SIZE, generated_file, measure
from product_qa.configurator import positive_int
from product_qa.errors import run_cli

REPO = Path(__file__).resolve().parents[1]

TOKENIZE_DIR = BENCH_DIR / "tokenize"


def encoder():
    from config import Config
    from product_qa.data.encoding import ExampleEncoder
    from product_qa.data.prompts import resolve_template
    from product_qa.modeling import load_tokenizer

    cfg = Config()
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir)
    return ExampleEncoder(tokenizer, template=resolve_template(tokenizer, cfg.train.prompt_template),
                          system_prompt=cfg.train.system_prompt, max_length=cfg.train.max_length)


def tokenize_ours(path: Path, chosen) -> int:
    from product_qa.data.encoding import tokenized_split

    return len(tokenized_split(path, chosen, progress=False))


def tokenize_before(path: Path, chosen) -> int:
    """The path before (until issue 29): the split read by Dataset.from_json, encoded by datasets.map in one
    worker process per core (each tokenizing on one thread), then copied by save_to_disk."""
    import os
    import tempfile

    from datasets import Dataset, disable_progress_bars

    from product_qa.data.encoding import ENCODED_FROM, encoded_features

    disable_progress_bars()
    with tempfile.TemporaryDirectory(dir=TOKENIZE_DIR) as staging:
        raw = Dataset.from_json(str(path), cache_dir=f"{staging}/json")
        raw = raw.select_columns([name for name in raw.column_names if name in ENCODED_FROM])
        encoded = raw.map(chosen, batched=True, batch_size=1000, num_proc=len(os.sched_getaffinity(0)),
                          remove_columns=raw.column_names, features=encoded_features(),
                          cache_file_name=f"{staging}/map/encoded.arrow")
        encoded.save_to_disk(f"{staging}/final")
        return len(encoded)


def timed(which: str, path: Path, result: Path) -> None:
    """Run one way in this process; write its seconds (tokenizer loaded, imports done) to `result`."""
    chosen = encoder()  # the imports and the tokenizer load are not tokenization
    started = time.perf_counter()
    count = {"ours": tokenize_ours, "before": tokenize_before}[which](path, chosen)
    result.write_text(json.dumps({"seconds": time.perf_counter() - started, "examples": count}))


def head(path: Path, count: int) -> Path:
    """`count` lines of a split in their own folder (the cache goes beside them): its first lines, and where the
    split is shorter (the generator's duplicates make about 0.9M examples of 2.2M records, the real file about
    1.3M), its lines again from the top."""
    target = TOKENIZE_DIR / f"head_{count}" / path.name
    if path.stat().st_size == 0:
        raise SystemExit(f"{path}: an empty split, nothing to tokenize")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            written = 0
            while written < count:
                with path.open("rb") as source:
                    for line in itertools.islice(source, count - written):
                        out.write(line)
                        written += 1
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=positive_int, default=1_300_000, help="training examples to tokenize")
    parser.add_argument("--baseline-examples", type=positive_int, default=100_000, help="examples the old path gets")
    parser.add_argument("--run", nargs=3, metavar=("WHICH", "PATH", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        timed(args.run[0], Path(args.run[1]), Path(args.run[2]))
        return

    raw = generated_file(FULL_SIZE)
    prepared = BENCH_DIR / "prep_full"
    measure([sys.executable, "prepare_data.py", "--data", str(raw), "--no-progress",
             "--set", f"data.output_dir={prepared}"])  # a no-op when bench_prepare.py made it already
    available = sum(1 for _ in (prepared / "train.jsonl").open("rb"))
    full = head(prepared / "train.jsonl", args.examples)
    small = head(prepared / "train.jsonl", args.baseline_examples)
    print(f"{available:,} training examples prepared; tokenizing {args.examples:,}", flush=True)

    def run(which: str, path: Path) -> tuple[float, float]:
        """Seconds of tokenization alone, and the peak RSS of the process and its workers together."""
        result = TOKENIZE_DIR / "result.json"
        _, mib = measure([sys.executable, "-m", "benchmarks.bench_tokenize", "--run", which, str(path), str(result)])
        return json.loads(result.read_text())["seconds"], mib

    rows = []
    for path in (small, full):
        shutil.rmtree(path.parent / "tokenized", ignore_errors=True)
        rows.append(("ours (stream, 1 process)", path, *run("ours", path)))
        rows.append(("ours, cache reused", path, *run("ours", path)))
    rows.insert(0, ("before (map, processes)", small, *run("before", small)))
    before_s, before_mib = rows[0][2], rows[0][3]

    print(f"\n{'run':<26}{'examples':>11}{'seconds':>9}{'examples/s':>12}{'peak RSS MiB':>14}")
    for name, path, seconds, mib in rows:
        count = args.baseline_examples if path == small else args.examples
        print(f"{name:<26}{count:>11,}{seconds:>9.1f}{count / seconds:>12,.0f}{mib:>14,.0f}")
    ours_small, ours_full, reuse_full = rows[1], rows[3], rows[4]
    scale = args.examples / args.baseline_examples
    print(f"\nat {args.baseline_examples:,} examples: ours {before_s / ours_small[2]:.2f}x the old path's speed, "
          f"{ours_small[3] / before_mib:.2f} of its peak memory; the old path at full size would take about "
          f"{before_s * scale:.0f} s (linear in the examples)")
    print(f"full size: {ours_full[2]:.1f} s (target <= 90 s), peak RSS {ours_full[3]:,.0f} MiB (target <= 2048), "
          f"cache reused in {reuse_full[2]:.1f} s (target <= 5 s)")
    print(f"tokenize {args.examples / 1e6:.1f}M examples: {ours_full[2]:.0f} s, {ours_full[3]:,.0f} MiB peak")


if __name__ == "__main__":
    run_cli(main)
