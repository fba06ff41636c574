"""The analysis stage's outputs: data_analysis_report.json, the PNG plots, report.md, the sample's table
(sample.parquet) and the one-screen summary.

Every file is written to a temporary file and renamed into place, and the set replaces the output folder whole.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from product_qa.analysis.cleaning_trace import FIELDS, LENGTH_UNITS
from product_qa.analysis.markdown import REPORT_JSON, REPORT_MD, render_markdown
from product_qa.analysis.plots import (
    PLOTS,
    UNIT_LABELS,
    plot_funnel,
    plot_length_histograms,
    plot_quality_issues,
    plot_token_lengths,
    plot_word_cloud,
)
from product_qa.analysis.sample_table import SAMPLE_TABLE
from product_qa.analysis.statistics import Analysis
from product_qa.io_utils import atomic_outputs, replaced_directory, write_json_atomic
from product_qa.reporting import console_text

__all__ = ["PLOTS", "REPORT_JSON", "REPORT_MD", "SAMPLE_TABLE", "print_analysis_summary", "write_report"]


def write_report(analysis: Analysis, output_dir: str) -> dict[str, Path]:
    """Write the JSON report, the plots, report.md and sample.parquet, as one set that replaces `output_dir` whole
    (a reader, such as the web demo's analysis tab, never sees new plots beside an old report); returns their
    paths."""
    target = Path(output_dir)
    with replaced_directory(target, REPORT_JSON) as out:
        _write_report_files(analysis, out)
    written = {name: target / filename for name, filename in PLOTS.items()} | {
        "json": target / REPORT_JSON, "markdown": target / REPORT_MD, "sample": target / SAMPLE_TABLE}
    return {name: path for name, path in written.items() if path.exists()}


def _write_report_files(analysis: Analysis, out: Path) -> None:
    report = analysis.report
    seed = report["config"]["analysis"]["seed"]
    paths = {name: out / filename for name, filename in PLOTS.items()}
    plot_length_histograms(analysis, paths["lengths"])
    plot_quality_issues(report, paths["quality"])
    plot_funnel(report, paths["funnel"])
    if "recommended" in report["max_length"]:
        plot_token_lengths(analysis, paths["tokens"])
    sample = report["sample_sizes"]["reservoir"]
    for name, label in (("title", "titles"), ("content", "descriptions")):
        plot_word_cloud(analysis.cloud_words[name], f"Most frequent words in {label} (reservoir sample of "
                        f"{sample:,} records, stopwords removed)", seed, paths[f"cloud_{name}"])
    with atomic_outputs({"sample": out / SAMPLE_TABLE}) as handles:
        analysis.sample.to_parquet(handles["sample"], index=False)
    write_json_atomic(out / REPORT_JSON, report)
    with atomic_outputs({"md": out / REPORT_MD}) as handles:
        handles["md"].write(render_markdown(analysis).encode())


def print_analysis_summary(report: dict, paths: dict[str, Path], console: Console | None = None) -> None:
    console = console or Console()
    records, funnel, lengths = report["records"], report["funnel"], report["lengths"]
    parsed = records["records_parsed"]
    table = Table(title="data_analysis", caption=console_text(report["input"]["path"]), header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("share", justify="right")
    rows = [("lines with data", records["lines_with_data"], None), ("bad input lines", records["bad_input"], None),
            ("records", parsed, None), ("empty titles", records["empty_title"], parsed),
            ("empty descriptions", records["empty_content"], parsed),
            ("exact duplicates (raw)", report["duplicates"]["exact_duplicates"], parsed),
            ("repeated titles (raw)", report["duplicates"]["duplicate_titles"], parsed)]
    for label, value, total in rows:
        table.add_row(label, f"{value:,}", f"{value / total:.1%}" if total else "")
    for name in FIELDS:
        for unit in LENGTH_UNITS:
            if lengths[name][unit]["count"]:
                summary = lengths[name][unit]
                table.add_row(f"{name} {UNIT_LABELS[unit]}: median / p95", f"{summary['p50']:,} / {summary['p95']:,}",
                              "")
    if "recommended" in report["max_length"]:
        chosen = report["max_length"]
        table.add_row("recommended max_length", f"{chosen['recommended']:,} tokens", f"covers {chosen['coverage']:.1%}")
    examples = sum(funnel[f"{split}_examples"] for split in ("train", "validation", "test"))
    table.add_row("examples after prepare", f"{examples:,}", f"{examples / max(records['lines_with_data'], 1):.1%}")
    console.print(table)

    effects = Table(title="cleaning rules and filters (records)", header_style="bold")
    effects.add_column("rule / filter")
    effects.add_column("changed / dropped", justify="right")
    for rule in report["cleaning_rules"]:
        effects.add_row(f"clean: {rule['rule']}", f"{rule['records']:,}")
    for item in report["filters"]:
        effects.add_row(f"filter: {item['filter']}", f"{item['dropped']:,}")
    for name, info in report["duplicates_dropped"].items():
        effects.add_row(f"dedupe: {name}", f"{info['count']:,}")
    console.print(effects)
    plots = sum(path.suffix == ".png" for path in paths.values())
    console.print(f"time {report['timings_s']['total']:.1f} s -> {console_text(str(paths['markdown']))}, "
                  f"{paths['json'].name}, {paths['sample'].name} and {plots} plots in "
                  f"{console_text(str(paths['markdown'].parent))}")
