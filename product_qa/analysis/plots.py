"""The analysis report's plots: seaborn on matplotlib Figures drawn on the Agg canvas (no pyplot, no display
needed). seaborn is imported in each function (reporting.seaborn_style): importing it takes about 2 s."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter
from wordcloud import WordCloud

from product_qa.analysis.cleaning_trace import FIELDS, LENGTH_UNITS
from product_qa.analysis.sketches import LengthHistogram
from product_qa.reporting import save_figure, seaborn_style

if TYPE_CHECKING:
    from product_qa.analysis.statistics import Analysis

PLOTS = {"lengths": "length_histograms.png", "quality": "quality_issues.png", "funnel": "funnel.png",
         "tokens": "token_lengths.png", "cloud_title": "wordcloud_titles.png",
         "cloud_content": "wordcloud_contents.png"}
_DPI = 110
_DISPLAY_BINS_PER_DECADE = 25
QUALITY_LABELS = {"empty_title": "empty title", "empty_content": "empty content",
                   "html_entities": "HTML entities (&#8217; &amp; …)", "html_tags": "HTML tags (<br> …)",
                   "scraping_boilerplate": "scraping boilerplate", "glued_sentences": "glued sentences (end.Start)",
                   "non_ascii": "non-ASCII characters", "non_english": "non-English text (guess)",
                   "exact_duplicates": "exact duplicates", "duplicate_titles": "repeated titles",
                   "bad_input_lines": "bad input lines"}
UNIT_LABELS = {"chars": "characters", "words": "words", "tokens": "tokens"}


def _thousands(value: float, _position: int | None = None) -> str:
    return f"{value:,.0f}"


def _display_bins(histogram: LengthHistogram) -> tuple[np.ndarray, np.ndarray]:
    """The fine histogram regrouped into log-spaced bins of equal width on a log axis (0 joins the first)."""
    top = np.log10(max(histogram.max, 2) + 1)
    edges = np.unique(np.round(10 ** np.arange(0, top + 1 / _DISPLAY_BINS_PER_DECADE,
                                                1 / _DISPLAY_BINS_PER_DECADE)).astype(np.int64))
    groups = np.clip(np.searchsorted(edges, LengthHistogram.EDGES, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(groups, weights=histogram.counts, minlength=len(edges) - 1)[:len(edges) - 1], edges


def plot_length_histograms(analysis: Analysis, path: Path) -> None:
    with seaborn_style() as sns:
        fig = Figure(figsize=(12, 7.5), layout="constrained")
        axes = fig.subplots(len(FIELDS), len(LENGTH_UNITS))
        _draw_length_histograms(sns, analysis, axes)
        fig.suptitle("Lengths of non-empty raw titles and descriptions (fixed-bin histogram of the whole file)",
                     fontsize=13)
        save_figure(fig, path, dpi=_DPI)


def _draw_length_histograms(sns: ModuleType, analysis: Analysis, axes: np.ndarray) -> None:
    for row, name in enumerate(FIELDS):
        for col, unit in enumerate(LENGTH_UNITS):
            ax, histogram = axes[row][col], analysis.histograms[f"{name}_{unit}"]
            ax.set_title(f"{name.capitalize()} length in {UNIT_LABELS[unit]} (n = {histogram.count:,})")
            ax.set_xlabel(f"{UNIT_LABELS[unit]} (log scale)")
            ax.set_ylabel("records")
            if not histogram.count:
                ax.text(0.5, 0.5, "no non-empty values", ha="center", va="center", transform=ax.transAxes)
                continue
            counts, edges = _display_bins(histogram)  # each bin weighted by its records; bins a list: seaborn
            # 0.13 compares bins with "auto" when there are weights, which an array cannot answer
            sns.histplot({"length": edges[:-1], "records": counts}, x="length", weights="records", bins=edges.tolist(),
                         element="step", color="#4c78a8", alpha=0.6, ax=ax)
            ax.set_xscale("log")
            ax.set_xlabel(f"{UNIT_LABELS[unit]} (log scale)")
            ax.set_ylabel("records")
            ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
            ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
            summary = histogram.summary()
            ax.axvline(max(summary["p50"], 1), color="#e45756", lw=1.8, label=f"median {summary['p50']:,}")
            ax.axvline(max(summary["p5"], 1), color="#555555", lw=1.2, ls=":", label=f"p5 {summary['p5']:,}")
            ax.axvline(max(summary["p95"], 1), color="#555555", lw=1.2, ls="--", label=f"p95 {summary['p95']:,}")
            ax.legend(loc="best", fontsize=9)


def plot_quality_issues(report: dict, path: Path) -> None:
    issues = sorted(report["quality"].items(), key=lambda item: -item[1]["share"])
    shares = [info["share"] * 100 for _, info in issues]
    with seaborn_style() as sns:
        fig = Figure(figsize=(10, 0.45 * len(issues) + 1.6), layout="constrained")
        ax = fig.subplots()
        sns.barplot(x=shares, y=[QUALITY_LABELS.get(name, name) for name, _ in issues], orient="h", color="#f58518",
                    ax=ax)
        ax.bar_label(ax.containers[0], labels=[f"{info['share']:.1%}  ({info['records']:,})" for _, info in issues],
                     padding=4, fontsize=9)
        ax.set_xlim(0, max(max(shares, default=0) * 1.3, 1))
        ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax.set_xlabel("share of records (bad input: share of lines)")
        ax.set_ylabel("")
        ax.set_title(f"Quality issues in {report['records']['records_parsed']:,} records")
        save_figure(fig, path, dpi=_DPI)


def funnel_steps(report: dict) -> list[tuple[str, int]]:
    """(label, records left) from the lines of the file to the training examples, dropping one reason at a time."""
    funnel = report["funnel"]
    steps = [("lines with data", funnel["lines_with_data"])]
    if funnel["bad_input"]:
        steps.append((f"− bad input ({funnel['bad_input']:,})", funnel["records_parsed"]))
    remaining = funnel["records_parsed"]
    for item in report["filters"]:
        if item["dropped"]:
            remaining -= item["dropped"]
            steps.append((f"− {item['filter'].replace('_', ' ')} ({item['dropped']:,})", remaining))
    for step, label in (("after_exact_dedupe", "exact duplicates"), ("after_title_dedupe", "duplicate titles"),
                        ("after_sampling", "sampling (max_records)")):
        removed = steps[-1][1] - funnel[step]
        if removed:
            steps.append((f"− {label} ({removed:,})", funnel[step]))
    return steps


def plot_funnel(report: dict, path: Path) -> None:
    funnel = report["funnel"]
    steps = funnel_steps(report)
    splits = [(f"{split} examples", funnel[f"{split}_examples"]) for split in ("train", "validation", "test")]
    labels = [label for label, _ in steps + splits]
    values = [value for _, value in steps + splits]
    colors = ["#4c78a8"] + ["#9ecae9"] * (len(steps) - 1) + ["#54a24b"] * len(splits)
    with seaborn_style() as sns:
        fig = Figure(figsize=(11, 0.5 * len(labels) + 1.6), layout="constrained")
        ax = fig.subplots()
        sns.barplot(x=values, y=labels, hue=labels, palette=colors, orient="h", legend=False, ax=ax)
        for bars, value in zip(ax.containers, values, strict=True):  # one container per bar (hue)
            ax.bar_label(bars, labels=[f"{value:,} ({value / values[0]:.1%})"], padding=4, fontsize=9)
        ax.set_xlim(0, values[0] * 1.3)
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.set_xlabel("records left (percent of lines with data)")
        ax.set_ylabel("")
        ax.set_title("From raw lines to training examples: each filter, dedupe and the split (as prepare_data.py)")
        save_figure(fig, path, dpi=_DPI)


def plot_token_lengths(analysis: Analysis, path: Path) -> None:
    """The sample's training example lengths: a histogram, and their ECDF (the share each max_length covers)."""
    lengths = analysis.token_lengths["question_answer"]
    chosen = analysis.report["max_length"]
    limit = int(max(np.quantile(lengths, 0.995), chosen["recommended"] * 1.5, chosen["train_max_length"] * 1.1))
    shown = lengths[lengths <= limit]
    with seaborn_style() as sns:
        fig = Figure(figsize=(14, 5.5), layout="constrained")
        histogram, ecdf = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        sns.histplot(x=shown, bins=min(80, max(10, limit // 4)), binrange=(0, limit), color="#4c78a8", alpha=0.8,
                     ax=histogram)
        histogram.set_ylabel("sampled examples")
        sns.ecdfplot(x=lengths, color="#4c78a8", lw=2, ax=ecdf)
        ecdf.axhline(chosen["coverage_target"], color="#555555", lw=1, ls=":",
                     label=f"coverage target {chosen['coverage_target']:.0%}")
        ecdf.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
        ecdf.set_ylabel("share of examples at or below")
        for ax in (histogram, ecdf):
            ax.axvline(chosen["recommended"], color="#e45756", lw=2,
                       label=f"max_length {chosen['recommended']:,}: covers {chosen['coverage']:.1%}")
            ax.axvspan(chosen["recommended"], limit, color="#e45756", alpha=0.08, label="would be truncated")
            if chosen["train_max_length"] != chosen["recommended"] and chosen["train_max_length"] <= limit:
                ax.axvline(chosen["train_max_length"], color="#555555", lw=1.5, ls="--",
                           label=f"train.max_length {chosen['train_max_length']:,} (config.py): covers "
                                 f"{chosen['train_max_length_coverage']:.1%}")
            ax.set_xlim(0, limit)
            ax.set_xlabel(f"tokens per training example: prompt ({chosen['template']} template) + answer + EOS")
            ax.legend(loc="lower right" if ax is ecdf else "upper right", fontsize=9)
        hidden = len(lengths) - len(shown)
        histogram.set_title(f"Training example lengths in tokens (reservoir sample: {len(lengths):,} kept records"
                            + (f"; {hidden:,} longer than {limit:,} not shown)" if hidden else ")"))
        ecdf.set_title("Share of examples a max_length covers (ECDF)")
        save_figure(fig, path, dpi=_DPI)


def plot_word_cloud(words: list[tuple[str, int]], title: str, seed: int, path: Path) -> None:
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_title(title, fontsize=13)
    if words:
        cloud = WordCloud(width=1200, height=600, background_color="white", colormap="Dark2",
                          random_state=seed, max_words=len(words)).generate_from_frequencies(dict(words))
        ax.imshow(cloud.to_array(), interpolation="bilinear")
    else:
        ax.text(0.5, 0.5, "no words", ha="center", va="center", transform=ax.transAxes)
    save_figure(fig, path, dpi=_DPI)
