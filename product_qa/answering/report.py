"""What the answering stages show: the generation test's answers side by side, the evaluation's tables
(terminal, Markdown, and the web demo's tab), its per-answer table and its bar chart."""
from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING

from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.table import Table

from product_qa.reporting import (
    code_span,
    console_text,
    markdown_table,
    markdown_text,
    save_figure,
    seaborn_style,
)

if TYPE_CHECKING:
    import pandas as pd

# (column, key in a system's summary, format); "-" where a system has no such number
EVAL_COLUMNS = (("ROUGE-1", "rouge1", "{:.3f}"), ("ROUGE-2", "rouge2", "{:.3f}"), ("ROUGE-L", "rougeL", "{:.3f}"),
                ("ROUGE-L held-out", "held_out_rougeL", "{:.3f}"), ("ROUGE-L forms", "named_forms_rougeL", "{:.3f}"),
                ("BLEU", "bleu", "{:.1f}"), ("chrF", "chrf", "{:.1f}"), ("similarity", "similarity", "{:.3f}"),
                ("exact description", "exact", "{:.0%}"), ("invented details", "invented_details", "{:.0%}"),
                ("declined", "declined", "{:.0%}"), ("wrong product", "wrong_product", "{:.0%}"),
                ("ref. perplexity", "perplexity", "{:.1f}"), ("length ratio", "length_ratio", "{:.2f}"),
                ("distinct-2", "distinct_2", "{:.2f}"), ("repeated 3-grams", "repeated_3gram", "{:.3f}"),
                ("right product", "right_product", "{:.0%}"), ("latency s", "latency_s", "{:.2f}"),
                ("tokens/s", "tokens_per_s", "{:.0f}"))
# the terminal table: the columns that fit one screen (evaluation_report.md has them all)
SUMMARY_COLUMNS = (("ROUGE-L", "rougeL", "{:.3f}"), ("held", "held_out_rougeL", "{:.3f}"),
                   ("forms", "named_forms_rougeL", "{:.3f}"), ("exact", "exact", "{:.0%}"),
                   ("inv.", "invented_details", "{:.0%}"), ("decl.", "declined", "{:.0%}"),
                   ("wrong", "wrong_product", "{:.0%}"), ("right", "right_product", "{:.0%}"))
SET_TITLES = {"catalog": "catalog products (memorized, new phrasings)",
              "indexed": "indexed products (in the index, not trained on)",
              "unknown": "unknown products (test split, not indexed)"}


# ------------------------------------------------------------------------------------------ generation test
def print_answers(samples: list[dict], console: Console) -> None:
    """Each question with the base model's, the fine-tuned model's and the reference answer, one under another."""
    for sample in samples:  # a title or an answer may hold "[...]" (rich markup) or an escape sequence
        console.print(f"[bold]Q:[/] {console_text(sample['question'])}"
                      + (f"  [dim]({sample['set']} product)[/]" if sample.get("set") in SET_TITLES else "")
                      + ("  [yellow](cut to generation.max_question_chars)[/]" if sample.get("question_cut") else ""))
        for key, label in (("base", "[dim]base:[/]      "), ("fine_tuned", "[green]fine-tuned:[/]"),
                           ("reference", "[dim]reference:[/] ")):
            if sample.get(key) is not None:
                console.print(f"  {label} {console_text(_one_line(sample[key]))}")


def print_generation_test(results: dict, path: str, no_run_note: str | None, console: Console | None = None) -> None:
    """The answers, then, where no fine-tuned run answered, `no_run_note` (why the base model stood in)."""
    console = console or Console()
    print_answers(results["questions"], console)
    if no_run_note is not None:
        console.print(f"[yellow]note[/]: {console_text(no_run_note)}")
    console.print(f"{len(results['questions'])} questions, answered by {', '.join(results['systems'])} -> "
                  f"{console_text(path)}")


# ------------------------------------------------------------------------------------------------ evaluation
def summary_cell(summary: dict, key: str, fmt: str) -> str:
    """One figure of a summary as its column shows it; "-" where the system has none (retrieval has no ppl)."""
    value = summary.get(key)
    return "-" if value is None else fmt.format(value)


def evaluation_tables(report: dict) -> list[str]:
    """The report's header line and one Markdown table per question set (the web demo shows these too)."""
    lines = ["# Evaluation report", "",
             f"Model: {code_span(report['model'])}; fine-tuned run: {code_span(report['run'] or 'none')}; decoding: "
             f"{', '.join(f'{k}={v}' for k, v in report['decoding'].items())}; RAG: "
             f"{', '.join(f'{k}={v}' for k, v in report['rag'].items())}. Total time {report['seconds']:.0f} s.", ""]
    if report["skipped_systems"]:
        lines += [f"Skipped (no fine-tuned model yet): {', '.join(report['skipped_systems'])}.", ""]
    for set_name, result in report["sets"].items():
        rows = [[report["labels"][system], *(summary_cell(entry["summary"], key, fmt) for _, key, fmt in EVAL_COLUMNS)]
                for system, entry in result["systems"].items()]
        lines += [f"## {SET_TITLES[set_name]}: {result['questions']} questions", "",
                  *markdown_table(["system", *(column for column, _, _ in EVAL_COLUMNS)], rows), "",
                  *_forms_table(report, result), ""]
    return lines


def _forms_table(report: dict, result: dict) -> list[str]:
    """ROUGE-L of each system by question form (questions in brackets)."""
    forms = list(dict.fromkeys(form for entry in result["systems"].values() for form in entry["summary"]["forms"]))
    first = next(iter(result["systems"].values()))["summary"]["forms"]
    rows = [[report["labels"][system], *(f"{entry['summary']['forms'][form]['rougeL']:.3f}"
                                         if form in entry["summary"]["forms"] else "-" for form in forms)]
            for system, entry in result["systems"].items()]
    return ["ROUGE-L by question form:", "",
            *markdown_table(["system", *(f"{form} ({first[form]['questions'] if form in first else 0})"
                                         for form in forms)], rows)]


def evaluation_markdown(report: dict) -> str:
    """evaluation_report.md: a table per question set, then the worst answers of each system."""
    lines = evaluation_tables(report)
    lines += ["## Worst answers (lowest ROUGE-L)", ""]
    for set_name, result in report["sets"].items():
        for system, entry in result["systems"].items():
            lines += [f"### {set_name}, {report['labels'][system]}", ""]
            for row in entry["worst"]:
                lines += [f"- **Q:** {markdown_text(row['question'])}  ", f"  **answer** (ROUGE-L {row['rougeL']:.2f}"
                          f"{', source ' + markdown_text(row['source_uid']) if row.get('source_uid') else ''}): "
                          f"{markdown_text(_one_line(row['answer']))}  ",
                          f"  **reference:** {markdown_text(_one_line(row['reference']))}"]
            lines.append("")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


def answers_frame(report: dict) -> pd.DataFrame:
    """Every answer of the evaluation, one row each: its set and system, then the fields and scores of its row in
    evaluation_report.json (a RAG system's source columns are empty for the others)."""
    import pandas as pd  # here: the terminal summary and the web demo's tables need no pandas

    return pd.DataFrame([{"set": set_name, "system": system, **row} for set_name, result in report["sets"].items()
                         for system, entry in result["systems"].items() for row in entry["answers"]])


def plot_evaluation(report: dict, answers: pd.DataFrame, target: Path | IO[bytes]) -> None:
    """Bars: the mean ROUGE-L, chrF/100 and similarity of each system's answers (`answers_frame`), whiskers their
    95% bootstrap confidence interval, one panel per question set (the figures themselves are in the tables)."""
    shown = {"rougeL": "ROUGE-L", "chrf": "chrF / 100", "similarity": "similarity"}
    scores = (answers.assign(chrf=answers["chrf"] / 100, system=answers["system"].map(report["labels"]))
              .melt(id_vars=["set", "system"], value_vars=list(shown), var_name="score", value_name="value"))
    scores["score"] = scores["score"].map(shown)
    sets = list(report["sets"].items())
    with seaborn_style() as sns:
        fig = Figure(figsize=(6.5 * len(sets), 4.6), dpi=120, layout="constrained")
        axes = fig.subplots(1, len(sets), sharey=True, squeeze=False)[0]
        for ax, (set_name, result) in zip(axes, sets, strict=True):
            sns.barplot(data=scores[scores["set"] == set_name], x="system", y="value", hue="score",
                        order=[report["labels"][s] for s in result["systems"]], hue_order=list(shown.values()),
                        errorbar=("ci", 95), n_boot=1000, seed=0, capsize=0.15, err_kws={"linewidth": 1}, ax=ax)
            ax.tick_params(axis="x", labelrotation=20)
            ax.set_title(f"{SET_TITLES[set_name]}, n={result['questions']}", fontsize=10)
            ax.set_xlabel("")
            ax.set_ylim(0, 1.05)
            if ax is not axes[0]:
                ax.get_legend().remove()
        axes[0].set_ylabel("score against the reference (0-1):\nmean per answer, 95% CI")
        axes[0].legend(fontsize=8, loc="upper left")
        save_figure(fig, target)


def print_evaluation_summary(report: dict, outputs: list[str], console: Console | None = None) -> None:
    console = console or Console()
    for set_name, result in report["sets"].items():
        table = Table(title=f"{SET_TITLES[set_name]}: {result['questions']} questions", header_style="bold",
                      box=box.SIMPLE_HEAD, collapse_padding=True)  # one screen wide
        table.add_column("system", no_wrap=True)
        for column, _, _ in SUMMARY_COLUMNS:
            table.add_column(column, justify="right", min_width=len(column))
        for system, entry in result["systems"].items():
            table.add_row(report["labels"][system], *[summary_cell(entry["summary"], key, fmt)
                                                      for _, key, fmt in SUMMARY_COLUMNS])
        console.print(table)
    console.print("held: ROUGE-L of the held-out phrasings; forms: mean ROUGE-L over the forms that name the "
                  "title or its short form; exact: ROUGE-L >= 0.9; inv.: specific tokens (numbers, names) in "
                  "neither question nor reference; decl.: answered \"I don't know this product\"; wrong: described "
                  "another product; right: the right product was retrieved and accepted (unknown: none was "
                  "accepted); every figure in evaluation_report.md")
    if report["skipped_systems"]:
        console.print(f"[yellow]skipped[/] (no fine-tuned model yet): {', '.join(report['skipped_systems'])}")
    console.print(f"{report['seconds']:.0f} s -> {console_text(', '.join(outputs))}")
