"""One-screen summaries printed at the end of each stage."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


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
    """Train and validation loss against the optimizer step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for name, points, style in (("train", history["train"], "-"), ("validation", history["eval"], "o-")):
        if points:
            steps, losses = zip(*points)
            ax.plot(steps, losses, style, label=f"{name} loss")
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
        ("training examples", f"{report['train_examples']:,}"), ("optimizer steps", f"{report['steps']:,}"),
        ("answer tokens seen", f"{report['answer_tokens_seen']:,}"),
        ("train time", f"{report['train_seconds']:.0f} s ({report['tokens_per_second']:.0f} tokens/s)"),
        ("validation loss", f"{report['eval_loss_before']:.3f} -> {report['eval_loss_after']:.3f}"),
        ("validation perplexity", f"{report['perplexity_before']:.1f} -> {report['perplexity_after']:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    for sample in report.get("sample_answers", []):
        console.print(f"[bold]Q:[/] {sample['question']}")
        console.print(f"  [dim]base:[/]       {sample['base'][:300]}")
        console.print(f"  [green]fine-tuned:[/] {sample['fine_tuned'][:300]}")
        console.print(f"  [dim]reference:[/]  {sample['reference'][:300]}")
    console.print(f"saved to {report['run_dir']}")
