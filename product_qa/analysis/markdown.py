"""report.md: the analysis report as Markdown, one function per section, with a short reading of each figure."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from product_qa.analysis.cleaning_trace import FIELDS
from product_qa.analysis.plots import PLOTS, QUALITY_LABELS, UNIT_LABELS
from product_qa.reporting import code_span, markdown_table, markdown_text

if TYPE_CHECKING:
    from product_qa.analysis.statistics import Analysis

REPORT_JSON = "data_analysis_report.json"
REPORT_MD = "report.md"


_SPACE_RUN = re.compile(r"(?<= ) +|^ +| +$")


def _code(text: str) -> str:
    """Text as a Markdown code span (reporting.code_span); whitespace other than a single space is made visible,
    so the effect of normalize_whitespace shows."""
    text = str(text).replace("\n", "⏎").replace("\r", "␍").replace("\t", "⇥").replace("\xa0", "⍽")
    return code_span(_SPACE_RUN.sub(lambda match: "␣" * len(match.group()), text))


def _num(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}" if isinstance(value, float) else str(value)


def _length_rows(report: dict) -> list[list]:
    columns = ("min", "p5", "p25", "p50", "p75", "p95", "mean", "max")
    rows = []
    for name in (*FIELDS, "question_answer"):
        for unit, summary in report["lengths"][name].items():
            if summary["count"]:
                label = "question + answer" if name == "question_answer" else name
                rows.append([f"{label}, {UNIT_LABELS[unit]}", _num(summary["count"]),
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
    named = [f"{QUALITY_LABELS.get(name, name)} ({share:.1%})" for share, name in ranked[:3]]
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
    lines = _header(report)
    for section in (_key_numbers, _lengths, _quality, _cleaning_rules, _filters, _funnel, _tokens, _words,
                    _title_patterns, _bad_input, _methods):
        lines += section(report)
    return "\n".join(lines)


def _examples_made(funnel: dict) -> int:
    return sum(funnel[f"{split}_examples"] for split in ("train", "validation", "test"))


def _header(report: dict) -> list[str]:
    records, source, timings = report["records"], report["input"], report["timings_s"]
    return [f"# Exploratory analysis of {code_span(Path(source['path']).name)}", "",
            f"{code_span(source['path'])}: {source['size_bytes'] / 2**20:,.1f} MiB, "
            f"{records['lines_with_data']:,} lines, "
            f"read once by `python data_analysis.py` ({timings['streamed_pass']:.1f} s; "
            f"{timings['total']:.1f} s with token counts and word clouds). Every figure below is also "
            f"in `{REPORT_JSON}`; the last section says how each was computed.", ""]


def _key_numbers(report: dict) -> list[str]:
    records, funnel, duplicates, chosen = (report["records"], report["funnel"], report["duplicates"],
                                           report["max_length"])
    parsed, lines_with_data = records["records_parsed"], max(records["lines_with_data"], 1)
    examples = _examples_made(funnel)
    rows = [
        ["lines with data", _num(records["lines_with_data"]), ""],
        ["bad input lines (skipped)", _num(records["bad_input"]),
         f"{records['bad_input'] / lines_with_data:.1%} of lines"],
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
         f"{funnel['test_examples']:,})", f"{examples / lines_with_data:.1%} of lines"],
    ]
    if "recommended" in chosen:
        rows.append(["recommended `max_length`", f"{chosen['recommended']:,} tokens",
                     f"covers {chosen['coverage']:.1%} of examples"])
    return ["## Key numbers", "", *markdown_table(["", "count", "share"], rows, "lrr"), ""]


def _lengths(report: dict) -> list[str]:
    methods = report["methods"]
    return ["## Lengths", "",
            *markdown_table(["field, unit", "n", "min", "p5", "p25", "median", "p75", "p95", "mean", "max"],
                            _length_rows(report)), "",
            f"![Length histograms]({PLOTS['lengths']})", "", _interpret_lengths(report), "",
            f"*Method:* characters and words (whitespace-separated) of the raw non-empty fields: "
            f"{methods['lengths_in_chars_and_words']}. Tokens: {methods['lengths_in_tokens']}.", ""]


def _quality(report: dict) -> list[str]:
    rows = [[QUALITY_LABELS.get(name, name), _num(info["records"]), f"{info['share']:.2%}",
             _num(info.get("title", "")), _num(info.get("content", ""))] for name, info in report["quality"].items()]
    return ["## Quality issues", "", f"![Quality issues]({PLOTS['quality']})", "", _interpret_quality(report), "",
            *markdown_table(["issue", "records", "share", "in titles", "in descriptions"], rows), "",
            f"*Method:* {report['methods']['quality_issues']}. Non-English is a cheap guess: more Spanish, French, "
            "German, Italian or Portuguese function words than English ones among a text's first 60 words, or "
            "mostly non-Latin letters. Duplicates: " + report["methods"]["duplicates"] + ".", ""]


def _cleaning_rules(report: dict) -> list[str]:
    parsed = report["records"]["records_parsed"]
    lines = ["## Cleaning rules of the preparation stage", "",
             "How many records each rule of `product_qa/data/cleaning.py` changes, applied in order to every "
             "non-empty title and description (the preparation stage cleans the records that have both).", ""]
    lines += markdown_table(["rule", "records changed", "share", "titles", "descriptions"],
                            [[f"`{rule['rule']}`", _num(rule["records"]), f"{rule['records'] / parsed:.1%}",
                              _num(rule["title"]), _num(rule["content"])] for rule in report["cleaning_rules"]])
    return lines + [""] + _example_lists(
        report["cleaning_rules"], "rule",
        lambda ex: f"- line {ex['line']} ({ex['field']}): {_code(ex['before'])} → {_code(ex['after'])}")


def _filters(report: dict) -> list[str]:
    parsed = report["records"]["records_parsed"]
    lines = ["## Filters of the preparation stage", "",
             "Records each filter of `product_qa/data/filtering.py` drops, counted under the first that applies, "
             "on the cleaned records.", ""]
    lines += markdown_table(["filter", "dropped", "share"],
                            [[f"`{item['filter']}`", _num(item["dropped"]), f"{item['dropped'] / parsed:.1%}"]
                             for item in report["filters"]]) + [""]
    return lines + _example_lists(
        report["filters"], "filter",
        lambda ex: f"- line {ex['line']}: title {_code(ex['title'])}, description {_code(ex['content'][:120])}")


def _example_lists(items: list[dict], name: str, line: Callable[[dict], str]) -> list[str]:
    """Each item's examples, one line each, under its name in bold."""
    lines = []
    for item in items:
        if item["examples"]:
            lines += [f"**`{item[name]}`**", "", *(line(example) for example in item["examples"]), ""]
    return lines


def _funnel(report: dict) -> list[str]:
    rows = [[step.replace("_", " "), _num(count)] for step, count in report["funnel"].items()]
    return ["## From raw records to training examples", "", f"![Funnel]({PLOTS['funnel']})", "",
            _interpret_funnel(report), "", *markdown_table(["step", "records"], rows),
            "", f"*Method:* {report['methods']['cleaning_filters_funnel']}.", ""]


def _tokens(report: dict) -> list[str]:
    if "recommended" not in report["max_length"]:
        return ["## Tokens and `max_length`", "",
                "Tokens were not counted (`analysis.token_sample_size=0` or no record passed the filters).", ""]
    return ["## Tokens and `max_length`", "", f"![Token lengths]({PLOTS['tokens']})", "", _interpret_tokens(report),
            "", f"*Method:* a reservoir sample of {report['sample_sizes']['tokens']:,} records "
                f"({report['config']['model']['name']} tokenizer); the examples are those of its records that "
                "pass the filters, cleaned, each with the training phrasing prepare picks for it and encoded by "
                "the training stage's `ExampleEncoder`.", ""]


def _words(report: dict) -> list[str]:
    terms = report["top_terms"]
    columns = [terms[name][kind]["top"] for name in FIELDS for kind in ("words", "bigrams")]
    rows = [[str(rank + 1), *(f"{column[rank][0]} ({column[rank][1]:,})" if rank < len(column) else ""
                              for column in columns)]
            for rank in range(max(map(len, columns), default=0))]
    undercount = max(terms[name][kind]["max_undercount"] for name in FIELDS for kind in terms[name])
    return ["## Frequent words", "", _interpret_words(report), "",
            *markdown_table(["#", "title words", "title bigrams", "description words", "description bigrams"], rows,
                            "rllll"), "",
            f"![Word cloud of titles]({PLOTS['cloud_title']})", "",
            f"![Word cloud of descriptions]({PLOTS['cloud_content']})", "",
            f"*Method:* words of the cleaned text, lowercased, English stopwords, numbers and single letters removed;"
            f" bigrams are two such words side by side. Tables: {report['methods']['top_terms']} (here "
            f"{undercount:,}; 0 means exact). "
            f"Word clouds: {report['methods']['word_clouds']}.", ""]


def _title_patterns(report: dict) -> list[str]:
    patterns = report["title_patterns"]
    lines = ["## Title patterns", "", _interpret_patterns(report), ""]
    lines += markdown_table(["format named in the title", "titles"],
                            [[name, _num(count)] for name, count in patterns["formats"].items()]) + [""]
    if patterns["language_editions"]:
        lines += markdown_table(["language edition", "titles"],
                                [[f"({name} Edition)", _num(count)]
                                 for name, count in patterns["language_editions"].items()])
        lines += [""]
    lines += markdown_table(["most frequent bracketed qualifiers", "titles"],
                            [[_code(text), _num(count)] for text, count in patterns["qualifiers"]["top"]]) + [""]
    return lines + [f"*Method:* {report['methods']['title_patterns']}.", ""]


def _bad_input(report: dict) -> list[str]:
    if not report["bad_input"]:
        return []
    rows = [[reason, _num(info["count"]), ", ".join(map(str, info["first_lines"])), markdown_text(info["example"])]
            for reason, info in report["bad_input"].items()]
    return ["## Bad input", "", "Lines the shared reader skipped, by reason:", "",
            *markdown_table(["reason", "lines", "first lines", "example"], rows), ""]


def _methods(report: dict) -> list[str]:
    return ["## How each figure was computed", "",
            *(f"- **{name.replace('_', ' ')}**: {method}" for name, method in report["methods"].items()),
            "- Memory stays bounded: per record only two 8-byte hashes (raw duplicates) and the preparation "
            "stage's five numbers for records that pass the filters; everything else is fixed-size.", ""]
