"""The analysis stage's outputs: data_analysis_report.json, the PNG plots, report.md and the one-screen summary.

Plots are drawn on matplotlib Figures with the Agg canvas (no pyplot, no display needed). Every file is written
to a temporary file and renamed into place.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter
from rich.console import Console
from rich.table import Table
from wordcloud import WordCloud

from product_qa.analysis.statistics import FIELDS, LENGTH_UNITS, Analysis, LengthHistogram
from product_qa.io_utils import atomic_outputs, replaced_directory, write_json_atomic

REPORT_JSON = "data_analysis_report.json"
REPORT_MD = "report.md"
PLOTS = {"lengths": "length_histograms.png", "quality": "quality_issues.png", "funnel": "funnel.png",
         "tokens": "token_lengths.png", "cloud_title": "wordcloud_titles.png",
         "cloud_content": "wordcloud_contents.png"}
_DPI = 110
_DISPLAY_BINS_PER_DECADE = 25
_QUALITY_LABELS = {"empty_title": "empty title", "empty_content": "empty content",
                   "html_entities": "HTML entities (&#8217; &amp; …)", "html_tags": "HTML tags (<br> …)",
                   "scraping_boilerplate": "scraping boilerplate", "glued_sentences": "glued sentences (end.Start)",
                   "non_ascii": "non-ASCII characters", "non_english": "non-English text (guess)",
                   "exact_duplicates": "exact duplicates", "duplicate_titles": "repeated titles",
                   "bad_input_lines": "bad input lines"}
_UNIT_LABELS = {"chars": "characters", "words": "words", "tokens": "tokens"}


def _thousands(value: float, _position=None) -> str:
    return f"{value:,.0f}"


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    with atomic_outputs({"png": path}) as handles:
        fig.savefig(handles["png"], format="png", dpi=_DPI)


def _display_bins(histogram: LengthHistogram) -> tuple[np.ndarray, np.ndarray]:
    """The fine histogram regrouped into log-spaced bins of equal width on a log axis (0 joins the first)."""
    top = np.log10(max(histogram.max, 2) + 1)
    edges = np.unique(np.round(10 ** np.arange(0, top + 1 / _DISPLAY_BINS_PER_DECADE,
                                                1 / _DISPLAY_BINS_PER_DECADE)).astype(np.int64))
    groups = np.clip(np.searchsorted(edges, LengthHistogram.EDGES, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(groups, weights=histogram.counts, minlength=len(edges) - 1)[:len(edges) - 1], edges


def plot_length_histograms(analysis: Analysis, path: Path) -> None:
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    axes = fig.subplots(len(FIELDS), len(LENGTH_UNITS))
    for row, name in enumerate(FIELDS):
        for col, unit in enumerate(LENGTH_UNITS):
            ax, histogram = axes[row][col], analysis.histograms[f"{name}_{unit}"]
            ax.set_title(f"{name.capitalize()} length in {_UNIT_LABELS[unit]} (n = {histogram.count:,})")
            ax.set_xlabel(f"{_UNIT_LABELS[unit]} (log scale)")
            ax.set_ylabel("records")
            if not histogram.count:
                ax.text(0.5, 0.5, "no non-empty values", ha="center", va="center", transform=ax.transAxes)
                continue
            counts, edges = _display_bins(histogram)
            ax.stairs(counts, edges, fill=True, color="#4c78a8", alpha=0.85)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
            ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
            summary = histogram.summary()
            ax.axvline(max(summary["p50"], 1), color="#e45756", lw=1.8, label=f"median {summary['p50']:,}")
            ax.axvline(max(summary["p5"], 1), color="#555555", lw=1.2, ls=":", label=f"p5 {summary['p5']:,}")
            ax.axvline(max(summary["p95"], 1), color="#555555", lw=1.2, ls="--", label=f"p95 {summary['p95']:,}")
            ax.legend(loc="best", fontsize=9)
    fig.suptitle("Lengths of non-empty raw titles and descriptions (fixed-bin histogram of the whole file)",
                 fontsize=13)
    _save(fig, path)


def plot_quality_issues(report: dict, path: Path) -> None:
    issues = sorted(report["quality"].items(), key=lambda item: item[1]["share"])
    fig = Figure(figsize=(10, 0.45 * len(issues) + 1.6), layout="constrained")
    ax = fig.subplots()
    shares = [info["share"] * 100 for _, info in issues]
    bars = ax.barh([_QUALITY_LABELS.get(name, name) for name, _ in issues], shares, color="#f58518")
    ax.bar_label(bars, labels=[f"{info['share']:.1%}  ({info['records']:,})" for _, info in issues], padding=4,
                 fontsize=9)
    ax.set_xlim(0, max(max(shares, default=0) * 1.3, 1))
    ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_xlabel("share of records (bad input: share of lines)")
    ax.set_title(f"Quality issues in {report['records']['records_parsed']:,} records")
    _save(fig, path)


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
    fig = Figure(figsize=(11, 0.5 * len(labels) + 1.6), layout="constrained")
    ax = fig.subplots()
    colors = ["#4c78a8"] + ["#9ecae9"] * (len(steps) - 1) + ["#54a24b"] * len(splits)
    bars = ax.barh(range(len(labels)), values, color=colors)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.bar_label(bars, labels=[f"{value:,} ({value / values[0]:.1%})" for value in values], padding=4, fontsize=9)
    ax.set_xlim(0, values[0] * 1.3)
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xlabel("records left (percent of lines with data)")
    ax.set_title("From raw lines to training examples: each filter, dedupe and the split (as prepare_data.py)")
    _save(fig, path)


def plot_token_lengths(analysis: Analysis, path: Path) -> None:
    report = analysis.report
    lengths = analysis.token_lengths["question_answer"]
    chosen = report["max_length"]
    fig = Figure(figsize=(11, 5.5), layout="constrained")
    ax = fig.subplots()
    limit = int(max(np.quantile(lengths, 0.995), chosen["recommended"] * 1.5, chosen["train_max_length"] * 1.1))
    shown = lengths[lengths <= limit]
    ax.hist(shown, bins=min(80, max(10, limit // 4)), range=(0, limit), color="#4c78a8", alpha=0.85)
    ax.axvline(chosen["recommended"], color="#e45756", lw=2,
               label=f"max_length {chosen['recommended']:,}: covers {chosen['coverage']:.1%} "
                     f"(target {chosen['coverage_target']:.0%})")
    ax.axvspan(chosen["recommended"], limit, color="#e45756", alpha=0.08, label="would be truncated")
    if chosen["train_max_length"] != chosen["recommended"] and chosen["train_max_length"] <= limit:
        ax.axvline(chosen["train_max_length"], color="#555555", lw=1.5, ls="--",
                   label=f"train.max_length {chosen['train_max_length']:,} (config.py): covers "
                         f"{chosen['train_max_length_coverage']:.1%}")
    ax.set_xlim(0, limit)
    ax.set_xlabel(f"tokens per training example: prompt ({chosen['template']} template) + answer + EOS")
    ax.set_ylabel("sampled examples")
    hidden = len(lengths) - len(shown)
    ax.set_title(f"Training example lengths in tokens (reservoir sample: {len(lengths):,} kept records"
                 + (f"; {hidden:,} longer than {limit:,} not shown)" if hidden else ")"))
    ax.legend(loc="upper right")
    _save(fig, path)


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
    _save(fig, path)


_SPACE_RUN = re.compile(r"(?<= ) +|^ +| +$")


def _code(text: str) -> str:
    """Text as a Markdown code span, whatever backticks and line breaks it holds; whitespace other than a single
    space is made visible, so the effect of normalize_whitespace shows."""
    text = str(text).replace("\n", "⏎").replace("\r", "␍").replace("\t", "⇥").replace("\xa0", "⍽")
    text = _SPACE_RUN.sub(lambda match: "␣" * len(match.group()), text)
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`" if text else "(empty)"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _table(header: list[str], rows: list[list], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines


def _num(value) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}" if isinstance(value, float) else str(value)


def _length_rows(report: dict) -> list[list]:
    columns = ("min", "p5", "p25", "p50", "p75", "p95", "mean", "max")
    rows = []
    for name in (*FIELDS, "question_answer"):
        for unit, summary in report["lengths"][name].items():
            if summary["count"]:
                label = "question + answer" if name == "question_answer" else name
                rows.append([f"{label}, {_UNIT_LABELS[unit]}", _num(summary["count"]),
                             *(_num(summary[column]) for column in columns)])
    return rows


def _interpret_lengths(report: dict) -> str:
    title, content = report["lengths"]["title"]["chars"], report["lengths"]["content"]["chars"]
    if not title["count"] or not content["count"]:
        return "One of the fields is empty in every record, so there is only one distribution to read."
    title_words = report["lengths"]["title"]["words"]["p50"]
    text = (f"Half of the titles have at most {title['p50']:,} characters ({title_words:,} words) and 95% at most "
            f"{title['p95']:,}. Descriptions are longer and far more spread out: median "
            f"{content['p50']:,}, p95 {content['p95']:,}, longest {content['max']:,} characters, hence the log scale.")
    if content["mean"] > 1.2 * content["p50"]:
        text += (f" Their mean ({content['mean']:,.0f}) sits well above the median: a long tail of very long "
                 "descriptions")
        limit = report["config"]["data"]["max_content_chars"]
        text += f", which the `data.max_content_chars` filter cuts at {limit:,}." if content["max"] > limit else "."
    return text


def _interpret_quality(report: dict) -> str:
    ranked = sorted(((info["share"], name) for name, info in report["quality"].items() if info["records"]),
                    reverse=True)
    if not ranked:
        return "No quality issue was found."
    named = [f"{_QUALITY_LABELS.get(name, name)} ({share:.1%})" for share, name in ranked[:3]]
    listed = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]
    return (f"The most frequent issues are {listed}. Empty fields and duplicates are dropped by the preparation "
            "stage; entities, tags, boilerplate and glued sentences are repaired by its cleaning rules (below).")


def _interpret_funnel(report: dict) -> str:
    funnel = report["funnel"]
    examples = sum(funnel[f"{split}_examples"] for split in ("train", "validation", "test"))
    losses = sorted(((item["dropped"], item["filter"]) for item in report["filters"] if item["dropped"]), reverse=True)
    losses += [(info["count"], name) for name, info in report["duplicates_dropped"].items() if info["count"]]
    losses.sort(reverse=True)
    biggest = " and ".join(f"{name.replace('_', ' ')} ({count:,})" for count, name in losses[:2])
    return (f"{examples:,} of {funnel['lines_with_data']:,} lines "
            f"({examples / max(funnel['lines_with_data'], 1):.1%}) become examples"
            + (f"; the biggest losses are {biggest}." if biggest else ".")
            + " These are the counts `prepare_data.py` reports for this file with the same `data.*` settings.")


def _interpret_tokens(report: dict) -> str:
    chosen = report["max_length"]
    qa = report["lengths"]["question_answer"]["tokens"]
    prompt = ("the model's chat template with the system prompt" if chosen["system_prompt"] else
              "the model's chat template" if chosen["template"] == "chat" else
              "the plain `Question: … Answer:` template")
    return (f"Encoded as the training stage encodes it (the question in a training phrasing, in {prompt}, then the "
            f"description and EOS), an example has a median of {qa['p50']:,} tokens and p95 {qa['p95']:,}. "
            f"`max_length` {chosen['recommended']:,} "
            f"(p{chosen['coverage_target'] * 100:g} = {chosen['tokens_at_coverage']:,} rounded up to a multiple of 8) "
            f"covers {chosen['coverage']:.1%} of the {chosen['examples_measured']:,} sampled examples"
            + ("; the longer ones would be truncated." if chosen["coverage"] < 1 else ".")
            + f" The configured `train.max_length` {chosen['train_max_length']:,} covers "
              f"{chosen['train_max_length_coverage']:.1%}.")


def _interpret_words(report: dict) -> str:
    parts = []
    for name, label in (("title", "titles"), ("content", "descriptions")):
        top = [word for word, _ in report["top_terms"][name]["words"]["top"][:5]]
        if top:
            parts.append(f"in {label}: {', '.join(top)}")
    return ("Most frequent words " + "; ".join(parts) + ". Words of formats and editions are counted on their own "
            "under title patterns.") if parts else "No words were found."


def _interpret_patterns(report: dict) -> str:
    patterns = report["title_patterns"]
    records = report["records"]["records_parsed"]
    if not patterns["formats"] and not patterns["language_editions"]:
        return "No format or language edition is named in the titles."
    formats = ", ".join(f"{name} ({count:,})" for name, count in list(patterns["formats"].items())[:4])
    languages = sum(patterns["language_editions"].values())
    return (f"The formats titles name most often: {formats}. {languages:,} titles ({languages / records:.2%}) mark a "
            "language edition such as `(Spanish Edition)`; the normalized title the preparation stage dedupes on "
            "ignores these qualifiers.")


def render_markdown(analysis: Analysis) -> str:
    report = analysis.report
    records, funnel, source = report["records"], report["funnel"], report["input"]
    parsed = records["records_parsed"]
    methods = report["methods"]
    examples = sum(funnel[f"{split}_examples"] for split in ("train", "validation", "test"))
    chosen = report["max_length"]
    lines = [f"# Exploratory analysis of `{Path(source['path']).name}`", "",
             f"`{source['path']}`: {source['size_bytes'] / 2**20:,.1f} MiB, {records['lines_with_data']:,} lines, "
             f"read once by `python data_analysis.py` ({report['timings_s']['streamed_pass']:.1f} s; "
             f"{report['timings_s']['total']:.1f} s with token counts and word clouds). Every figure below is also "
             f"in `{REPORT_JSON}`; the last section says how each was computed.", "",
             "## Key numbers", ""]
    duplicates = report["duplicates"]
    key_rows = [
        ["lines with data", _num(records["lines_with_data"]), ""],
        ["bad input lines (skipped)", _num(records["bad_input"]),
         f"{records['bad_input'] / max(records['lines_with_data'], 1):.1%} of lines"],
        ["records", _num(parsed), "100%"],
        ["empty title", _num(records["empty_title"]), f"{records['empty_title'] / parsed:.1%}"],
        ["empty description", _num(records["empty_content"]), f"{records['empty_content'] / parsed:.1%}"],
        ["both fields non-empty", _num(records["both_fields"]), f"{records['both_fields'] / parsed:.1%}"],
        ["exact duplicates (same raw title and description)", _num(duplicates["exact_duplicates"]),
         f"{duplicates['exact_duplicates'] / parsed:.1%}"],
        ["repeated titles (same raw title, other description)", _num(duplicates["duplicate_titles"]),
         f"{duplicates['duplicate_titles'] / parsed:.1%}"],
        ["median title / description length", " / ".join(
            f"{report['lengths'][name]['chars'].get('p50', 0):,}" for name in FIELDS) + " characters", ""],
        ["examples after prepare (train / validation / test)",
         f"{examples:,} ({funnel['train_examples']:,} / {funnel['validation_examples']:,} / "
         f"{funnel['test_examples']:,})", f"{examples / max(records['lines_with_data'], 1):.1%} of lines"],
    ]
    if "recommended" in chosen:
        key_rows.append(["recommended `max_length`", f"{chosen['recommended']:,} tokens",
                         f"covers {chosen['coverage']:.1%} of examples"])
    lines += _table(["", "count", "share"], key_rows, "lrr") + [""]

    lines += ["## Lengths", ""]
    lines += _table(["field, unit", "n", "min", "p5", "p25", "median", "p75", "p95", "mean", "max"],
                    _length_rows(report)) + [""]
    lines += [f"![Length histograms]({PLOTS['lengths']})", "", _interpret_lengths(report), "",
              f"*Method:* characters and words (whitespace-separated) of the raw non-empty fields: "
              f"{methods['lengths_in_chars_and_words']}. Tokens: {methods['lengths_in_tokens']}.", ""]

    lines += ["## Quality issues", "", f"![Quality issues]({PLOTS['quality']})", "", _interpret_quality(report), ""]
    quality_rows = [[_QUALITY_LABELS.get(name, name), _num(info["records"]), f"{info['share']:.2%}",
                     _num(info.get("title", "")), _num(info.get("content", ""))]
                    for name, info in report["quality"].items()]
    lines += _table(["issue", "records", "share", "in titles", "in descriptions"], quality_rows) + [""]
    lines += [f"*Method:* {methods['quality_issues']}. Non-English is a cheap guess: more Spanish, French, German, "
              "Italian or Portuguese function words than English ones among a text's first 60 words, or mostly "
              "non-Latin letters. Duplicates: " + methods["duplicates"] + ".", ""]

    lines += ["## Cleaning rules of the preparation stage", "",
              "How many records each rule of `product_qa/data/cleaning.py` changes, applied in order to every non-empty "
              "title and description (the preparation stage cleans the records that have both).", ""]
    lines += _table(["rule", "records changed", "share", "titles", "descriptions"],
                    [[f"`{rule['rule']}`", _num(rule["records"]), f"{rule['records'] / parsed:.1%}",
                      _num(rule["title"]), _num(rule["content"])] for rule in report["cleaning_rules"]]) + [""]
    for rule in report["cleaning_rules"]:
        if rule["examples"]:
            lines += [f"**`{rule['rule']}`**", ""]
            lines += [f"- line {ex['line']} ({ex['field']}): {_code(ex['before'])} → {_code(ex['after'])}"
                      for ex in rule["examples"]]
            lines += [""]

    lines += ["## Filters of the preparation stage", "",
              "Records each filter of `product_qa/data/filtering.py` drops, counted under the first that applies, on "
              "the cleaned records.", ""]
    lines += _table(["filter", "dropped", "share"],
                    [[f"`{item['filter']}`", _num(item["dropped"]), f"{item['dropped'] / parsed:.1%}"]
                     for item in report["filters"]]) + [""]
    for item in report["filters"]:
        if item["examples"]:
            lines += [f"**`{item['filter']}`**", ""]
            lines += [f"- line {ex['line']}: title {_code(ex['title'])}, description {_code(ex['content'][:120])}"
                      for ex in item["examples"]]
            lines += [""]

    lines += ["## From raw records to training examples", "", f"![Funnel]({PLOTS['funnel']})", "",
              _interpret_funnel(report), ""]
    lines += _table(["step", "records"], [[step.replace("_", " "), _num(count)] for step, count in funnel.items()])
    lines += ["", f"*Method:* {methods['cleaning_filters_funnel']}.", ""]

    lines += ["## Tokens and `max_length`", ""]
    if "recommended" in chosen:
        lines += [f"![Token lengths]({PLOTS['tokens']})", "", _interpret_tokens(report), "",
                  f"*Method:* a reservoir sample of {report['sample_sizes']['tokens']:,} records "
                  f"({report['config']['model']['name']} tokenizer); the examples are those of its records that "
                  "pass the filters, cleaned, each with the training phrasing prepare picks for it and encoded by "
                  "the training stage's `ExampleEncoder`.", ""]
    else:
        lines += ["Tokens were not counted (`analysis.token_sample_size=0` or no record passed the filters).", ""]

    lines += ["## Frequent words", "", _interpret_words(report), ""]
    terms = report["top_terms"]
    columns = [terms[name][kind]["top"] for name in FIELDS for kind in ("words", "bigrams")]
    rows = [[str(rank + 1), *(f"{column[rank][0]} ({column[rank][1]:,})" if rank < len(column) else ""
                              for column in columns)]
            for rank in range(max(map(len, columns), default=0))]
    lines += _table(["#", "title words", "title bigrams", "description words", "description bigrams"], rows,
                    "rllll") + [""]
    lines += [f"![Word cloud of titles]({PLOTS['cloud_title']})", "",
              f"![Word cloud of descriptions]({PLOTS['cloud_content']})", "",
              f"*Method:* words of the cleaned text, lowercased, English stopwords, numbers and single letters removed;"
              f" bigrams are two such words side by side. Tables: {methods['top_terms']} (here "
              f"{max(terms[name][kind]['max_undercount'] for name in FIELDS for kind in terms[name]):,}; 0 means "
              "exact). "
              f"Word clouds: {methods['word_clouds']}.", ""]

    patterns = report["title_patterns"]
    lines += ["## Title patterns", "", _interpret_patterns(report), ""]
    lines += _table(["format named in the title", "titles"],
                    [[name, _num(count)] for name, count in patterns["formats"].items()]) + [""]
    if patterns["language_editions"]:
        lines += _table(["language edition", "titles"],
                        [[f"({name} Edition)", _num(count)] for name, count in patterns["language_editions"].items()])
        lines += [""]
    lines += _table(["most frequent bracketed qualifiers", "titles"],
                    [[_code(text), _num(count)] for text, count in patterns["qualifiers"]["top"]]) + [""]
    lines += [f"*Method:* {methods['title_patterns']}.", ""]

    if report["bad_input"]:
        lines += ["## Bad input", "", "Lines the shared reader skipped, by reason:", ""]
        lines += _table(["reason", "lines", "first lines", "example"],
                        [[reason, _num(info["count"]), ", ".join(map(str, info["first_lines"])), info["example"]]
                         for reason, info in report["bad_input"].items()]) + [""]

    lines += ["## How each figure was computed", ""]
    lines += [f"- **{name.replace('_', ' ')}**: {method}" for name, method in methods.items()]
    lines += ["- Memory stays bounded: per record only two 8-byte hashes (raw duplicates) and the preparation "
              "stage's five numbers for records that pass the filters; everything else is fixed-size.", ""]
    return "\n".join(lines)


def write_report(analysis: Analysis, output_dir: str) -> dict[str, Path]:
    """Write the JSON report, the plots and report.md, as one set that replaces `output_dir` whole (a reader, such
    as the web demo's analysis tab, never sees new plots beside an old report); returns their paths."""
    target = Path(output_dir)
    with replaced_directory(target, REPORT_JSON) as out:
        _write_report_files(analysis, out)
    written = {name: target / filename for name, filename in PLOTS.items()} | {"json": target / REPORT_JSON,
                                                                                "markdown": target / REPORT_MD}
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
    write_json_atomic(out / REPORT_JSON, report)
    with atomic_outputs({"md": out / REPORT_MD}) as handles:
        handles["md"].write(render_markdown(analysis).encode())


def print_analysis_summary(report: dict, paths: dict[str, Path], console: Console | None = None) -> None:
    console = console or Console()
    records, funnel, lengths = report["records"], report["funnel"], report["lengths"]
    parsed = records["records_parsed"]
    table = Table(title="data_analysis", caption=report["input"]["path"], header_style="bold")
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
                table.add_row(f"{name} {_UNIT_LABELS[unit]}: median / p95", f"{summary['p50']:,} / {summary['p95']:,}",
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
    console.print(f"time {report['timings_s']['total']:.1f} s -> {paths['markdown']}, {paths['json'].name} and "
                  f"{sum(path.suffix == '.png' for path in paths.values())} plots in {paths['markdown'].parent}")
