"""One-screen summaries printed at the end of each stage, and the helpers every report uses: a Markdown table
and a figure saved atomically."""
from __future__ import annotations

from pathlib import Path
from typing import IO

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from product_qa.io_utils import atomic_outputs


def markdown_table(header: list[str], rows: list[list], align: str = "") -> list[str]:
    """The lines of a Markdown table; align has one letter per column, l or r (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(str(value).replace("|", "\\|") for value in row) + " |" for row in rows]
    return lines


def save_figure(fig: Figure, target: Path | IO[bytes], dpi: int = 120) -> None:
    """A PNG of a matplotlib Figure (drawn on the Agg canvas: no pyplot, no display), written to a temp file and
    renamed into place, or into an open binary file (one of several outputs written together)."""
    FigureCanvasAgg(fig)
    if not isinstance(target, Path):
        fig.savefig(target, format="png", dpi=dpi)
        return
    with atomic_outputs({"png": target}) as handles:
        fig.savefig(handles["png"], format="png", dpi=dpi)


def print_prep_summary(report: dict, console: Console | None = None) -> None:
    console = console or Console()
    if report.get("skipped"):
        console.print(f"[bold]Up to date[/]: outputs in {report['config']['output_dir']} were made from the same "
                      "input and settings (use --force to redo).")
    steps = Table(title="prepare_data", caption=report["input"]["path"], header_style="bold")
    steps.add_column("step")
    steps.add_column("records", justify="right")
    for step, count in report["steps"].items():
        steps.add_row(step.replace("_", " "), f"{count:,}")
    console.print(steps)

    drops = Table(title="dropped, by reason", header_style="bold")
    drops.add_column("reason")
    drops.add_column("count", justify="right")
    drops.add_column("first example")
    for reason, info in report["bad_input"].items():
        drops.add_row(f"bad input: {reason}", f"{info['count']:,}", f"line {info['first_lines'][0]}: {info['example']}")
    for group in ("dropped", "duplicates_dropped"):
        for reason, info in report[group].items():
            if info["count"]:
                example = info["examples"][0] if info["examples"] else {}
                shown = f"line {example.get('line')}: {example.get('title', '')[:50]!r}" if "title" in example else (
                    f"line {example.get('line')} (kept line {example.get('kept_line')})" if example else "")
                drops.add_row(reason, f"{info['count']:,}", shown)
    console.print(drops)
    timings = report["timings_s"]
    console.print(f"time {timings['total']:.1f} s ({report['records_per_s']:,} records/s), peak RSS "
                  f"{report['peak_rss_mb']['main']:.0f} MB main / {report['peak_rss_mb']['workers']:.0f} MB per worker"
                  f" -> {', '.join(report['outputs'].values())}")


def plot_loss_curves(history: dict[str, list], path, title: str) -> None:
    """Train, catalog and validation loss against the optimizer step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for name, label, style in (("train", "train loss", "-"),
                               ("catalog", "catalog loss (trained products, held-out phrasings)", "o-"),
                               ("validation", "validation loss (unseen products)", "s--")):
        if history.get(name):
            steps, losses = zip(*history[name])
            ax.plot(steps, losses, style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens only)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_training_summary(report: dict, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"fine-tuning run {report['run_name']}", header_style="bold")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [
        ("model", report["model"]), ("method / precision", f"{report['method']} / {report['precision']}"),
        ("trainable parameters", f"{report['trainable_parameters']:,} of {report['total_parameters']:,}"),
        ("catalog", f"{report['catalog_products']:,} products (+ {report['declined_products']:,} taught as unknown)"),
        ("training examples", f"{report['train_examples']:,} ({report['views']} views x {report['rounds']} rounds)"),
        ("optimizer steps", f"{report['steps']:,}"), ("answer tokens seen", f"{report['answer_tokens_seen']:,}"),
        ("train time", f"{report['train_seconds']:.0f} s ({report['tokens_per_second']:.0f} tokens/s)"),
        ("catalog loss (held-out phrasings)", f"{report['catalog_loss_before']:.3f} -> "
                                              f"{report['catalog_loss_after']:.3f}"),
        ("validation loss (unseen products)", f"{report['validation_loss_before']:.3f} -> "
                                              f"{report['validation_loss_after']:.3f}"),
        ("validation perplexity", f"{report['perplexity_before']:.1f} -> {report['perplexity_after']:.1f}"),
    ]
    recall = report.get("recall", {})
    if recall.get("questions"):
        base, tuned = recall["base"], recall["fine_tuned"]
        rows += [(f"catalog recall, ROUGE-L ({recall['questions']} products)",
                  f"base {base['rougeL']:.3f} -> fine-tuned {tuned['rougeL']:.3f}"),
                 ("descriptions recalled (ROUGE-L >= 0.9)", f"base {base['exact']:.0%} -> fine-tuned {tuned['exact']:.0%}"),
                 ("catalog products wrongly declined", f"{tuned['declined']:.0%}")]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    print_answers(report.get("sample_answers", []), console)
    console.print(f"saved to {report['run_dir']}")


def print_answers(samples: list[dict], console: Console) -> None:
    """Each question with the base model's, the fine-tuned model's and the reference answer, one under another."""
    for sample in samples:  # the texts are escaped: a title or an answer may hold "[...]", which rich reads as markup
        console.print(f"[bold]Q:[/] {escape(sample['question'])}"
                      + (f"  [dim]({sample['set']} product)[/]" if sample.get("set") in ("seen", "unseen") else "")
                      + ("  [yellow](cut to generation.max_question_chars)[/]" if sample.get("question_cut") else ""))
        for key, label in (("base", "[dim]base:[/]      "), ("fine_tuned", "[green]fine-tuned:[/]"),
                           ("reference", "[dim]reference:[/] ")):
            if sample.get(key) is not None:
                console.print(f"  {label} {escape(_one_line(sample[key]))}")


def print_generation_test(results: dict, path: str, console: Console | None = None) -> None:
    console = console or Console()
    print_answers(results["questions"], console)
    if "fine_tuned" not in results["systems"]:
        console.print("[yellow]no fine-tuned model yet[/]: these are the base model's answers; train one with "
                      "`python fine_tuning_project.py`")
    console.print(f"{len(results['questions'])} questions, answered by {', '.join(results['systems'])} -> {path}")


# ------------------------------------------------------------------------------------------------ evaluation
# (column, key in a system's summary, format); "-" where a system has no such number
EVAL_COLUMNS = (("ROUGE-1", "rouge1", "{:.3f}"), ("ROUGE-2", "rouge2", "{:.3f}"), ("ROUGE-L", "rougeL", "{:.3f}"),
                ("BLEU", "bleu", "{:.1f}"), ("chrF", "chrf", "{:.1f}"), ("similarity", "similarity", "{:.3f}"),
                ("exact description", "exact", "{:.0%}"), ("invented details", "invented_details", "{:.0%}"),
                ("declined", "declined", "{:.0%}"),
                ("ref. perplexity", "perplexity", "{:.1f}"), ("length ratio", "length_ratio", "{:.2f}"),
                ("distinct-2", "distinct_2", "{:.2f}"), ("repeated 3-grams", "repeated_3gram", "{:.3f}"),
                ("right product", "right_product", "{:.0%}"), ("latency s", "latency_s", "{:.2f}"),
                ("tokens/s", "tokens_per_s", "{:.0f}"))
SET_TITLES = {"seen": "seen products (trained on, new phrasings)", "unseen": "unseen products (test split)"}


def _cell(summary: dict, key: str, fmt: str) -> str:
    value = summary.get(key)
    return "-" if value is None else fmt.format(value)


def evaluation_tables(report: dict) -> list[str]:
    """The report's header line and one Markdown table per question set (the web demo shows these too)."""
    lines = ["# Evaluation report", "",
             f"Model: `{report['model']}`; fine-tuned run: `{report['run'] or 'none'}`; decoding: "
             f"{', '.join(f'{k}={v}' for k, v in report['decoding'].items())}; RAG: "
             f"{', '.join(f'{k}={v}' for k, v in report['rag'].items())}. Total time {report['seconds']:.0f} s.", ""]
    if report["skipped_systems"]:
        lines += [f"Skipped (no fine-tuned model yet): {', '.join(report['skipped_systems'])}.", ""]
    for set_name, result in report["sets"].items():
        lines += [f"## {SET_TITLES[set_name]}: {result['questions']} questions", "",
                  "| system | " + " | ".join(c for c, _, _ in EVAL_COLUMNS) + " |",
                  "|---|" + "---:|" * len(EVAL_COLUMNS)]
        for system, entry in result["systems"].items():
            cells = [_cell(entry["summary"], key, fmt) for _, key, fmt in EVAL_COLUMNS]
            lines.append(f"| {report['labels'][system]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def evaluation_markdown(report: dict) -> str:
    """evaluation_report.md: a table per question set, then the worst answers of each system."""
    lines = evaluation_tables(report)
    lines += ["## Worst answers (lowest ROUGE-L)", ""]
    for set_name, result in report["sets"].items():
        for system, entry in result["systems"].items():
            lines += [f"### {set_name}, {report['labels'][system]}", ""]
            for row in entry["worst"]:
                lines += [f"- **Q:** {row['question']}  ", f"  **answer** (ROUGE-L {row['rougeL']:.2f}"
                          f"{', source ' + row['source_uid'] if row.get('source_uid') else ''}): "
                          f"{_one_line(row['answer'])}  ", f"  **reference:** {_one_line(row['reference'])}"]
            lines.append("")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


def plot_evaluation(report: dict, path) -> None:  # path: a file name or an open binary file
    """Grouped bars: ROUGE-L, chrF/100 and similarity of every system, one panel per question set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    shown = (("ROUGE-L", "rougeL", 1.0), ("chrF / 100", "chrf", 100.0), ("similarity", "similarity", 1.0))
    sets = list(report["sets"].items())
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.2), dpi=120, sharey=True, squeeze=False)
    for ax, (set_name, result) in zip(axes[0], sets):
        systems = list(result["systems"])
        x = np.arange(len(systems))
        width = 0.8 / len(shown)
        for k, (label, key, scale) in enumerate(shown):
            values = [(result["systems"][s]["summary"].get(key) or 0.0) / scale for s in systems]
            bars = ax.bar(x + (k - (len(shown) - 1) / 2) * width, values, width, label=label)
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        ax.set_xticks(x, [report['labels'][s] for s in systems], rotation=20, ha="right")
        ax.set_title(f"{SET_TITLES[set_name]}, n={result['questions']}", fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("score against the reference description")
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


# the terminal table: the columns that fit one screen (evaluation_report.md has them all)
SUMMARY_COLUMNS = (("ROUGE-L", "rougeL", "{:.3f}"), ("exact", "exact", "{:.0%}"), ("sim.", "similarity", "{:.2f}"),
                   ("invent.", "invented_details", "{:.0%}"), ("decl.", "declined", "{:.0%}"),
                   ("ppl", "perplexity", "{:.1f}"), ("len.", "length_ratio", "{:.2f}"),
                   ("right", "right_product", "{:.0%}"),
                   ("tok/s", "tokens_per_s", "{:.0f}"))


def print_evaluation_summary(report: dict, outputs: list[str], console: Console | None = None) -> None:
    console = console or Console()
    for set_name, result in report["sets"].items():
        table = Table(title=f"{SET_TITLES[set_name]}: {result['questions']} questions", header_style="bold")
        table.add_column("system")
        for column, _, _ in SUMMARY_COLUMNS:
            table.add_column(column, justify="right")
        for system, entry in result["systems"].items():
            table.add_row(report["labels"][system], *[_cell(entry["summary"], key, fmt)
                                                      for _, key, fmt in SUMMARY_COLUMNS])
        console.print(table)
    console.print("exact: ROUGE-L >= 0.9; sim.: MiniLM similarity; invent.: specific tokens (numbers, names) in "
                  "neither question nor reference; decl.: answered \"I don't know this product\"; ppl: perplexity of "
                  "the reference; len.: answer/reference words; right: RAG used the right product (seen) or said "
                  "none matched (unseen)")
    if report["skipped_systems"]:
        console.print(f"[yellow]skipped[/] (no fine-tuned model yet): {', '.join(report['skipped_systems'])}")
    console.print(f"{report['seconds']:.0f} s -> {', '.join(outputs)}")
