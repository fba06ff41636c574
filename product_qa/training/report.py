"""What a fine-tuning run shows when it ends: its loss curves as a PNG and a one-screen summary."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from product_qa.answering.report import print_answers, summary_cell
from product_qa.reporting import console_text, save_figure


def plot_loss_curves(history: dict[str, list], path: Path, title: str) -> None:
    """Train, catalog and validation loss against the optimizer step, as a PNG."""
    fig = Figure(figsize=(7, 4), dpi=120)
    ax = fig.subplots()
    for name, label, style in (("train", "train loss", "-"),
                               ("catalog", "catalog loss (trained products, held-out phrasings)", "o-"),
                               ("validation", "validation loss (unseen products)", "s--")):
        if history.get(name):
            steps, losses = zip(*history[name], strict=True)
            ax.plot(steps, losses, style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens only)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def print_training_summary(report: dict, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"fine-tuning run {console_text(str(report['run_name']))}", header_style="bold")
    table.add_column("")
    table.add_column("value", justify="right")
    for name, value in (*_run_rows(report), *_recall_rows(report.get("recall", {}))):
        table.add_row(name, console_text(str(value)))
    console.print(table)
    if report.get("assistant") and "error" not in report["assistant"]:
        console.print(_assistant_table(report["assistant"]))
    print_answers(report.get("sample_answers", []), console)
    console.print(f"saved to {console_text(str(report['run_dir']))}")


def _run_rows(report: dict) -> list[tuple[str, str]]:
    return [
        ("model", report["model"]), ("method / precision", f"{report['method']} / {report['precision']}"),
        ("trainable parameters", f"{report['trainable_parameters']:,} of {report['total_parameters']:,}"),
        ("catalog", f"{report['catalog_products']:,} products (+ {report['declined_products']:,} taught as unknown, "
                    f"+ {report.get('reading_products', 0):,} read from their record)"),
        ("training examples", f"{report['train_examples']:,} ({report['views']} views x {report['rounds']} rounds)"),
        ("optimizer steps", f"{report['steps']:,}"), ("answer tokens seen", f"{report['answer_tokens_seen']:,}"),
        ("train time", f"{report['train_seconds']:.0f} s ({report['tokens_per_second']:.0f} tokens/s)"),
        ("catalog loss (held-out phrasings)", f"{report['catalog_loss_before']:.3f} -> "
                                              f"{report['catalog_loss_after']:.3f}"),
        ("validation loss (unseen products)", f"{report['validation_loss_before']:.3f} -> "
                                              f"{report['validation_loss_after']:.3f}"),
        ("validation perplexity", f"{report['perplexity_before']:.1f} -> {report['perplexity_after']:.1f}"),
    ]


def _assistant_table(check: dict) -> Table:
    """The base model and the assistant on the three question sets (workflow.assistant_check)."""
    table = Table(title="the assistant next to the base model (ROUGE-L; share right / declined / wrong product)",
                  header_style="bold")
    for column in ("set", "questions", "base ROUGE-L", "assistant ROUGE-L", "right product", "declined",
                   "wrong product"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for set_name, result in check.items():
        base, assistant = result.get("base", {}), result.get("assistant", {})
        table.add_row(set_name, str(result["questions"]), *(summary_cell(s, "rougeL", "{:.3f}")
                                                           for s in (base, assistant)),
                      *(summary_cell(assistant, key, "{:.0%}") for key in ("right_product", "declined",
                                                                           "wrong_product")))
    return table


def _recall_rows(recall: dict) -> list[tuple[str, str]]:
    """The base and the fine-tuned model's recall of the catalog; none when the run asked no recall questions."""
    if not recall.get("questions"):
        return []
    base, tuned = recall["base"], recall["fine_tuned"]
    return [(f"catalog recall, ROUGE-L ({recall['questions']} products)",
             f"base {base['rougeL']:.3f} -> fine-tuned {tuned['rougeL']:.3f}"),
            ("descriptions recalled (ROUGE-L >= 0.9)", f"base {base['exact']:.0%} -> fine-tuned {tuned['exact']:.0%}"),
            ("catalog products wrongly declined", f"{tuned['declined']:.0%}")]
