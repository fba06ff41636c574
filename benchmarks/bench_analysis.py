"""Benchmark of data_analysis.py on a full-size generated trn.json (a benchmark, not a test).

Analyses the file bench_prepare.py generates and caches (2,248,619 records with the real length distribution, a
third empty contents) and prints the wall time and the peak RSS summed over the process and its workers.

    python -m benchmarks.bench_analysis [--records 2248619]

Targets on a 2-core machine: <= 3 minutes and <= 1.5 GiB.
"""
from __future__ import annotations

import argparse
import json
import sys

from benchmarks.bench_prepare import BENCH_DIR, FULL_SIZE, generated_file, measure
from product_qa.configurator import positive_int
from product_qa.errors import run_cli

TARGET_S = 180
TARGET_MIB = 1536


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=positive_int, default=FULL_SIZE, help="records in the generated file")
    args = parser.parse_args()

    path = generated_file(args.records)
    out = BENCH_DIR / f"analysis_{args.records}"
    seconds, mib = measure([sys.executable, "data_analysis.py", "--data", str(path), "--no-progress",
                            "--set", f"analysis.output_dir={out}"])
    report = json.loads((out / "data_analysis_report.json").read_text())
    timings = report["timings_s"]
    print(f"{args.records:,} records ({path.stat().st_size / 2**20:,.0f} MiB): {seconds:.1f} s wall "
          f"({args.records / seconds:,.0f} records/s; streamed pass {timings['streamed_pass']:.1f} s, dedupe + "
          f"tokens + word clouds {timings['dedupe_tokens_clouds']:.1f} s, the rest imports and plots), "
          f"peak RSS {mib:,.0f} MiB")
    print(f"targets: <= {TARGET_S} s ({'met' if seconds <= TARGET_S else 'MISSED'}), <= {TARGET_MIB:,} MiB "
          f"({'met' if mib <= TARGET_MIB else 'MISSED'}); report in {out}")


if __name__ == "__main__":
    run_cli(main)
