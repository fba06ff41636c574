"""The knowledge curve (a benchmark, not a test): how many products the model learns, for how much training.

Each point is the main job (`fine_tuning_project.py`, a separate process) with a catalog of N products, each
asked `views` ways per epoch for `epochs` epochs (exposures = views x epochs), and "I don't know" training
off so that every trained product is a catalog product (the confidence gate off too: recall itself). A point's
recall is the fine-tuned model's ROUGE-L on its catalog asked with held-out phrasings (at most 64 products,
closed book), next to the base model's, and
the share of descriptions recalled (ROUGE-L >= 0.9). Catalogs past the bundled sample's training products come
from the project's own generator (`product_qa/data/synthetic.py`), prepared like the sample.

    python -m benchmarks.bench_knowledge                               # the default points (hours on 2 cores)
    python -m benchmarks.bench_knowledge --points 32x7x3 128x7x3       # N x views x epochs
    python -m benchmarks.bench_knowledge --set train.lora_r=16         # extra settings for every point

Points already measured with the same settings are read back from outputs/bench/knowledge.json (a long curve
can be run in pieces). Writes that file and docs/training/knowledge_curve.png, and prints a table with the
training minutes of each point and the CPU it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_train import cpu_features, cpu_name
from config import Config
from product_qa.configurator import apply_overrides
from product_qa.data.examples import output_paths, read_examples
from product_qa.data.preparation import prepare
from product_qa.errors import UserError, run_cli
from product_qa.io_utils import write_json_atomic

REPO = Path(__file__).resolve().parents[1]

DEFAULT_POINTS = ("16x7x3", "32x7x3", "128x7x2", "512x7x2")  # the last one alone: about 2 hours on 2 cores
RESULTS = REPO / "outputs" / "bench" / "knowledge.json"
PLOT = REPO / "docs" / "training" / "knowledge_curve.png"
GENERATED = REPO / "outputs" / "bench" / "knowledge_catalog"  # a larger generated catalog, prepared once


def parse_point(text: str) -> tuple[int, int, int]:
    try:
        products, views, epochs = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--points: {text!r} is not PRODUCTSxVIEWSxEPOCHS, e.g. 128x7x3") from None
    return products, views, epochs


def data_settings(products: int, sample_products: int) -> list[str]:
    """The bundled sample while it holds the catalog; past it, a generated file about twice as large."""
    if products <= sample_products:
        return []
    from product_qa.data.synthetic import generate_records, write_records

    records = products * 2 + 200
    raw = GENERATED / f"trn-{records}.json"
    if not raw.exists():
        raw.parent.mkdir(parents=True, exist_ok=True)
        write_records(str(raw), generate_records(records, seed=11))
    return [f"data.raw_path={raw}", f"data.output_dir={GENERATED / f'data-{records}'}"]


def run_point(products: int, views: int, epochs: int, extra: list[str], sample_products: int) -> dict:
    name = f"knowledge-{products}x{views}x{epochs}"
    settings = [*data_settings(products, sample_products), f"train.max_train_products={products}",
                f"train.views={views}", f"train.epochs={epochs}", "train.unknown_share=0.0",
                "generation.min_confidence=0.0",  # recall itself: no answer replaced by a decline
                f"train.recall_questions={min(products, 64)}", *extra]
    command = [sys.executable, "fine_tuning_project.py", "--no-progress", "--run-name", name,
               *sum((["--set", s] for s in settings), [])]
    print(f"running {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    cfg = apply_overrides(Config(), settings)
    report = json.loads((Path(cfg.train.output_dir) / name / "training_report.json").read_text())
    recall = report["recall"]
    return {"products": products, "views": views, "epochs": epochs, "exposures": views * epochs,
            "settings": settings, "steps": report["steps"], "train_examples": report["train_examples"],
            "train_minutes": report["train_seconds"] / 60, "job_minutes": (time.perf_counter() - started) / 60,
            "recall_questions": recall["questions"], "base_rougeL": recall["base"]["rougeL"],
            "rougeL": recall["fine_tuned"]["rougeL"], "exact": recall["fine_tuned"]["exact"],
            "catalog_loss_after": report["catalog_loss_after"],
            "validation_loss_after": report["validation_loss_after"],
            "precision": report["precision"], "device": report["device"], "cpu": cpu_name(),
            "cpu_features": cpu_features(), "threads": os.cpu_count()}


def plot(points: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    from product_qa.reporting import save_figure

    fig = Figure(figsize=(11, 4.2), dpi=120)
    by_size, by_time = fig.subplots(1, 2)
    for exposures in sorted({p["exposures"] for p in points}):
        line = sorted((p for p in points if p["exposures"] == exposures), key=lambda p: p["products"])
        by_size.plot([p["products"] for p in line], [p["rougeL"] for p in line], "o-",
                     label=f"{exposures} exposures (views x epochs)")
    # the points of about the largest training budget: where recall starts to fall for that budget
    budget = max(p["train_examples"] for p in points)
    same_budget = sorted((p for p in points if p["train_examples"] >= 0.8 * budget), key=lambda p: p["products"])
    if len({p["products"] for p in same_budget}) > 1:
        examples = sorted(p["train_examples"] for p in same_budget)
        by_size.plot([p["products"] for p in same_budget], [p["rougeL"] for p in same_budget], "--", color="black",
                     alpha=0.6, label=f"about the same training ({examples[0]:,}-{examples[-1]:,} examples)")
    base = sorted(points, key=lambda p: p["products"])
    by_size.plot([p["products"] for p in base], [p["base_rougeL"] for p in base], "x:", color="grey",
                 label="base model")
    by_size.set_xscale("log", base=2)
    by_size.set_xlabel("catalog size (products)")
    by_size.set_ylabel("recall: ROUGE-L, held-out phrasings")
    by_size.set_ylim(0, 1.02)
    by_size.grid(alpha=0.3)
    by_size.legend(fontsize=8)
    for p in points:
        by_time.scatter(p["train_minutes"], p["rougeL"], s=20 + p["products"] / 4)
        by_time.annotate(f"{p['products']}x{p['views']}x{p['epochs']}", (p["train_minutes"], p["rougeL"]),
                         fontsize=7, xytext=(3, 3), textcoords="offset points")
    by_time.set_xlabel("training minutes")
    by_time.set_ylim(0, 1.02)
    by_time.grid(alpha=0.3)
    cpu = points[0]
    fig.suptitle(f"What the fine-tuned model knows of its catalog ({cpu['precision']} on {cpu['cpu']}, "
                 f"{cpu['threads']} threads)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", nargs="+", default=list(DEFAULT_POINTS), help="PRODUCTSxVIEWSxEPOCHS")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="a setting for every point (repeatable)")
    args = parser.parse_args()
    cfg = apply_overrides(Config(), args.overrides)
    prepare(cfg.data, progress=False)
    sample_products = len(read_examples(output_paths(cfg.data)["train"]))

    measured = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    for text in args.points:
        products, views, epochs = parse_point(text)
        if any(p["point"] == text and p["extra"] == args.overrides for p in measured):
            print(f"{text}: measured before, read from {RESULTS}")
            continue
        point = run_point(products, views, epochs, args.overrides, sample_products)
        measured.append({"point": text, "extra": args.overrides, **point})
        write_json_atomic(RESULTS, measured)  # each point kept as soon as it is measured

    points = [p for p in measured if p["point"] in args.points and p["extra"] == args.overrides]
    plot(points, PLOT)
    print(f"\n{'products':>9}{'views':>6}{'epochs':>7}{'steps':>7}{'train min':>10}{'base R-L':>10}{'recall R-L':>11}"
          f"{'recalled':>9}")
    for p in sorted(points, key=lambda p: (p["exposures"], p["products"])):
        print(f"{p['products']:>9}{p['views']:>6}{p['epochs']:>7}{p['steps']:>7}{p['train_minutes']:>10.1f}"
              f"{p['base_rougeL']:>10.3f}{p['rougeL']:>11.3f}{p['exact']:>9.0%}")
    print(f"CPU: {points[0]['cpu']} ({points[0]['cpu_features']}), {points[0]['precision']}; plot: {PLOT}")


if __name__ == "__main__":
    run_cli(main)
