"""The knowledge curve (a benchmark, not a test): how many products the model learns, for how much training.

Its headline is the learning speed: products learned per CPU-hour, the largest catalog a point recalls at
ROUGE-L >= 0.9 (held-out phrasings) divided by its hours of training on this machine (all its cores), next to
the same points trained with the previous defaults (PREVIOUS_DEFAULTS) in the same benchmark run.

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
    python -m benchmarks.bench_knowledge --points 8 --previous --data genuine   # N alone: the recipe's views x epochs

`--data genuine` trains on ../shared/data/real_trn_dev.jsonl (genuine trn.json records) instead of the sample;
`--set train.context_views=0` leaves the context views out. Points already measured with the same data and
settings are read back from outputs/bench/knowledge.json (a long curve can be run in pieces). Writes that
file and docs/training/knowledge_curve.png, and prints a table with the training minutes of each point and the
CPU it ran on, then the headline.
"""
from __future__ import annotations

import argparse
import dataclasses
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
# The recipe before issue 29 (learning speed), the baseline of the headline: set explicitly, so that it stays
# what it was whatever config.py says now.
PREVIOUS_DEFAULTS = ("train.views=7", "train.epochs=6.0", "train.learning_rate=0.001", "train.batch_size=8",
                     "train.lora_r=64", "train.lora_alpha=128", "train.lr_scheduler=cosine",
                     "train.context_products=40", "train.eval_steps=0.25", "train.learned_catalog_loss=None")
GENUINE = REPO.parent / "shared" / "data" / "real_trn_dev.jsonl"
RECALLED = 0.9  # a catalog counts as learned when its held-out phrasings are answered at this ROUGE-L or more
RESULTS = REPO / "outputs" / "bench" / "knowledge.json"
PLOT = REPO / "docs" / "training" / "knowledge_curve.png"
GENERATED = REPO / "outputs" / "bench" / "knowledge_catalog"  # a larger generated catalog, prepared once


def parse_point(text: str) -> tuple[int, int | None, int | None]:
    """PRODUCTSxVIEWSxEPOCHS, or PRODUCTS alone (the views and epochs of the settings)."""
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 3):
        raise UserError(f"--points: {text!r} is not PRODUCTSxVIEWSxEPOCHS or PRODUCTS, e.g. 128x7x3 or 32")
    products, views, epochs = parts if len(parts) == 3 else (parts[0], None, None)
    return products, views, epochs


def data_settings(products: int, sample_products: int, data: str) -> list[str]:
    """The bundled sample while it holds the catalog; past it, a generated file about twice as large. Genuine:
    the shared genuine records, prepared beside the benchmark's other outputs."""
    if data == "genuine":
        if not GENUINE.exists():
            raise UserError(f"{GENUINE}: no genuine records here (--data genuine needs them)")
        return [f"data.raw_path={GENUINE}", f"data.output_dir={GENERATED.parent / 'knowledge_genuine'}"]
    if products <= sample_products:
        return []
    from product_qa.data.synthetic import generate_records, write_records

    records = products * 2 + 200
    raw = GENERATED / f"trn-{records}.json"
    if not raw.exists():
        raw.parent.mkdir(parents=True, exist_ok=True)
        write_records(str(raw), generate_records(records, seed=11))
    return [f"data.raw_path={raw}", f"data.output_dir={GENERATED / f'data-{records}'}"]


def point_settings(products: int, views: int | None, epochs: int | None, extra: list[str], sample_products: int,
                   data: str) -> list[str]:
    recipe = [f"train.views={views}", f"train.epochs={epochs}"] if views is not None else []
    return [*data_settings(products, sample_products, data), f"train.max_train_products={products}",
            *recipe, "train.unknown_share=0.0",
            "generation.min_confidence=0.0",  # recall itself: no answer replaced by a decline
            f"train.recall_questions={min(products, 64)}", *extra]


def trained_with(settings: list[str]) -> dict:
    """The training settings a point resolves to: config.py's defaults under its overrides. A point measured
    under other defaults (config.py changed since) is measured again, not read back."""
    return json.loads(json.dumps(dataclasses.asdict(apply_overrides(Config(), settings).train)))


def run_point(name: str, products: int, settings: list[str]) -> dict:
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
    views, epochs = cfg.train.views, round(cfg.train.epochs)
    return {"products": products, "views": views, "epochs": epochs, "exposures": views * epochs,
            "settings": settings, "steps": report["steps"], "train_examples": report["train_examples"],
            "train_minutes": report["train_seconds"] / 60, "job_minutes": (time.perf_counter() - started) / 60,
            "recall_questions": recall["questions"], "base_rougeL": recall["base"]["rougeL"],
            "rougeL": recall["fine_tuned"]["rougeL"], "exact": recall["fine_tuned"]["exact"],
            "context_views": cfg.train.context_views, "reading_products": report.get("reading_products", 0),
            "catalog_loss_after": report["catalog_loss_after"],
            "validation_loss_after": report["validation_loss_after"],
            "train_settings": trained_with(settings),
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


def products_per_hour(points: list[dict]) -> float:
    """The learning speed of a set of points: the most products per hour of training among those recalled at
    RECALLED or more (0 where none was)."""
    return max((p["products"] / (p["train_minutes"] / 60) for p in points if p["rougeL"] >= RECALLED), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", nargs="+", default=list(DEFAULT_POINTS),
                        help="PRODUCTSxVIEWSxEPOCHS, or PRODUCTS (the settings' views and epochs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="a setting for every point (repeatable)")
    parser.add_argument("--data", choices=("sample", "genuine"), default="sample",
                        help="the bundled sample, or the genuine records of ../shared/data")
    parser.add_argument("--previous", action="store_true",
                        help="also train every point with the previous defaults, for the headline's ratio")
    args = parser.parse_args()
    cfg = apply_overrides(Config(), args.overrides)
    prepare(cfg.data, progress=False)
    sample_products = len(read_examples(output_paths(cfg.data)["train"]))

    groups = {"current": args.overrides}
    if args.previous:  # the user's settings still win: they come after the previous defaults
        groups["previous"] = [*PREVIOUS_DEFAULTS, *args.overrides]
    measured = json.loads(RESULTS.read_text()) if RESULTS.exists() else []

    settings = {(text, group): point_settings(*parse_point(text), extra, sample_products, args.data)
                for text in args.points for group, extra in groups.items()}
    resolved = {key: trained_with(point) for key, point in settings.items()}  # once, not per measured point

    def same(p: dict, text: str, group: str) -> bool:
        return (p["point"] == text and p["extra"] == groups[group] and p.get("data", "sample") == args.data
                and p.get("train_settings") == resolved[text, group])

    for text in args.points:  # each point with both recipes in turn, so that they share the machine alike
        for group, extra in groups.items():
            if any(same(p, text, group) for p in measured):
                print(f"{text} ({group}): measured before, read from {RESULTS}")
                continue
            name = f"knowledge-{args.data}-{text}" + ("-previous" if group == "previous" else "")
            point = run_point(name, parse_point(text)[0], settings[text, group])
            measured.append({"point": text, "extra": extra, "data": args.data, **point})
            write_json_atomic(RESULTS, measured)  # each point kept as soon as it is measured

    chosen = {group: [p for text in args.points for p in measured if same(p, text, group)] for group in groups}
    if len(chosen["current"]) > 1:  # a curve: one point would replace the documented one with a dot
        plot(chosen["current"], PLOT)
    print(f"\n{'recipe':>9}{'products':>9}{'views':>6}{'epochs':>7}{'steps':>7}{'train min':>10}{'base R-L':>10}"
          f"{'recall R-L':>11}{'recalled':>9}{'products/h':>11}")
    for group, points in chosen.items():
        for p in sorted(points, key=lambda p: (p["exposures"], p["products"])):
            print(f"{group:>9}{p['products']:>9}{p['views']:>6}{p['epochs']:>7}{p['steps']:>7}"
                  f"{p['train_minutes']:>10.1f}{p['base_rougeL']:>10.3f}{p['rougeL']:>11.3f}{p['exact']:>9.0%}"
                  f"{products_per_hour([p]):>11.0f}")
    first = chosen["current"][0]
    print(f"data: {args.data}; context views: {first['context_views']}; CPU: {first['cpu']} ({first['cpu_features']}), "
          f"{first['precision']}")
    rate = products_per_hour(chosen["current"])
    if args.previous:
        before = products_per_hour(chosen["previous"])
        ratio = f"{rate / before:.2f}x" if before else "n/a: none recalled"
        print(f"products per CPU-hour at recall >= {RECALLED}: {rate:.0f} (previous defaults: {before:.0f}, {ratio})")
    else:
        print(f"products per CPU-hour at recall >= {RECALLED}: {rate:.0f}")


if __name__ == "__main__":
    run_cli(main)
