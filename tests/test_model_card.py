"""What a run leaves besides its weights: a model card written from its own report (and updated by the
evaluation), and TensorBoard event files of its losses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from conftest import cli_overrides, run_script


def test_a_run_writes_a_model_card_and_the_evaluation_adds_its_numbers(tiny_run, tiny_model_dir):
    run_dir = Path(tiny_run["run_dir"])
    report = json.loads((run_dir / "training_report.json").read_text())
    for folder, library in (("merged", "transformers"), ("adapter", "peft")):
        card = ModelCard.load(run_dir / folder / "README.md")
        assert card.data.base_model == str(tiny_model_dir) and card.data.library_name == library
        assert "lora" in card.data.tags and card.data.model_name == report["run_name"]
        for key in ("validation_loss_before", "validation_loss_after", "catalog_loss_after"):
            assert f"{report[key]:.3f}" in card.text
        assert f"{report['recall']['fine_tuned']['rougeL']:.3f}" in card.text
        assert f"{report['catalog_products']} products" in card.text
        assert "Not evaluated yet" in card.text

    settings = [*tiny_run["settings"], "eval.systems=base,fine_tuned"]
    result = run_script("test_pipeline.py", "--evaluate", "--no-progress", *cli_overrides(settings))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "device: cpu (CPU), precision: fp32" in result.stderr  # where the answers ran, said once
    evaluation = json.loads((tiny_run["root"] / "evaluation" / "evaluation_report.json").read_text())
    card = ModelCard.load(run_dir / "merged" / "README.md")
    assert "Not evaluated yet" not in card.text and card.data.base_model == str(tiny_model_dir)
    for set_name, result in evaluation["sets"].items():
        tuned = result["systems"]["fine_tuned"]["summary"]
        assert f"{set_name} products ({result['questions']} questions)" in card.text
        assert f"| fine-tuned | {tuned['rougeL']:.3f} |" in card.text


def test_a_run_writes_tensorboard_events_of_its_losses(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(tiny_run["run_dir"])
    report = json.loads((run_dir / "training_report.json").read_text())
    events = EventAccumulator(str(run_dir / "logs"))
    events.Reload()
    logged = [(event.step, event.value) for event in events.Scalars("train/loss")]
    assert [step for step, _ in logged] == [step for step, _ in report["losses"]["train"]]
    assert [value for _, value in logged] == [
        pytest.approx(loss, rel=1e-6) for _, loss in report["losses"]["train"]]
    validation = [event.value for event in events.Scalars("eval/validation_loss")]
    assert validation and validation[-1] == pytest.approx(report["losses"]["validation"][-1][1],
                                                                        rel=1e-6)


def test_a_run_older_than_model_cards_gets_none_and_is_told_why(tmp_path):
    from product_qa.answering.model_card import write_model_cards
    (tmp_path / "merged").mkdir()
    (tmp_path / "training_report.json").write_text(json.dumps({"run_name": "old", "method": "lora"}))
    (tmp_path / "config.json").write_text(json.dumps({"train": {}}))
    written, reason = write_model_cards(tmp_path)
    assert written == [] and "trained before model cards" in reason and "precision" in reason
    assert not (tmp_path / "merged" / "README.md").exists()


def test_the_card_is_never_written_through_a_link_planted_in_a_run(tiny_run, tmp_path):
    """A downloaded run is not trusted: a link at the temp file's name or in place of a run folder must not
    carry the card (text from the run's own report) onto a file outside the run."""
    import os
    import shutil

    from product_qa.answering.model_card import write_model_cards
    from product_qa.io_utils import temp_path_for
    run_dir = tmp_path / "downloaded"
    shutil.copytree(tiny_run["run_dir"], run_dir)
    victim_file, victim_dir = tmp_path / "victim.txt", tmp_path / "victim"
    victim_file.write_text("keep")
    victim_dir.mkdir()
    (victim_dir / "README.md").write_text("keep")
    temp_path_for(run_dir / "merged" / "README.md").symlink_to(victim_file)
    shutil.rmtree(run_dir / "adapter")
    os.symlink(victim_dir, run_dir / "adapter")
    written, reason = write_model_cards(run_dir)
    assert written == [run_dir / "merged" / "README.md"] and "a link, not a folder of the run" in reason
    assert ModelCard.load(written[0]).data.model_name
    assert victim_file.read_text() == "keep" and (victim_dir / "README.md").read_text() == "keep"


def test_text_from_a_run_s_files_cannot_write_html_into_the_card():
    """data.raw_path (or a downloaded run's config.json) with backticks or line breaks closed the card's code span
    and started an HTML block in README.md: every code span of data is fenced and kept on one line."""
    from markdown_it import MarkdownIt

    from product_qa.answering.model_card import REPORT_KEYS, card_text
    from product_qa.reporting import code_span
    attack = "trn`` <img src=x onerror=alert(1)>\n\n<script>alert(1)</script>\r\n```\n<b>x</b>"
    report = {key: 1 for key in REPORT_KEYS} | {
        "run_name": "run\n<script>alert(2)</script>", "method": "lora", "precision": "fp32",
        "device": "cpu\n\n<i>x</i>", "template": "plain", "early_stopping_on": "catalog"}
    settings = {"data": {"raw_path": attack}, "model": {"name": f"model{attack}"},
                "train": {"views": 2, "view_languages": f"en{attack}", "unknown_share": 0.1, "method": "lora",
                          "lora_r": 8, "lora_alpha": 16, "lora_target_modules": "q_proj", "learning_rate": 1e-3,
                          "lr_scheduler": "cosine", "batch_size": 4, "gradient_accumulation_steps": 1,
                          "system_prompt": attack}}
    for folder in ("merged", "adapter"):
        html = MarkdownIt("commonmark").render(card_text(report, settings, folder).split("\n---\n", 2)[-1])
        for tag in ("<img", "<script", "<b>", "<i>"):
            assert tag not in html, (tag, html)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text
    for text in ("a``b", "`x", "x`", "", "plain", "a\nb"):
        html = MarkdownIt("commonmark").render(f"before {code_span(text)} after")
        assert html.count("<code>") == (1 if text else 0) and "\n" not in html.strip()
