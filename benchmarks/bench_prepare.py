"""Benchmark of prepare_data.py against a naive pandas baseline (a benchmark, not a test).

1. Generates a full-size trn.json (2,248,619 records, the real length distribution, a third empty contents)
   and times prepare_data.py on it: records/s and peak RSS (main process plus workers).
2. Times the naive baseline most public attempts use, pd.read_json(lines=True) plus row-wise cleaning, at a
   size it can hold, and our stage at that same size, and prints the ratios.

    python -m benchmarks.bench_prepare [--records 2248619] [--baseline-records 200000]

Targets on a 2-core machine: full size in <= 60 s with peak RSS <= 1 GiB; at the baseline's size >= 5x its
records/s with <= 1/10 of its peak memory. Generated files are cached under outputs/bench/.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from product_qa.configurator import positive_int
from product_qa.data.synthetic import generate_records, write_records
from product_qa.errors import run_cli

REPO = Path(__file__).resolve().parents[1]

FULL_SIZE = 2_248_619
BENCH_DIR = REPO / "outputs" / "bench"


def naive_pandas_prepare(path: str, out_dir: str) -> None:
    """What public notebooks do: load everything into pandas, clean row by row, dedupe, split the head."""
    import pandas as pd

    from product_qa.data.cleaning import clean_text

    frame = pd.read_json(path, lines=True)
    frame = frame[(frame["title"].str.len() > 0) & (frame["content"].str.len() > 0)]
    frame = frame.apply(lambda row: pd.Series({"uid": row["uid"], "title": clean_text(row["title"]),
                                               "content": clean_text(row["content"])}), axis=1)
    frame = frame[frame["content"].str.len() >= 30].drop_duplicates(subset=["title"])
    frame["question"] = "What is " + frame["title"] + "?"
    cut = int(len(frame) * 0.9)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    frame.iloc[:cut].to_json(f"{out_dir}/train.jsonl", orient="records", lines=True, force_ascii=False)
    frame.iloc[cut:].to_json(f"{out_dir}/test.jsonl", orient="records", lines=True, force_ascii=False)


def measure(command: list[str]) -> tuple[float, float]:
    """Run a command; return its wall time (s) and peak RSS (MiB) summed over the process and its children,
    sampled (a child's own peak, unlike ru_maxrss, which Linux carries from the parent through fork and exec)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a long run's warnings never fill it and block
        process = psutil.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=errors)
        peak = 0
        while process.poll() is None:
            try:
                tree = [process, *process.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{errors.read().decode(errors='replace')[-3000:]}")
    return elapsed, peak / 2**20


def generated_file(records: int) -> Path:
    path = BENCH_DIR / f"trn_full_profile_{records}.json"
    if not path.exists():
        print(f"generating {records:,} records -> {path} ...", flush=True)
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        write_records(str(path), generate_records(records, seed=0, length_profile="full"))
    return path


def ours(path: Path, tag: str) -> list[str]:
    return [sys.executable, "prepare_data.py", "--data", str(path), "--force", "--no-progress",
            "--set", f"data.output_dir={BENCH_DIR / ('prep_' + tag)}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=positive_int, default=FULL_SIZE, help="records in the full-size file")
    parser.add_argument("--baseline-records", type=positive_int, default=200_000,
                        help="records the pandas baseline gets")
    parser.add_argument("--run-baseline", nargs=2, metavar=("PATH", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_baseline:
        naive_pandas_prepare(*args.run_baseline)
        return

    small = generated_file(args.baseline_records)
    full = generated_file(args.records)
    print(f"CPU cores: {psutil.cpu_count()}; files: {small.stat().st_size / 2**20:,.0f} MiB and "
          f"{full.stat().st_size / 2**20:,.0f} MiB", flush=True)

    rows = []
    base_s, base_mb = measure([sys.executable, "-m", "benchmarks.bench_prepare", "--run-baseline", str(small),
                               str(BENCH_DIR / "prep_pandas")])
    rows.append(("pandas baseline", args.baseline_records, base_s, base_mb))
    small_s, small_mb = measure(ours(small, "small"))
    rows.append(("prepare_data.py", args.baseline_records, small_s, small_mb))
    full_s, full_mb = measure(ours(full, "full"))
    rows.append(("prepare_data.py", args.records, full_s, full_mb))

    print(f"\n{'run':<18}{'records':>12}{'seconds':>10}{'records/s':>12}{'peak RSS MiB':>14}")
    for name, records, seconds, mib in rows:
        print(f"{name:<18}{records:>12,}{seconds:>10.1f}{records / seconds:>12,.0f}{mib:>14,.0f}")
    speedup = base_s / small_s
    memory_ratio = small_mb / base_mb
    print(f"\nat {args.baseline_records:,} records: {speedup:.1f}x the baseline's records/s (target >= 5x), "
          f"{memory_ratio:.3f} of its peak memory (target <= 0.1)")
    print(f"full size: {full_s:.1f} s (target <= 60 s), peak RSS {full_mb:,.0f} MiB (target <= 1024 MiB)")


if __name__ == "__main__":
    run_cli(main)
