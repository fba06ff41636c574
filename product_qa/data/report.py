"""The one-screen summary prepare_data.py prints: the records left after each step, why the others were
dropped (with the first example of each reason), and the time and memory it took."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from product_qa.reporting import console_text


def print_prep_summary(report: dict, console: Console | None = None) -> None:
    console = console or Console()
    if report.get("skipped"):
        console.print(f"[bold]Up to date[/]: outputs in {console_text(report['config']['output_dir'])} were made "
                      "from the same "
                      "input and settings (use --force to redo).")
    steps = Table(title="prepare_data", caption=console_text(report["input"]["path"]), header_style="bold")
    steps.add_column("step")
    steps.add_column("records", justify="right")
    for step, count in report["steps"].items():
        steps.add_row(step.replace("_", " "), f"{count:,}")
    console.print(steps)
    console.print(_drops_table(report))
    timings, peak = report["timings_s"], report["peak_rss_mb"]
    memory = ("" if peak["main"] is None else  # None: a platform that cannot say (Windows)
              f", peak RSS {peak['main']:.0f} MB main / {peak['workers']:.0f} MB per worker")
    console.print(f"time {timings['total']:.1f} s ({report['records_per_s']:,} records/s){memory}"
                  f" -> {console_text(', '.join(report['outputs'].values()))}")


def _drops_table(report: dict) -> Table:
    """Why records were dropped, each reason with its first example: the data's own text, shown, never obeyed."""
    drops = Table(title="dropped, by reason", header_style="bold")
    drops.add_column("reason")
    drops.add_column("count", justify="right")
    drops.add_column("first example")
    line = "row" if report["input"]["format"] == "parquet" else "line"  # a Parquet row by its index
    for reason, info in report["bad_input"].items():
        # no first line kept with data.examples_per_reason=0
        first = f"{line} {info['first_lines'][0]}: {info['example']}" if info["first_lines"] else ""
        drops.add_row(f"bad input: {reason}", f"{info['count']:,}", console_text(first))
    for group in ("dropped", "duplicates_dropped"):
        for reason, info in report[group].items():
            if info["count"]:
                example = info["examples"][0] if info["examples"] else {}
                shown = f"{line} {example.get('line')}: {example.get('title', '')[:50]!r}" if "title" in example else (
                    f"{line} {example.get('line')} (kept {line} {example.get('kept_line')})" if example else "")
                drops.add_row(reason, f"{info['count']:,}", console_text(shown))
    return drops
