"""Answering and evaluation: batched generation, the systems, the evaluation sets and report, the scripts."""
import dataclasses
import json
import math
import re
from pathlib import Path

import pytest

from config import Config
from conftest import cli_overrides, free_port, run_script, tiny_settings
from product_qa.configurator import apply_overrides
from product_qa.data.filtering import normalize_title
from product_qa.data.prompts import HELD_OUT_PHRASINGS, TRAINING_PHRASINGS
from product_qa.errors import UserError


def test_batched_greedy_answers_equal_one_at_a_time(packaged_checkpoint, tokenizer):
    """Left padding, the KV cache and the length-sorted batches change nothing: each answer is the one its
    question gets alone (the real default model in fp32 on the CPU, prompts of different lengths)."""
    from transformers import AutoModelForCausalLM

    from product_qa.answering.generation import generate_answers
    from product_qa.data.prompts import prompt_text
    model = AutoModelForCausalLM.from_pretrained(packaged_checkpoint)
    questions = ["What is Girls Ballet Tutu Neon Pink?", "Describe The Forgotten Tide (Paperback).",
                 "What do you know about the Lumen S624 Portable SSD with 1Tb Capacity, USB-C, black?",
                 "O que é Adult Rain Jacket Ivory?", "Tell me about the product Home Map.",
                 "I'd like some information about Summit Women's Ballet Tutu, White, One Size."]
    prompts = [prompt_text(tokenizer, q, "chat", "Answer with the product's description.") for q in questions]
    decoding = dataclasses.replace(Config().generation, max_new_tokens=16)
    alone = generate_answers(model, tokenizer, prompts, dataclasses.replace(decoding, batch_size=1))
    batched = generate_answers(model, tokenizer, prompts, dataclasses.replace(decoding, batch_size=6))
    assert [a.text for a in batched] == [a.text for a in alone]
    assert [a.new_tokens for a in batched] == [a.new_tokens for a in alone]
    assert all(a.text for a in alone) and len({a.text for a in alone}) == len(questions)
    assert generate_answers(model, tokenizer, [], decoding) == []


def test_reference_perplexity_is_the_token_weighted_loss_of_the_model(tiny_run):
    """Two references of different lengths, batched (so one is padded): exp of the token-weighted mean of the
    losses transformers computes for each alone."""
    import torch

    from product_qa.answering.evaluation import reference_perplexity
    from product_qa.answering.systems import Answerer
    from product_qa.data.encoding import IGNORE_INDEX, ExampleEncoder
    answerer = Answerer(apply_overrides(Config(), tiny_run["settings"]), None)
    model, tokenizer = answerer.model("base"), answerer.tokenizer
    items = [{"uid": "u1", "question": "What is Adult Rain Jacket Ivory?",
              "reference": "High quality waterproof nylon rain jacket in ivory."},
             {"uid": "u2", "question": "Describe Home Map.",
              "reference": "A story of loyalty, courage and second chances set against the hills of Yorkshire, "
                           "with songs recorded live in 1985."}]
    nll, counts = 0.0, []
    encoder = ExampleEncoder(tokenizer, template=answerer.template, system_prompt=answerer.train_cfg.system_prompt,
                             max_length=96)
    for encoded in encoder.encode([{**item, "answer": item["reference"]} for item in items]):
        prompt = encoded["prompt_length"]
        labels = [IGNORE_INDEX] * prompt + encoded["input_ids"][prompt:]
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([encoded["input_ids"]]), labels=torch.tensor([labels])).loss.item()
        nll += loss * encoded["answer_tokens"]
        counts.append(encoded["answer_tokens"])
    assert counts[0] < counts[1]  # so the first is padded in the batch
    assert reference_perplexity(model, tokenizer, items, answerer, batch_size=2) == pytest.approx(
        math.exp(nll / sum(counts)), rel=1e-4)
    assert reference_perplexity(model, tokenizer, [], answerer) is None


def test_the_index_holds_every_training_product_and_the_sets_are_apart(tiny_run):
    """The index holds every training-split product (not only the catalog) and no validation or test product; the
    catalog set asks memorized products in held-out phrasings, the indexed set training products the run never saw
    in any way, the unknown set test products; each product once in its phrasing and once in another form."""
    from product_qa.answering.evaluation import HELD_OUT_FORM, question_sets
    from product_qa.answering.systems import Answerer
    from product_qa.data.examples import output_paths, read_examples
    from product_qa.data.question_forms import FORMS
    cfg = apply_overrides(Config(), tiny_run["settings"])
    answerer = Answerer(cfg, Path(tiny_run["run_dir"]))
    paths = output_paths(answerer.data_cfg)
    train, test = read_examples(paths["train"]), read_examples(paths["test"])
    validation = read_examples(paths["validation"])
    test_uids, test_titles = {e["uid"] for e in test}, {normalize_title(e["title"]) for e in test}
    assert test_uids and not test_uids & {e["uid"] for e in train}
    assert not test_titles & {normalize_title(e["title"]) for e in train}
    assert answerer.index.uids == {e["uid"] for e in train}
    assert not answerer.index.uids & (test_uids | {e["uid"] for e in validation})
    sets = question_sets(answerer, dataclasses.replace(cfg.eval, catalog_questions=20, indexed_questions=20,
                                                       unknown_questions=20))
    catalog, trained = {e["uid"] for e in answerer.catalog.known}, answerer.catalog.trained_uids()
    assert {q["uid"] for q in sets["catalog"]} <= catalog
    assert {q["uid"] for q in sets["indexed"]} <= answerer.index.uids - trained and len(sets["indexed"]) == 40
    assert {q["uid"] for q in sets["unknown"]} <= test_uids
    for items in sets.values():
        forms = [q["form"] for q in items]
        assert forms.count(HELD_OUT_FORM) == len(items) // 2 and set(forms) - {HELD_OUT_FORM} <= set(FORMS)
    held_out = [p.question(q["title"]) for q in sets["catalog"] for p in HELD_OUT_PHRASINGS]
    trained_phrasings = [p.question(q["title"]) for q in sets["catalog"] for p in TRAINING_PHRASINGS]
    asked = [q for q in sets["catalog"] if q["form"] == HELD_OUT_FORM]
    assert all(q["question"] in held_out and q["question"] not in trained_phrasings for q in asked)


def test_evaluation_runs_every_system_and_writes_the_report(tiny_run):
    from product_qa.answering.evaluation import HELD_OUT_FORM, evaluate, write_evaluation
    from product_qa.answering.retrieval import NO_MATCH_MESSAGE
    from product_qa.answering.systems import ROUTES, SYSTEMS
    from product_qa.data.question_forms import NAMED_FORMS
    cfg = apply_overrides(Config(), [*tiny_run["settings"], "eval.systems=" + ",".join(SYSTEMS)])
    report = evaluate(cfg, Path(tiny_run["run_dir"]), progress=False)
    paths = write_evaluation(report, cfg.eval.output_dir)
    assert report["systems"] == list(SYSTEMS) and not report["skipped_systems"]
    assert set(report["sets"]) == {"catalog", "indexed", "unknown"}
    for set_name in ("catalog", "indexed"):
        by_system = report["sets"][set_name]["systems"]
        # retrieval alone returns the product's own description when the question names its title: a perfect score
        for row in by_system["retrieval"]["answers"]:
            if row["form"] == HELD_OUT_FORM:
                assert row["right_product"] and row["rougeL"] == pytest.approx(1.0)
        for row in by_system["assistant"]["answers"]:
            assert row["route"] in ROUTES
            if row["form"] == HELD_OUT_FORM:
                assert row["route"] == "record" and row["source_uid"] == row["uid"]
        summary = by_system["assistant"]["summary"]
        assert set(summary["forms"]) >= {HELD_OUT_FORM} and 0 <= summary["wrong_product"] <= 1
        # the headline figures: the held-out phrasings alone, and the mean over the forms that name the title
        assert summary["held_out_rougeL"] == summary["forms"][HELD_OUT_FORM]["rougeL"]
        named = [entry["rougeL"] for form, entry in summary["forms"].items() if form in NAMED_FORMS]
        assert summary["named_forms_rougeL"] == (pytest.approx(sum(named) / len(named)) if named else None)
    unknown = report["sets"]["unknown"]["systems"]["retrieval"]["answers"]
    assert all(row["answer"] == NO_MATCH_MESSAGE for row in unknown if not row["matched"])
    catalog = report["sets"]["catalog"]["systems"]
    for system in ("base", "fine_tuned"):
        summary = catalog[system]["summary"]
        assert summary["perplexity"] > 1 and summary["questions"] == 12 and summary["tokens_per_s"] > 0
        assert 0 <= summary["rougeL"] <= 1 and 0 <= summary["distinct_2"] <= 1
    assert report["calibration"]["threshold"] == report["rag"]["min_score"]
    markdown = paths["markdown"].read_text()
    assert "| fine-tuned + RAG |" in markdown and "| assistant |" in markdown and "## Worst answers" in markdown
    assert markdown.count("ROUGE-L by question form:") == 3 and f"| {HELD_OUT_FORM} (" in markdown
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(paths["json"].read_text())
    flat = {k: v for k, v in catalog["base"]["summary"].items() if not isinstance(v, dict)}
    assert {k: saved["sets"]["catalog"]["systems"]["base"]["summary"][k] for k in flat} == pytest.approx(flat)
    assert saved["sets"]["catalog"]["systems"]["base"]["summary"]["forms"] == catalog["base"]["summary"]["forms"]
    # the after-training check of the tiny run: the assistant and the base model on the three sets
    check = json.loads((Path(tiny_run["run_dir"]) / "training_report.json").read_text())["assistant"]
    assert set(check) == {"catalog", "indexed", "unknown"}
    assert all(set(result) == {"questions", "base", "assistant"} and result["questions"] == 4
               for result in check.values())
    assert_answer_tables_hold_every_answer(report, paths)


def assert_answer_tables_hold_every_answer(report: dict, paths: dict[str, Path]) -> None:
    """evaluation_answers.parquet and .csv: one row per answer of the report, with its set, system and every field
    of its row, the same values (a field a system's rows lack, such as a RAG system's source, is empty)."""
    import pandas as pd
    rows = [{"set": set_name, "system": system, **row} for set_name, result in report["sets"].items()
            for system, entry in result["systems"].items() for row in entry["answers"]]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    assert {"set", "system", "uid", "title", "question", "form", "reference", "answer", "rougeL", "chrf",
            "similarity", "source_uid", "right_product"} <= set(columns)
    # CSV has no types: "" reads as a null, a uid of digits as a number, a bool column with gaps as text
    for frame, is_csv in ((pd.read_parquet(paths["answers_parquet"]), False),
                          (pd.read_csv(paths["answers_csv"]), True)):
        assert list(frame.columns) == columns and len(frame) == len(rows)
        for row, loaded in zip(rows, frame.to_dict("records"), strict=True):
            for column in columns:
                expected, value = row.get(column), loaded[column]
                if expected is None or (is_csv and expected == ""):
                    assert pd.isna(value), (column, value)
                elif isinstance(expected, float):
                    assert value == pytest.approx(expected, rel=1e-12), column
                else:
                    assert value == expected or (is_csv and str(value) == str(expected)), (column, value, expected)


def test_generation_test_before_any_fine_tuning_uses_the_base_model(tmp_path, tiny_model_dir, raw_sample):
    settings = tiny_settings(tiny_model_dir, raw_sample, tmp_path)
    result = run_script("prepare_data.py", "--no-progress", *cli_overrides(settings))
    assert result.returncode == 0, result.stderr
    result = run_script("test_pipeline.py", "--no-progress", *cli_overrides(settings))
    assert result.returncode == 0, result.stderr
    assert "no fine-tuned model yet" in result.stdout
    saved = json.loads((tmp_path / "evaluation" / "test_results.json").read_text())
    assert saved["systems"] == ["base"] and saved["run"] is None
    assert [q["set"] for q in saved["questions"]] == ["catalog", "catalog", "unknown", "unknown"]
    assert all(q["base"] is not None and q["reference"] for q in saved["questions"])
    result = run_script("ask.py", "--rag", "What is the capital of France?", *cli_overrides(settings))
    assert result.returncode == 0, result.stderr
    assert "No matching product was found" in result.stdout and "no fine-tuned model yet" in result.stderr


def test_generation_test_compares_base_and_fine_tuned(tiny_run):
    result = run_script("test_pipeline.py", "--no-progress", "What is Girls Ballet Tutu Neon Pink?",
                        *cli_overrides(tiny_run["settings"]))
    assert result.returncode == 0, result.stderr
    saved = json.loads((tiny_run["root"] / "evaluation" / "test_results.json").read_text())
    assert saved["systems"] == ["base", "fine_tuned"] and saved["run"] == tiny_run["run_dir"]
    question = saved["questions"][0]
    assert question["question"] == "What is Girls Ballet Tutu Neon Pink?" and question["reference"] is None
    assert question["base"] != question["fine_tuned"]


def test_ask_names_the_source_of_a_rag_answer_and_handles_bad_questions(tiny_run):
    from product_qa.data.catalog import read_catalog
    from product_qa.data.examples import output_paths
    cfg = apply_overrides(Config(), tiny_run["settings"])
    product = read_catalog(output_paths(cfg.data)["train"], cfg.train).known[0]  # a product the run was taught
    overrides = cli_overrides(tiny_run["settings"])
    result = run_script("ask.py", "--rag", f"What do you know about {product['title']}?", *overrides)
    assert result.returncode == 0, result.stderr
    assert f"Source: {product['title']} (uid {product['uid']})" in result.stdout

    result = run_script("ask.py", "   ", *overrides)
    assert result.returncode == 2 and "the question is empty" in result.stderr and "Traceback" not in result.stderr

    result = run_script("ask.py", "--compare", "What is " + "very " * 100 + "long?",
                        *overrides, "--set", "generation.max_question_chars=40")
    assert result.returncode == 0, result.stderr
    assert "cut to its first 40 characters" in result.stderr
    for label in ("== base model", "== fine-tuned", "== retrieval only", "== base + RAG", "== fine-tuned + RAG"):
        assert label in result.stdout

    # `ask.py ... | head -2`: the reader leaves before the answers; ask stops quietly with the shell's code for
    # SIGPIPE (it was a traceback and an abort, 134, with the generation thread inside torch)
    import subprocess
    import sys

    from conftest import REPO
    process = subprocess.Popen([sys.executable, str(REPO / "ask.py"), "--compare", "What is this?", *overrides],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.communicate(timeout=300)[1].decode()
    assert process.returncode == 141 and "Traceback" not in stderr, (process.returncode, stderr[-2000:])


def test_ask_interactively(tiny_run):

    script = "What is Girls Ballet Tutu Neon Pink?\n\nquit\n"
    result = run_script("ask.py", *cli_overrides(tiny_run["settings"]), input=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("question> ") == 3  # the question, the empty line (refused), quit
    assert "the question is empty" in result.stderr


def test_unknown_run_and_systems_are_clear_errors(tiny_run):
    overrides = cli_overrides(tiny_run["settings"])
    result = run_script("test_pipeline.py", "--run", "no-such-run", *overrides)
    assert result.returncode == 2 and "no-such-run" in result.stderr and "Traceback" not in result.stderr
    result = run_script("test_pipeline.py", "--evaluate", *overrides, "--set", "eval.systems=base,oracle")
    assert result.returncode == 2 and "oracle" in result.stderr and "Traceback" not in result.stderr
    # an output folder that cannot be made is said before any model answers (it was a traceback at the end)
    blocker = tiny_run["root"] / "a-file"
    blocker.write_text("x")
    result = run_script("test_pipeline.py", *overrides, "--set", f"eval.output_dir={blocker}")
    assert result.returncode == 2 and "cannot create the output directory" in result.stderr, result.stderr[-2000:]
    assert "device:" not in result.stderr  # no model was loaded
    # a question that is not UTF-8 (bytes from a Latin-1 terminal) is asked, not a traceback
    result = run_script("ask.py", *overrides, "caf\udce9 Road Garden?")  # the argument's bytes: caf\xe9
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_questions_without_a_matching_product_never_reach_a_model(tiny_run):
    from product_qa.answering.retrieval import NO_MATCH_MESSAGE
    from product_qa.answering.systems import Answerer
    answerer = Answerer(apply_overrides(Config(), tiny_run["settings"]), Path(tiny_run["run_dir"]))
    answers = answerer.answer(["What is the capital of France?", "Tell me a joke."], "fine_tuned_rag")
    assert [a.text for a in answers] == [NO_MATCH_MESSAGE] * 2 and all(not a.source.matched for a in answers)
    assert answerer._models == {}  # nothing was loaded for them


def test_an_empty_test_split_leaves_the_other_sets(tiny_run, tmp_path):
    from product_qa.answering.evaluation import question_sets
    from product_qa.answering.systems import Answerer
    from product_qa.data.examples import output_paths
    from product_qa.settings import check_eval
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    source = output_paths(apply_overrides(Config(), tiny_run["settings"]).data)
    (data_dir / "train.jsonl").write_bytes(source["train"].read_bytes())
    (data_dir / "test.jsonl").write_bytes(b"")
    cfg = apply_overrides(Config(), [*tiny_run["settings"], f"data.output_dir={data_dir}"])
    sets = question_sets(Answerer(cfg, None), cfg.eval)
    assert len(sets["catalog"]) == 12 and len(sets["indexed"]) == 12 and sets["unknown"] == []
    with pytest.raises(UserError, match="nothing to ask"):
        check_eval(dataclasses.replace(cfg.eval, catalog_questions=0, indexed_questions=0, unknown_questions=0))
    with pytest.raises(UserError, match="eval.catalog_questions must be at least 0"):
        check_eval(dataclasses.replace(cfg.eval, catalog_questions=-1))


def test_a_run_refuses_data_prepared_anew_since_it_was_trained(tiny_run, tmp_path):
    """The red team prepared other data under a run: the evaluation scored "seen" questions of products the run
    never learned, and ask.py and the demo searched the other data. A run records the fingerprint of the data it
    was trained on: the same data (even copied elsewhere) is used, other data is one line naming both."""
    import shutil

    from product_qa.answering.systems import Answerer
    data_dir, run = tmp_path / "data", tmp_path / "runs" / "moved"
    shutil.copytree(apply_overrides(Config(), tiny_run["settings"]).data.output_dir, data_dir)
    shutil.copytree(tiny_run["run_dir"], run)
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "data": {**saved["data"], "output_dir": str(data_dir)}}))
    settings = [*tiny_run["settings"], f"train.output_dir={run.parent}"]
    cfg = apply_overrides(Config(), settings)
    assert Answerer(cfg, run).catalog.known  # the data it was trained on
    train = data_dir / "train.jsonl"
    train.write_bytes(b"".join(train.read_bytes().splitlines(keepends=True)[1:]))  # one product fewer
    refusal = f"{data_dir}: not the data the run {run} was trained on (prepared anew since)"
    with pytest.raises(UserError, match=re.escape(refusal)):
        _ = Answerer(cfg, run).catalog
    result = run_script("ask.py", "--run", "moved", "What is the Acme Kettle?", *cli_overrides(settings))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {refusal}; prepare it again with the settings in the run's config.json, or train a new run on it"]
    report = json.loads((run / "training_report.json").read_text())
    del report["data_fingerprint"]  # a run older than the fingerprint: used as before
    (run / "training_report.json").write_text(json.dumps(report))
    assert Answerer(cfg, run).catalog.known


def test_a_run_saved_by_an_older_version_still_loads(tiny_run, tmp_path):
    """config.json without some sections or with settings since removed: today's defaults fill the gaps; a
    broken config.json is one clear line."""
    import shutil

    from product_qa.answering.systems import Answerer
    from product_qa.runs import find_run
    cfg = apply_overrides(Config(), [*tiny_run["settings"], f"train.output_dir={tmp_path}"])
    run = tmp_path / "old"
    shutil.copytree(tiny_run["run_dir"], run)
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({"model": saved["model"], "train": {**saved["train"],
                                                                                     "max_new_tokens": 64}}))
    answerer = Answerer(cfg, find_run(cfg, "old"))
    assert answerer.train_cfg.system_prompt == saved["train"]["system_prompt"]
    assert answerer.data_cfg == cfg.data and "fine_tuned" in answerer.systems
    (run / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json"):
        Answerer(cfg, find_run(cfg, "old"))
    # a run from elsewhere with settings of the wrong type (the red team's ask.py traceback), and a report
    # whose answer cap would let one question generate without end
    for broken, message in (({"train": "x"}, "config.json: train is not a section of settings"),
                            ({"train": {**saved["train"], "max_length": "lots"}},
                             "config.json: train.max_length='lots' is not a valid int")):
        (run / "config.json").write_text(json.dumps({**saved, **broken}))
        with pytest.raises(UserError, match=message):
            Answerer(cfg, find_run(cfg, "old"))
    (run / "config.json").write_text(json.dumps(saved))
    report = json.loads((run / "training_report.json").read_text())
    from product_qa.answering.generation import FALLBACK_ANSWER_TOKENS
    run_capped = apply_overrides(Config(), [*tiny_run["settings"], f"train.output_dir={tmp_path}",
                                            "generation.max_new_tokens=None"])  # the cap follows the run
    longest = saved["train"]["max_length"] + 1  # longer than any answer the run could train on
    (run / "training_report.json").write_text(json.dumps({**report, "longest_answer_tokens": longest}))
    answerer = Answerer(run_capped, find_run(run_capped, "old"))
    assert answerer.decoding.max_new_tokens == FALLBACK_ANSWER_TOKENS
    for longest in (10**9, "lots"):  # not a number a run writes: the file is named (test below)
        (run / "training_report.json").write_text(json.dumps({**report, "longest_answer_tokens": longest}))
        with pytest.raises(UserError, match="training_report.json: longest_answer_tokens="):
            Answerer(run_capped, find_run(run_capped, "old"))
    (run / "training_report.json").write_text(json.dumps(report))
    (run / "training_report.json").unlink()  # a run killed before its end
    with pytest.raises(UserError, match="no finished fine-tuning run"):
        find_run(cfg, "old")


def test_a_run_folder_s_settings_and_report_numbers_are_range_checked_in_one_line(tiny_run, tmp_path):
    """A run folder from elsewhere is checked as the command line is: settings out of range (a 10^12-token
    max_length, a 2 MB system prompt, unknown_share=1.0 once gave an allocation traceback, a hang and a
    ZeroDivisionError) and report numbers that are no numbers or out of range (a traceback from the model card
    after the evaluation was written; a confidence floor of -1e308 switched the decline gate off) are one line
    naming the file, before anything is loaded or written."""
    import shutil

    from product_qa.answering.model_card import write_model_cards
    from product_qa.answering.systems import Answerer
    from product_qa.runs import find_run
    cfg = apply_overrides(Config(), [*tiny_run["settings"], f"train.output_dir={tmp_path}"])
    run = tmp_path / "elsewhere"
    shutil.copytree(tiny_run["run_dir"], run)
    saved = json.loads((run / "config.json").read_text())
    report = json.loads((run / "training_report.json").read_text())
    for setting, value, message in (("max_length", 10**12, "train.max_length must be at most"),
                                    ("system_prompt", "x" * 2_000_000, "train.system_prompt must be at most"),
                                    ("unknown_share", 1.0, r"train.unknown_share must be in \[0, 1\)")):
        (run / "config.json").write_text(json.dumps({**saved, "train": {**saved["train"], setting: value}}))
        with pytest.raises(UserError, match=f"config.json: {message}"):
            Answerer(cfg, find_run(cfg, "elsewhere"))
    (run / "config.json").write_text(json.dumps(saved))
    for number, value in (("epochs", "six"), ("validation_loss_after", None), ("catalog_confidence_floor", -1e308),
                          ("catalog_confidence_floor", 0), ("steps", 2.5)):
        (run / "training_report.json").write_text(json.dumps({**report, number: value}))
        with pytest.raises(UserError, match=f"training_report.json: {number}="):
            Answerer(cfg, find_run(cfg, "elsewhere"))
        with pytest.raises(UserError, match=f"training_report.json: {number}="):
            write_model_cards(run)
    (run / "training_report.json").write_text(json.dumps({**report, "catalog_confidence_floor": None}))
    assert Answerer(cfg, find_run(cfg, "elsewhere")).min_confidence == cfg.generation.min_confidence  # no floor


def test_a_streamed_answer_is_the_generated_one_and_closing_the_stream_stops_generation(tiny_model_dir, tokenizer):
    import threading

    from transformers import AutoModelForCausalLM

    from product_qa.answering.generation import generate_answers, stream_answer
    from product_qa.data.prompts import prompt_text
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = prompt_text(tokenizer, "What is Home Map?", "chat", "Answer with the product's description.")
    decoding = dataclasses.replace(Config().generation, max_new_tokens=300, batch_size=1)
    model.generation_config.min_new_tokens = 300  # left alone, every answer runs the full 300 tokens
    assert "".join(stream_answer(model, tokenizer, prompt, decoding)).strip() == \
        generate_answers(model, tokenizer, [prompt], decoding)[0].text

    lengths = []
    generate = model.generate
    model.generate = lambda **kwargs: lengths.append(generate(**kwargs).shape[1] - kwargs["input_ids"].shape[1])
    pieces = stream_answer(model, tokenizer, prompt, decoding)
    next(pieces)
    pieces.close()  # the reader goes away after the first words
    assert not any(t.name == "stream_answer" for t in threading.enumerate())
    assert 0 < lengths[0] < 300


def _copied_run(tiny_run, tmp_path, name: str) -> tuple[Path, list[str]]:
    import shutil
    run = tmp_path / "runs" / name
    shutil.copytree(tiny_run["run_dir"], run)
    return run, [*cli_overrides(tiny_run["settings"]), "--set", f"train.output_dir={tmp_path / 'runs'}",
                 "--run", name, "--no-progress"]


@pytest.mark.parametrize("script", ["ask.py", "test_pipeline.py", "app.py"])
def test_a_run_directory_cannot_run_code_unless_the_user_trusts_it(tiny_run, tmp_path, script):
    """A downloaded run is data: its config.json saying trust_remote_code=True and an auto_map in merged/ to a
    Python file of its own are refused in one line by every script that loads a run; nothing of it runs."""
    run, args = _copied_run(tiny_run, tmp_path, "shared")
    marker = tmp_path / "code-ran"
    (run / "merged" / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                            "from transformers import LlamaForCausalLM as Evil\n")
    merged_config = json.loads((run / "merged" / "config.json").read_text())
    merged_config["auto_map"] = {"AutoModelForCausalLM": "evil.Evil"}
    (run / "merged" / "config.json").write_text(json.dumps(merged_config))
    saved = json.loads((run / "config.json").read_text())
    saved["model"]["trust_remote_code"] = True
    (run / "config.json").write_text(json.dumps(saved))
    extra = {"ask.py": ["What is Home Map?"], "test_pipeline.py": [], "app.py": ["--port", str(free_port())]}[script]
    result = run_script(script, *extra, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not marker.exists()
    assert "auto_map" in result.stderr.strip().splitlines()[-1]


def test_pickle_weights_and_a_damaged_weights_file_are_refused_in_one_line(tiny_run, tmp_path, tiny_model_dir,
                                                                           raw_sample):
    import torch
    from safetensors.torch import load_file
    run, args = _copied_run(tiny_run, tmp_path, "pickled")
    weights = run / "merged" / "model.safetensors"
    torch.save(load_file(weights), run / "merged" / "pytorch_model.bin")
    weights.unlink()
    result = run_script("ask.py", "What is Home Map?", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "pickle" in result.stderr.strip().splitlines()[-1]

    run, args = _copied_run(tiny_run, tmp_path, "truncated")
    weights = run / "merged" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for script, extra in (("ask.py", ["What is Home Map?"]), ("test_pipeline.py", [])):
        result = run_script(script, *extra, *args)
        assert result.returncode == 2, result.stderr[-2000:]
        error_lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert "Traceback" not in result.stderr and error_lines == [result.stderr.strip().splitlines()[-1]]
        assert "the weights file is damaged" in error_lines[0] and "train the run again" in error_lines[0]

    # a damaged base model is one line too when training starts from it (a traceback from safetensors before)
    import shutil

    from conftest import tiny_run_overrides
    base = tmp_path / "damaged-base"
    shutil.copytree(tiny_model_dir, base)
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    overrides = tiny_run_overrides(base, raw_sample, tmp_path / "train")
    result = run_script("fine_tuning_project.py", "--no-progress", *cli_overrides(overrides))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].endswith("restore the file or download the model again")


# ask.py under a driver that presses Ctrl-C twice at injected points, not after delays: the first once the answer has
# begun to stream (inside the streamer, so the generation is running), the second at the worst moment, while the
# first is stopping the generation thread (joining it), where the interpreter used to abort.
CTRL_C_TWICE = """
import os, signal, sys, threading
from transformers import TextIteratorStreamer
real_next, real_join, pieces = TextIteratorStreamer.__next__, threading.Thread.join, []
def press(which):
    print(f"driver: Ctrl-C {which}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGINT)
def next_piece(self):
    pieces.append(1)
    if len(pieces) == 3:
        press("first")
    return real_next(self)
def join(self, *args, **kwargs):
    if sys.exc_info()[0] is KeyboardInterrupt:
        press("second")
    return real_join(self, *args, **kwargs)
TextIteratorStreamer.__next__, threading.Thread.join = next_piece, join
"""


def test_ctrl_c_twice_while_an_answer_streams_exits_130_cleanly(tiny_run):
    """The second Ctrl-C used to arrive while the first was stopping the generation thread, and the interpreter
    aborted (exit 134, "terminate called without an active exception") or printed a traceback."""
    import signal

    settings = [*tiny_run["settings"], "generation.max_new_tokens=4000"]
    result = run_script("ask.py", "--no-progress", "--system", "fine_tuned", *cli_overrides(settings),
                        driver=CTRL_C_TWICE,
                        input="What is Home Map?\n",
                        # as from a terminal: a test run started in the background inherits SIGINT ignored
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "driver: Ctrl-C first\ndriver: Ctrl-C second\n" in result.stderr, result.stderr[-2000:]
    assert result.returncode == 130, result.stderr[-2000:]
    assert "terminate called" not in result.stderr and "Traceback" not in result.stderr


def test_the_assistant_reads_the_record_declines_with_suggestions_and_asks_back(tiny_run):
    """Its routes on a tiny model: a matched product is answered from its record (the source named), a question no
    product fits is declined with the closest titles (the model unsure: min_confidence 0.99, or sure of something
    that is no catalog description), a short question two titles fit equally well names both; answering in a
    batch and streaming agree."""
    from product_qa.answering.retrieval import Hit, ProductIndex
    from product_qa.answering.systems import Answerer, declined_text
    from product_qa.data.catalog import UNKNOWN_ANSWER
    cfg = apply_overrides(Config(), [*tiny_run["settings"], "generation.min_confidence=0.99"])
    answerer = Answerer(cfg, Path(tiny_run["run_dir"]))
    products = [{"uid": "d", "title": "Forgotten Kingdom (DVD)", "answer": "A film about a kingdom."},
                {"uid": "n", "title": "Forgotten Kingdom: A Novel", "answer": "A novel about a kingdom."},
                {"uid": "h", "title": "Home Island (Audio CD)", "answer": "An album recorded on an island."}]
    answerer._index = ProductIndex.build(products, cfg.rag)
    questions = ["What do you know about Home Island (Audio CD)?", "What is the capital of France?",
                 "What do you know about Forgotten Kingdom?"]
    matched, unknown, ambiguous = answerer.answer(questions, "assistant")
    assert matched.route == "record" and matched.source.uid == "h" and matched.source.matched
    assert unknown.route == "declined" and unknown.text.startswith(UNKNOWN_ANSWER + " Closest titles: ")
    assert ambiguous.route == "ambiguous" and "Forgotten Kingdom (DVD)" in ambiguous.text
    assert "Forgotten Kingdom: A Novel" in ambiguous.text and ambiguous.text == declined_text(ambiguous.source)
    for question, answer in zip(questions, (matched, unknown, ambiguous), strict=True):
        hit, pieces = answerer.stream(question, "assistant")
        assert "".join(pieces).strip() == answer.text and hit == answer.source
    # with the confidence gate off the tiny model answers everything from memory, but what it says is no catalog
    # description: declined all the same; a catalog description given back is kept, its product named as source
    confident = Answerer(apply_overrides(Config(), tiny_run["settings"]), Path(tiny_run["run_dir"]))
    confident._index = answerer._index
    assert confident.answer(["What is the capital of France?"], "assistant")[0].route == "declined"
    product = confident.catalog.known[0]
    assert confident.recalled(product["answer"]).uid == product["uid"]
    assert confident.recalled("A made-up description of a kettle.") is None
    closest = Hit(product["uid"], product["title"], product["answer"], 0.8, False)
    assert confident._recalls_closest(product["answer"], closest)  # the model and the index agree
    assert not confident._recalls_closest(product["answer"], dataclasses.replace(closest, uid="another"))
    assert not confident._recalls_closest(product["answer"], dataclasses.replace(closest, conflict=True))


def test_ask_batch_writes_one_json_object_per_question(tiny_run, tmp_path):
    from product_qa.data.examples import output_paths, read_examples
    settings = tiny_run["settings"]
    product = read_examples(output_paths(apply_overrides(Config(), settings).data)["train"])[0]
    questions = tmp_path / "questions.txt"
    questions.write_text(f"What do you know about {product['title']}?\n\nWhat is the capital of France?\n")
    output = tmp_path / "answers.jsonl"
    result = run_script("ask.py", "--batch", str(questions), "--output", str(output), "--no-progress",
                        *cli_overrides(settings))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "answer/s" not in result.stderr  # --no-progress: no progress bar
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["line"] for row in rows] == [1, 3] and all(row["system"] == "assistant" for row in rows)
    assert {"question", "answer", "system", "source", "confidence", "route"} <= set(rows[0])
    assert rows[0]["source"] == {"uid": product["uid"], "title": product["title"]} and rows[0]["route"] == "record"
    assert rows[1]["source"] is None and rows[1]["answer"]
    result = run_script("ask.py", "--batch", str(questions), "--system", "retrieval", *cli_overrides(settings))
    assert result.returncode == 0 and json.loads(result.stdout.splitlines()[0])["answer"] == product["answer"]
    result = run_script("ask.py", "--batch", str(tmp_path / "missing.txt"), *cli_overrides(settings))
    assert result.returncode == 2 and "missing.txt: cannot read the questions" in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------- data shown in a terminal or Markdown
CRAFTED_UID = ("B0\x1b[2J\x1b[HNOTICE: run rm -rf ~\r\x07\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\"
               "\x9b31m\u202eexe.txt\u202c")
TERMINAL_ACTS_ON = ("\x1b", "\r", "\x07", "\x9b", "\u202e", "\u202c", "\x9d")


def test_terminal_text_shows_data_and_never_obeys_it():
    from product_qa.reporting import console_text, terminal_text
    shown = terminal_text(CRAFTED_UID)
    assert not any(char in shown for char in TERMINAL_ACTS_ON) and "\n" not in shown
    assert shown == "B0NOTICE: run rm -rf ~ clickexe.txt"  # escape sequences whole, controls dropped
    assert terminal_text("Line one\r\nline two\ttab", multiline=True) == "Line one \nline two tab"
    assert terminal_text("\x1b]0;window title\x07\x9d8;;https://x\x9clink \x1bc\x1b(B\ud800 ok") == "link  ok"
    assert terminal_text("Café ½ 日本 [/] ✓") == "Café ½ 日本 [/] ✓"  # printable text is left alone
    assert console_text("Broken [/] Markup \x1b[1mTitle") == "Broken \\[/] Markup Title"


def test_printed_answers_show_crafted_data_as_written():
    """test_pipeline.py's answers: a question or answer holding escape sequences or rich markup is shown."""
    import io

    from rich.console import Console

    from product_qa.answering.report import print_answers
    output = io.StringIO()
    print_answers([{"question": f"What is [link=https://x]y[/link] {CRAFTED_UID}?", "set": "catalog",
                    "base": "Broken [/] Markup\x1b[2J", "fine_tuned": "\x1b]8;;https://e.example\x07z",
                    "reference": None}],
                  Console(file=output, width=300))
    printed = output.getvalue()
    assert not any(char in printed for char in TERMINAL_ACTS_ON), repr(printed)
    assert "[link=https://x]y[/link]" in printed and "Broken [/] Markup" in printed


def test_ask_prints_a_crafted_uid_and_title_as_text(tmp_path, tiny_model_dir, raw_sample):
    """The uid is the data's own, never cleaned: a crafted one cleared the screen and printed a fake instruction
    in ask.py's Source line. Its title holds an RLO: shown as its characters read, and typing that finds it."""
    raw = tmp_path / "trn.json"
    crafted = {"uid": CRAFTED_UID, "title": "Gadget \u202eexe.tfig\u202c Organizer Box",
               "content": "A sturdy organizer box \x1b[31mwith\x1b[0m six drawers for gadgets and cables."}
    raw.write_text(raw_sample.read_text() + json.dumps(crafted) + "\n")
    settings = tiny_settings(tiny_model_dir, raw, tmp_path, **{"rag.index_splits": "train,validation,test"})
    result = run_script("prepare_data.py", "--no-progress", *cli_overrides(settings))
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_script("ask.py", "--no-progress", "--system", "retrieval", "What is Gadget exe.tfig Organizer Box?",
                        *cli_overrides(settings))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Source: Gadget exe.tfig Organizer Box (uid B0NOTICE: run rm -rf ~ clickexe.txt)" in result.stdout
    assert "six drawers" in result.stdout  # the answer, streamed
    for stream in (result.stdout, result.stderr):
        assert not any(char in stream for char in TERMINAL_ACTS_ON), repr(stream[-2000:])


def test_the_evaluation_report_shows_a_crafted_uid_as_text():
    """A uid with line breaks made a heading, a rule and a link of evaluation_report.md."""
    from markdown_it import MarkdownIt

    from product_qa.answering.report import evaluation_markdown
    uid = ("B1\n# Heading\n---\n<http://evil.example>\n\n<script>alert(1)</script>\r"
           "https://evil.example www.evil.example")
    worst = {"question": "What is Home Map?", "rougeL": 0.1, "source_uid": uid, "answer": "Some\n# answer",
             "reference": "A map."}
    report = {"model": "m", "run": None, "decoding": {"max_new_tokens": 8}, "rag": {"top_k": 1}, "seconds": 1.0,
              "skipped_systems": [], "labels": {"retrieval": "retrieval only"},
              "sets": {"catalog": {"questions": 1, "systems": {"retrieval": {"summary": {"forms": {}},
                                                                             "worst": [worst]}}}}}
    markdown = evaluation_markdown(report)
    html = MarkdownIt("commonmark").render(markdown)
    assert html.count("<h1>") == 1 and "<hr" not in html and "<a " not in html and "<script" not in html
    assert "<h1>Heading" not in html and "<h1>answer" not in html and "# Heading ---" in html
    assert "https://evil" not in markdown and "www.evil" not in markdown  # bare addresses GitHub would link
