"""The dataset card (README.md) written with the prepared splits: a Hugging Face dataset card, its YAML header
(license, task, size, the splits' files) and its text (source, counts, the funnel, fields, how to load it, the
license) made from the preparation's report alone, so that it always describes the files beside it. It holds no
timing: the same input and settings give the same card, as they give the same splits."""
from __future__ import annotations

import json
from pathlib import PurePath

from product_qa.data.examples import SPLITS
from product_qa.data.prompts import HELD_OUT_PHRASINGS, PHRASING_LANGUAGES, TRAINING_PHRASINGS
from product_qa.reporting import code_span, markdown_table

CARD_NAME = "README.md"
SOURCE_LINK = "http://manikvarma.org/downloads/XC/XMLRepository.html"
# the Hub's size categories, each with the exclusive upper bound of its example count
_SIZE_CATEGORIES = (("n<1K", 1_000), ("1K<n<10K", 10_000), ("10K<n<100K", 100_000), ("100K<n<1M", 1_000_000),
                    ("1M<n<10M", 10_000_000), ("n>10M", None))

FIELDS = (
    ("uid", "the product's id in the source file (its `uid`; a hash of its title and content where it has none)"),
    ("title", "the product title, cleaned (product_qa/data/cleaning.py: entities and HTML tags decoded or removed, "
              "whitespace normalized)"),
    ("question", "a question about the title, in one of the phrasings of its split"),
    ("answer", "the product's description, cleaned: what a fine-tuned model should answer"),
    ("phrasing", "the id of the question's phrasing (product_qa/data/prompts.py)"),
    ("language", "the question's language (the descriptions are the catalog's own, mostly English)"),
    ("messages", "the user and assistant turns ([{\"role\": \"user\", \"content\": question}, {\"role\": "
                 "\"assistant\", \"content\": answer}]), the chat form TRL's SFTTrainer and LLaMA-Factory read. No "
                 "system prompt: that is a training setting (train.system_prompt), added in the training views the "
                 "main job writes under views/"),
)


def size_category(examples: int) -> str:
    return next(name for name, bound in _SIZE_CATEGORIES if bound is None or examples < bound)


def _yaml_header(report: dict) -> str:
    """The card's metadata; strings are written as JSON strings, which YAML reads as they are."""
    examples = sum(report["steps"][f"{split}_examples"] for split in SPLITS)
    lines = ["---", 'pretty_name: "AmazonTitles-1.3MM product questions"', "license: other",
             'license_name: "amazontitles-1.3mm"', f"license_link: {json.dumps(SOURCE_LINK)}", "language:",
             *(f"- {language}" for language in PHRASING_LANGUAGES),
             "task_categories:", "- question-answering", "- text-generation",
             "size_categories:", f"- {json.dumps(size_category(examples))}",
             "configs:", "- config_name: default", "  data_files:"]
    for split in SPLITS:
        lines += [f"  - split: {split}", f"    path: {split}.jsonl"]
    return "\n".join([*lines, "---"])


def _funnel(report: dict) -> list[str]:
    """Records read, then each reason records were dropped for, then what each split kept."""
    steps = report["steps"]
    rows = [("lines with data", steps["lines_with_data"])]
    rows += [(f"dropped: bad input ({reason})", -info["count"]) for reason, info in report["bad_input"].items()]
    rows += [(f"dropped: {reason.replace('_', ' ')}", -info["count"]) for group in ("dropped", "duplicates_dropped")
             for reason, info in report[group].items() if info["count"]]
    sampled_out = steps["after_title_dedupe"] - steps["after_sampling"]
    if sampled_out:
        rows.append(("dropped: sampling (data.max_records)", -sampled_out))
    rows.append(("kept", steps["after_sampling"]))
    rows += [(f"kept: {split}", steps[f"{split}_examples"]) for split in SPLITS]
    return markdown_table(["step", "records"], [[name, f"{count:,}"] for name, count in rows])


def dataset_card(report: dict) -> str:
    """The card of the split set `report` (prep_report.json) describes. Paths from the settings are shown as code
    spans and string literals on one line: no path can write markup or HTML into the card."""
    source, steps, config = report["input"], report["steps"], report["config"]
    folder = PurePath(config["output_dir"]).as_posix()
    files = ", ".join(f'"{split}": {json.dumps(f"{folder}/{split}.jsonl")}' for split in SPLITS)
    training = ", ".join(p.id for p in TRAINING_PHRASINGS)
    held_out = ", ".join(p.id for p in HELD_OUT_PHRASINGS)
    counts = markdown_table(["split", "examples", "phrasings"], [
        [split, f"{steps[f'{split}_examples']:,}", f"training: {training}" if split == "train" else
         f"held out: {held_out}"] for split in SPLITS], align="lrl")
    fields = markdown_table(["column", "meaning"], [[f"`{name}`", meaning] for name, meaning in FIELDS], align="ll")
    return "\n".join([
        _yaml_header(report), "",
        "# AmazonTitles-1.3MM product questions", "",
        "Questions about product titles, each answered with the product's description: one example per product, "
        "split by product (a product is in one split only). Written by `prepare_data.py` with the splits, from "
        "their report (`prep_report.json`): not edited by hand, replaced with the splits.", "",
        "## Source", "",
        f"- file: {code_span(PurePath(source['path']).as_posix())} ({source['format']}"
        f"{', compressed' if source['compressed'] else ''}, {source['size_bytes']:,} bytes)",
        f"- blake2b (16 bytes) of its contents: `{source.get('blake2b', 'not recorded')}`",
        f"- preparation fingerprint (pipeline version {report['pipeline_version']}, settings and contents): "
        f"`{report['fingerprint']}`",
        f"- seed {config['seed']}, validation fraction {config['validation_fraction']}, test fraction "
        f"{config['test_fraction']}", "",
        "## Splits", "", *counts, "",
        "Validation and test questions use phrasings training never sees, so an evaluation measures new wordings.",
        "", "## Funnel", "", *_funnel(report), "",
        "## Fields", "", *fields, "",
        "## Loading", "",
        "```python",
        "from datasets import load_dataset",
        f"splits = load_dataset(\"json\", data_files={{{files}}})",
        "",
        "import pandas as pd",
        f"train = pd.read_json({json.dumps(f'{folder}/train.jsonl')}, lines=True)",
        "```", "",
        "## License", "",
        f"The titles and descriptions come from AmazonTitles-1.3MM of the Extreme Classification Repository "
        f"({SOURCE_LINK}), product data from Amazon. For research use only; the product texts remain Amazon's and "
        "their authors'. The questions are generated from fixed templates.", "",
    ])
