"""Benchmark of prepare_data.py on one catalog as JSON Lines, CSV and Parquet (a benchmark, not a test).

Generates the catalog with the project's own generator (product_qa/data/synthetic.py, the real file's length
distribution), writes it as JSON Lines (uid, title, content), CSV (sku, name, description) and Parquet
(product_id, product_name, body, and a price column that is never read; one row group, as pandas writes it),
prepares each with its columns mapped by --set data.*_field, at two sizes, and prints one JSON line per run:
seconds and CPU seconds (the run and its workers) with their ratios to JSON Lines at the same size, peak RSS
(main process plus workers) and its ratio to the smaller size's (flat memory: about 1), and whether the splits
are byte-identical to the JSON Lines ones. On a machine shared with other work, compare the CPU seconds: a run
with more busy processes (the CSV run parses in its main process too) gets a larger share of shared cores.

    python -m benchmarks.bench_formats [--records 1000000] [--small-records 250000]

Targets: CSV and Parquet each take <= 1.5x the JSON Lines time of the same run. Generated files are cached under
outputs/bench/.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.bench_prepare import BENCH_DIR, generated_file, measure
from benchmarks.bench_train import cpu_features, cpu_name
from product_qa.configurator import positive_int
from product_qa.data.examples import SPLITS
from product_qa.errors import run_cli

# Each format's column names for uid, title and content, as the mapping settings name them.
COLUMNS = {"jsonl": ("uid", "title", "content"), "csv": ("sku", "name", "description"),
           "parquet": ("product_id", "product_name", "body")}
SUFFIXES = {"jsonl": ".json", "csv": ".csv", "parquet": ".parquet"}


def read_json_lines(path: Path) -> list[dict]:
    with path.open("rb") as handle:
        return [orjson.loads(line) for line in handle]


def write_csv(records: list[dict], path: Path) -> None:
    temp = path.with_name(path.name + ".tmp")
    with temp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS["csv"])
        writer.writerows((record["uid"], record["title"], record["content"]) for record in records)
    os.replace(temp, path)


def write_parquet(records: list[dict], path: Path) -> None:
    uid, title, content = COLUMNS["parquet"]
    table = pa.table({"price": [9.99] * len(records), uid: [r["uid"] for r in records],
                      title: [r["title"] for r in records], content: [r["content"] for r in records]})
    temp = path.with_name(path.name + ".tmp")
    pq.write_table(table, temp, row_group_size=len(records))  # one row group: the whole file in one, at worst
    os.replace(temp, path)


def catalog_files(records: int) -> dict[str, Path]:
    """The same generated catalog in each format (cached)."""
    paths = {"jsonl": generated_file(records)}
    paths.update({kind: paths["jsonl"].with_suffix(SUFFIXES[kind]) for kind in ("csv", "parquet")})
    missing = [kind for kind in ("csv", "parquet") if not paths[kind].exists()]
    if missing:
        print(f"writing {records:,} records as {' and '.join(missing)} ...", flush=True)
        rows = read_json_lines(paths["jsonl"])
        for kind in missing:
            (write_csv if kind == "csv" else write_parquet)(rows, paths[kind])
    return paths


def prepare_command(path: Path, kind: str, out_dir: Path) -> list[str]:
    mapping = [f"data.{field}_field={column}" for field, column in zip(("uid", "title", "content"), COLUMNS[kind],
                                                                          strict=True)]
    return [sys.executable, "prepare_data.py", "--data", str(path), "--force", "--no-progress",
            "--set", f"data.output_dir={out_dir}", *[arg for setting in mapping for arg in ("--set", setting)]]


def children_cpu_seconds() -> float:
    """User + system CPU time of the finished child processes so far, their own finished children included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def splits(out_dir: Path) -> list[bytes]:
    return [(out_dir / f"{split}.jsonl").read_bytes() for split in SPLITS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=positive_int, default=1_000_000, help="records in the catalog")
    parser.add_argument("--small-records", type=positive_int, default=250_000,
                        help="records in the smaller catalog the peak memory is compared with")
    args = parser.parse_args()

    print(f"CPU: {cpu_name()} ({cpu_features()}), {os.cpu_count()} cores", flush=True)
    small_peaks: dict[str, float] = {}
    for records in (args.small_records, args.records):
        paths = catalog_files(records)
        seconds: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for kind, path in paths.items():
            out_dir = BENCH_DIR / f"formats_{kind}_{records}"
            cpu_before = children_cpu_seconds()
            seconds[kind], peak = measure(prepare_command(path, kind, out_dir))
            cpu[kind] = children_cpu_seconds() - cpu_before
            small_peaks.setdefault(kind, peak)
            print(json.dumps({
                "bench": "formats", "format": kind, "records": records, "file_mib": round(path.stat().st_size / 2**20),
                "seconds": round(seconds[kind], 1), "ratio_to_jsonl": round(seconds[kind] / seconds["jsonl"], 2),
                "cpu_seconds": round(cpu[kind], 1), "cpu_ratio_to_jsonl": round(cpu[kind] / cpu["jsonl"], 2),
                "peak_rss_mib": round(peak), "peak_rss_ratio_to_small": round(peak / small_peaks[kind], 2),
                "same_splits_as_jsonl": splits(out_dir) == splits(BENCH_DIR / f"formats_jsonl_{records}"),
            }), flush=True)


if __name__ == "__main__":
    run_cli(main)
