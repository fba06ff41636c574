"""The fine-tuning stage: masking, truncation, batching, precision, errors, resume, multi-process, the packaged
model. Tiny models built from a config with the real SmolLM2 tokenizer; no network."""
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from config import Config
from conftest import REPO, run_script, tiny_run_overrides, write_jsonl
from product_qa.configurator import apply_overrides
from product_qa.data.encoding import IGNORE_INDEX, AnswerOnlyCollator, ExampleEncoder
from product_qa.data.prompts import resolve_template
from product_qa.errors import UserError
from product_qa.runs import unfinished_run_dir
from product_qa.training.trainer import latest_checkpoint, prepare_run_dir

EXAMPLE = {"uid": "B1", "question": "What is Acme Kettle Model 4?",
           "answer": "A stainless steel kettle that holds two litres and boils fast."}
CHAT = {"template": "chat", "system_prompt": "Answer with the product's description."}


def encode_example(tokenizer, example: dict, **settings) -> dict:
    """One example as training encodes it, with the labels the collator gives it."""
    encoded = ExampleEncoder(tokenizer, **settings).encode([example])[0]
    return {**encoded, "labels": AnswerOnlyCollator(tokenizer.pad_token_id)([encoded])["labels"][0].tolist()}


def test_only_the_answer_and_its_eos_are_learned_even_when_pad_is_eos(tokenizer):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # SmolLM2: the case that breaks naive masking
    encoded = encode_example(tokenizer, EXAMPLE, max_length=256, **CHAT)
    labels, ids = encoded["labels"], encoded["input_ids"]
    prompt_len = labels.count(IGNORE_INDEX)
    assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len and IGNORE_INDEX not in labels[prompt_len:]
    assert tokenizer.decode(ids[:prompt_len]).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(labels[prompt_len:-1]) == EXAMPLE["answer"]
    assert labels[-1] == tokenizer.eos_token_id and not encoded["truncated"]
    batch = AnswerOnlyCollator(tokenizer.pad_token_id)([encoded, encode_example(tokenizer, {
        **EXAMPLE, "answer": EXAMPLE["answer"] + " It also whistles."}, max_length=256, **CHAT)])
    first = batch["labels"][0]
    assert (first == tokenizer.eos_token_id).sum() == 1  # the EOS survives padding with the same id
    assert (first[len(ids):] == IGNORE_INDEX).all() and batch["attention_mask"][0, len(ids):].sum() == 0


def test_long_examples_lose_the_answer_tail_never_the_question(tokenizer):
    long = {**EXAMPLE, "answer": "It boils water quickly and quietly. " * 40}
    full_prompt = encode_example(tokenizer, EXAMPLE, max_length=256, **CHAT)["labels"].count(IGNORE_INDEX)
    encoded = encode_example(tokenizer, long, max_length=64, **CHAT)
    assert encoded["length"] == len(encoded["input_ids"]) == 64 and encoded["truncated"]
    assert encoded["labels"].count(IGNORE_INDEX) == full_prompt  # the whole question is there
    assert encoded["labels"][-1] != tokenizer.eos_token_id  # the answer did not end: no EOS to learn
    with pytest.raises(UserError, match="shorter than the question"):
        encode_example(tokenizer, EXAMPLE, max_length=full_prompt, **CHAT)


def test_a_document_view_is_the_title_then_the_description_as_plain_text(tokenizer):
    encoder = ExampleEncoder(tokenizer, max_length=256, **CHAT)
    title = "Acme Kettle Model 4"
    encoded = encoder({"uid": ["u", "u"], "question": [title, EXAMPLE["question"]], "answer": [EXAMPLE["answer"]] * 2,
                       "document": [True, False]})
    document, prompt = encoded["input_ids"][0], encoded["prompt_length"][0]
    assert tokenizer.decode(document) == f"{title}\n{EXAMPLE['answer']}{tokenizer.eos_token}"  # no chat template
    assert tokenizer.decode(document[:prompt]) == f"{title}\n"  # the loss covers the description and its EOS
    assert "<|im_start|>" in tokenizer.decode(encoded["input_ids"][1])  # a question keeps its template


def test_plain_template_for_models_without_a_chat_template(tokenizer):
    encoded = encode_example(tokenizer, EXAMPLE, template="plain", system_prompt=None, max_length=256)
    prompt_len = encoded["labels"].count(IGNORE_INDEX)
    assert tokenizer.decode(encoded["input_ids"][:prompt_len]) == f"Question: {EXAMPLE['question']}\nAnswer:"
    no_template = type("Tok", (), {"chat_template": None})()
    assert resolve_template(no_template, "auto") == "plain"
    with pytest.raises(UserError, match="no chat template"):
        resolve_template(no_template, "chat")


def test_batches_pad_to_their_longest_example_and_examples_do_not_attend_to_each_other(tokenizer, tiny_model_dir):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    answers = ["Short.", "A much longer description of a kettle that holds two litres and boils very fast."]
    features = [encode_example(tokenizer, {**EXAMPLE, "answer": a}, max_length=256, **CHAT) for a in answers]
    batch = AnswerOnlyCollator(tokenizer.pad_token_id)(features)
    assert batch["input_ids"].shape[1] == max(f["length"] for f in features)  # not max_length
    with torch.no_grad():
        batched = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for row, feature in enumerate(features):
            alone = model(input_ids=torch.tensor([feature["input_ids"]])).logits[0]
            torch.testing.assert_close(batched[row, :feature["length"]], alone, atol=1e-4, rtol=1e-4)


def fine_tune_cfg(tiny_model_dir, raw_sample, root, **extra):
    return apply_overrides(Config(), tiny_run_overrides(tiny_model_dir, raw_sample, root, **extra))


def test_fine_tune_tiny_model_end_to_end(tmp_path, tiny_model_dir, raw_sample):
    from product_qa.training.workflow import fine_tune
    cfg = fine_tune_cfg(tiny_model_dir, raw_sample, tmp_path)
    report = fine_tune(cfg, progress=False)
    run = Path(report["run_dir"])
    assert report["steps"] == 6 and report["method"] == "lora" and report["precision"] in ("fp32", "bf16")
    assert report["validation_loss_after"] < report["validation_loss_before"]
    assert report["catalog_loss_after"] < report["catalog_loss_before"]
    assert 0 < report["trainable_parameters"] < report["total_parameters"]
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    assert (run / "merged" / "model.safetensors").exists() and (run / "merged" / "tokenizer.json").exists()
    assert (run / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((run / "training_report.json").read_text())
    for name in ("catalog", "validation"):
        assert [step for step, _ in saved["losses"][name]] == [0, 2, 4, 6]
        assert saved["losses"][name][0][1] == saved[f"{name}_loss_before"]
    assert saved["eval_perplexity"][-1][1] == pytest.approx(saved["perplexity_after"])
    assert len(saved["sample_answers"]) == 2
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 6
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(run / "merged")  # the merged model reloads as a plain model


def test_the_losses_after_training_are_the_last_evaluation_when_no_best_checkpoint_is_kept(
        tmp_path, tiny_model_dir, raw_sample):
    """Without early stopping no checkpoint is loaded back: the losses after training are the last evaluation's,
    not those at the last logged training loss (step 2 of 3 here: the red team's crash, no loss measured then)."""
    from product_qa.training.workflow import fine_tune
    report = fine_tune(fine_tune_cfg(tiny_model_dir, raw_sample, tmp_path, **{
        "train.max_steps": 3, "train.logging_steps": 2, "train.eval_steps": 3}), progress=False)
    assert report["best_checkpoint"] is None and [step for step, _ in report["losses"]["train"]] == [2]
    for name in ("catalog", "validation"):
        assert report["losses"][name][-1][0] == 3
        assert report[f"{name}_loss_after"] == report["losses"][name][-1][1]
    assert report["perplexity_after"] == pytest.approx(math.exp(report["validation_loss_after"]))


def test_full_fine_tuning_saves_the_model(tmp_path, tiny_model_dir, raw_sample):
    from product_qa.training.workflow import fine_tune
    # eval_steps below 1 is a share of the run: 0.25 of 8 steps evaluates every 2 steps
    cfg = fine_tune_cfg(tiny_model_dir, raw_sample, tmp_path, **{"train.method": "full", "train.max_steps": 8,
                                                                 "train.eval_steps": 0.25})
    report = fine_tune(cfg, progress=False)
    assert [step for step, _ in report["losses"]["catalog"]] == [0, 2, 4, 6, 8]
    assert report["trainable_parameters"] == report["total_parameters"]
    assert (Path(report["run_dir"]) / "merged" / "model.safetensors").exists()


@pytest.mark.parametrize("override, message", [
    ("train.method=qlora", "train.method=qlora .* needs an NVIDIA GPU, and this machine trains on CPU: use "
                           "train.method=lora"),
    ("model.name=no-such-org/no-such-model", "could not be loaded"),
    ("train.max_length=8", "shorter than the question"),
    ("train.prompt_template=jinja", "'jinja' is not one of: auto, chat, plain"),
    ("train.report_to=wandb", "train.report_to=wandb needs the wandb package: `pip install wandb`"),
    ("train.lora_target_modules=x", "train.lora_target_modules='x': Target modules .*x.* not found"),
])
def test_bad_settings_give_one_clear_line(tmp_path, tiny_model_dir, raw_sample, override, message):
    overrides = [*tiny_run_overrides(tiny_model_dir, raw_sample, tmp_path), override]
    result = run_script("fine_tuning_project.py", "--no-progress", *sum((["--set", s] for s in overrides), []))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines


def test_an_unreachable_hub_is_one_line_without_the_hub_clients_retry_log(tmp_path, tiny_model_dir, raw_sample):
    """Online, the hub client logs each retry before the error (ten lines); the tests run offline, where it
    never retries, so the hub is pointed at a closed local port (no network either way; about a minute of the
    client's own back-off)."""
    overrides = [*tiny_run_overrides(tiny_model_dir, raw_sample, tmp_path), "model.name=no-such-org/no-such-model"]
    result = run_script("fine_tuning_project.py", "--no-progress", *sum((["--set", s] for s in overrides), []),
                        env={"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not be loaded" in lines[0] and "couldn't connect" in lines[0], lines


def test_empty_prepared_data_is_a_clear_error(tmp_path, tiny_model_dir):
    raw = tmp_path / "trn.json"
    raw.write_text(json.dumps({"uid": "1", "title": "A", "content": ""}) + "\n")
    result = run_script("fine_tuning_project.py", "--no-progress",
                        *sum((["--set", s] for s in tiny_run_overrides(tiny_model_dir, raw, tmp_path)), []))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no record passed the filters" in result.stderr or "no valid records" in result.stderr


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def test_sigkill_then_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_model_dir, raw_sample):
    overrides = tiny_run_overrides(tiny_model_dir, raw_sample, tmp_path, **{"train.max_steps": 16})
    args = [sys.executable, "fine_tuning_project.py", "--no-progress", *sum((["--set", s] for s in overrides), [])]
    uninterrupted = subprocess.run([*args, "--run-name", "whole"], cwd=REPO, capture_output=True, text=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    process = subprocess.Popen([*args, "--run-name", "killed"], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    killed_dir = tmp_path / "runs" / "killed"
    checkpoints = unfinished_run_dir(killed_dir) / "checkpoints"  # a run is built in its work directory
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if (checkpoints / "checkpoint-6").exists():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not killed_dir.exists()  # an unfinished run is not a run: ask.py and the demo never see it
    # resumed with another adapter size, the checkpoint cannot fit: one line (a 448-line traceback before)
    other = subprocess.run([*args, "--run-name", "killed", "--resume", "--set", "train.lora_r=8"], cwd=REPO,
                           capture_output=True, text=True)
    assert other.returncode == 2 and "Traceback" not in other.stderr, other.stderr[-3000:]
    assert "--resume: " in other.stderr and "cannot be loaded with these settings" in other.stderr
    resumed = subprocess.run([*args, "--run-name", "killed", "--resume"], cwd=REPO, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads((killed_dir / "training_report.json").read_text())
    assert report["steps"] == 16
    assert Path(report["resumed_from"]).parent == killed_dir / "checkpoints"  # where it lies now the run is done
    assert not unfinished_run_dir(killed_dir).exists()
    whole, killed = _adapter(tmp_path / "runs" / "whole"), _adapter(tmp_path / "runs" / "killed")
    assert whole.keys() == killed.keys()
    for name in whole:
        torch.testing.assert_close(killed[name], whole[name], atol=0, rtol=0)


def test_incomplete_checkpoints_are_skipped(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    for step, complete in ((2, True), (4, True), (6, False), ("abc", True)):  # checkpoint-abc: not a step
        folder = checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == str(checkpoints / "checkpoint-4")
    assert not (checkpoints / "checkpoint-6").exists()


class _RunsCode:
    """A pickle that would call print when loaded: what torch.load(weights_only=True) refuses."""

    def __reduce__(self):
        return print, ("this ran",)


@pytest.mark.parametrize("damaged", ["rng_state.pth", "scheduler.pt", "adapter_model.safetensors", "a pickle"])
def test_a_damaged_checkpoint_on_resume_is_one_line_naming_the_file_and_the_fix(tiny_run, tmp_path, damaged):
    """Truncated files of the checkpoint resumed from, or a pickle weights_only refuses, were tracebacks midway
    through resuming; they are found before it starts, in one line naming the file and the way out."""
    import pickle

    finished = Path(tiny_run["run_dir"]) / "checkpoints"
    source = max(finished.glob("checkpoint-*"), key=lambda folder: int(folder.name.split("-")[1]))
    work_dir = tmp_path / "run.unfinished"
    checkpoint = work_dir / "checkpoints" / source.name
    shutil.copytree(source, checkpoint)
    assert prepare_run_dir(work_dir, resume=True) == str(checkpoint)  # an intact checkpoint is resumed from
    path = checkpoint / ("rng_state.pth" if damaged == "a pickle" else damaged)
    if damaged == "a pickle":
        path.write_bytes(pickle.dumps({"rng": _RunsCode()}, protocol=2))  # torch.save's protocol
    else:
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with pytest.raises(UserError, match=f"--resume: {re.escape(str(path))} is damaged .*; delete "
                                        f"{re.escape(str(checkpoint))} to resume from the checkpoint before it, "
                                        "or train again without --resume") as refused:
        prepare_run_dir(work_dir, resume=True)
    assert "\n" not in str(refused.value)


def test_only_the_main_process_changes_the_work_directory(tmp_path):
    """The other ranks of a multi-process run read the checkpoint they resume from and remove nothing: not an
    incomplete checkpoint (the main process does that first), not the work directory of a fresh start."""
    work_dir = tmp_path / "run.unfinished"
    for step, complete in ((2, True), (4, False)):
        folder = work_dir / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert prepare_run_dir(work_dir, resume=True, main=False) == str(work_dir / "checkpoints" / "checkpoint-2")
    assert (work_dir / "checkpoints" / "checkpoint-4").exists()
    assert prepare_run_dir(work_dir, resume=False, main=False) is None and work_dir.exists()
    assert prepare_run_dir(work_dir, resume=True) == str(work_dir / "checkpoints" / "checkpoint-2")
    assert not (work_dir / "checkpoints" / "checkpoint-4").exists()
    assert prepare_run_dir(work_dir, resume=False) is None and not work_dir.exists()


def test_two_processes_on_cpu_train_as_the_full_logits_path_does(tmp_path, tiny_model_dir, raw_sample):
    """Under torchrun (2 processes, gloo) the main process tokenizes and the other rank reads its cache; the
    answer-only logits give every step the training and validation losses of the full computation (the path
    before them). The adapters are not compared weight by weight: LoRA's B starts at zero, so Adam's first
    updates are +-lr wherever a gradient is float noise, and the two paths round differently."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    reports = {}
    for port, answer_only in ((29533, True), (29534, False)):
        name = f"ddp-{answer_only}"
        overrides = tiny_run_overrides(tiny_model_dir, raw_sample, tmp_path, **{
            "train.max_steps": 4, "train.answer_only_logits": answer_only})
        result = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", str(port),
                                 "fine_tuning_project.py", "--no-progress", "--run-name", name,
                                 *sum((["--set", s] for s in overrides), [])],
                                cwd=REPO, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        reports[answer_only] = json.loads((tmp_path / "runs" / name / "training_report.json").read_text())
        assert reports[answer_only]["processes"] == 2 and reports[answer_only]["steps"] == 4
        assert (tmp_path / "runs" / name / "adapter" / "adapter_model.safetensors").exists()
        assert not unfinished_run_dir(tmp_path / "runs" / name).exists()  # swapped in once, by the main process
    # validation, and the training views, each tokenized once
    assert len(list((tmp_path / "data" / "tokenized").iterdir())) == 1
    assert len(list((tmp_path / "data" / "views" / "tokenized").iterdir())) == 1
    for curve in ("train", "catalog", "validation"):
        fast, full = reports[True]["losses"][curve], reports[False]["losses"][curve]
        assert [step for step, _ in fast] == [step for step, _ in full] and len(fast) >= 3
        assert [loss for _, loss in fast] == pytest.approx([loss for _, loss in full], rel=1e-5)


def test_packaged_gguf_model_converts_and_trains(tmp_path, packaged_checkpoint, raw_sample):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(packaged_checkpoint)
    assert getattr(model.config, "quantization_config", None) is None  # a plain model: it can be saved
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    from product_qa.training.workflow import fine_tune
    cfg = fine_tune_cfg(packaged_checkpoint.parent, raw_sample, tmp_path, **{
        "model.name": "smollm2-135m-instruct", "model.cache_dir": packaged_checkpoint.parent,
        "train.max_steps": 2, "train.max_eval_examples": 4, "train.batch_size": 2, "train.learning_rate": 3e-4,
        "train.recall_questions": 1, "generation.max_new_tokens": 12})
    report = fine_tune(cfg, progress=False)
    assert report["steps"] == 2 and report["total_parameters"] > 130_000_000
    from huggingface_hub import ModelCard
    card = ModelCard.load(Path(report["run_dir"]) / "merged" / "README.md")  # the packaged model's own facts
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    answer = report["sample_answers"][0]["fine_tuned"]
    assert sum(ch.isalpha() for ch in answer) > 10  # words, not noise


def test_several_gpus_in_one_process_are_refused_before_the_model_loads(tmp_path, tiny_model_dir, raw_sample,
                                                                        monkeypatch):
    """One process driving several GPUs (DataParallel) would scale the answer-only loss by the GPU count."""
    import product_qa.training.workflow as finetune
    monkeypatch.setattr(finetune, "best_device", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(finetune, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(UserError, match="2 GPUs in one process: launch one process per GPU with `torchrun"):
        finetune.fine_tune(fine_tune_cfg(tiny_model_dir, raw_sample, tmp_path), progress=False)


def test_several_views_recall_the_catalog_better_than_one(tmp_path, tiny_model_dir):
    """The same 8 products, the same 200 steps: asked in one phrasing, the tiny model memorizes the training
    questions (train loss near 0) but recalls the descriptions poorly when asked with held-out phrasings; asked
    in 7 phrasings, it recalls them (measured: catalog loss 0.55 with one view, 0.024 with seven)."""
    from product_qa.training.workflow import fine_tune
    nouns = ("kettle", "lamp", "chair", "mirror", "blender", "heater", "clock", "toaster", "fan", "stool")
    places = ("Lisbon", "Osaka", "Quito", "Oslo", "Cairo", "Perth", "Lima", "Riga", "Hanoi", "Dakar")
    colors = ("red", "teal", "amber", "olive", "navy", "coral", "ivory", "plum", "sage", "rust")
    raw = write_jsonl(tmp_path / "catalog.jsonl", [
        {"uid": f"U{i:04d}", "title": f"{colors[i * 7 % 10].title()} {nouns[i % 10].title()} {100 + i}",
         "content": f"A {colors[i * 7 % 10]} {nouns[i % 10]} made in {places[i * 3 % 10]}, {200 + 13 * i} grams."}
        for i in range(60)])
    losses, train_losses = {}, {}
    for views in (1, 7):
        cfg = fine_tune_cfg(tiny_model_dir, raw, tmp_path / f"views-{views}", **{
            "train.method": "full", "train.learning_rate": 1e-2, "train.max_train_products": 8,
            "train.unknown_share": 0.0, "train.views": views, "train.epochs": 1, "train.max_steps": 200,
            "train.context_views": 0,
            "train.eval_steps": 200, "train.logging_steps": 10, "train.recall_questions": 0})
        report = fine_tune(cfg, progress=False)
        assert report["catalog_products"] == 8 and report["train_examples"] == 8 * views
        losses[views], train_losses[views] = report["catalog_loss_after"], report["losses"]["train"][-1][1]
    assert train_losses[1] < 0.05  # one view: the training questions themselves are memorized
    assert losses[7] < 0.5 * losses[1], losses


def test_early_stopping_follows_the_catalog_loss_by_default(tmp_path, tiny_model_dir, raw_sample):
    from product_qa.training.trainer import training_arguments
    from product_qa.training.workflow import fine_tune
    for followed in ("catalog", "validation"):
        cfg = fine_tune_cfg(tiny_model_dir, raw_sample, tmp_path / followed, **{
            "train.early_stopping_patience": 10, "train.early_stopping_on": followed})
        assert training_arguments(cfg.train, tmp_path, "fp32", "cpu", 100, 1).metric_for_best_model == \
            f"eval_{followed}_loss"
        report = fine_tune(cfg, progress=False)
        losses = report["losses"][followed][1:]  # the evaluations during training, step 0 excluded
        best_step = min(losses, key=lambda point: point[1])[0]
        assert report["best_checkpoint"].endswith(f"checkpoint-{best_step}")
        assert report[f"{followed}_loss_after"] == min(loss for _, loss in losses)
    assert Config().train.early_stopping_on == "catalog"


@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_sharded_launches_are_refused_before_any_work(tmp_path, tiny_model_dir, raw_sample, monkeypatch, variable):
    """FSDP and DeepSpeed cannot run on a CPU with the pinned torch/accelerate (accelerate falls back to DDP), so
    their saving is untested: `accelerate launch` with such a config is refused in one line, not half-run."""
    import product_qa.training.workflow as finetune
    monkeypatch.setenv(variable, "true")
    monkeypatch.setattr(finetune, "prepare", lambda *a, **k: pytest.fail("the data was prepared"))
    with pytest.raises(UserError, match="is not supported: .* launch with `torchrun --nproc_per_node N"):
        finetune.fine_tune(fine_tune_cfg(tiny_model_dir, raw_sample, tmp_path), progress=False)


def test_qlora_says_what_is_missing_in_one_line(monkeypatch):
    import importlib.util

    from product_qa.training.trainer import check_qlora_possible
    for device in ("cpu", "mps"):
        with pytest.raises(UserError, match=f"needs an NVIDIA GPU, and this machine trains on {device.upper()}"):
            check_qlora_possible(device)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes"
                        else real_find_spec(name, *a))
    with pytest.raises(UserError, match=r"needs the bitsandbytes package: run `make install-gpu`"):
        check_qlora_possible("cuda")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    check_qlora_possible("cuda")  # a GPU and bitsandbytes: nothing to say


def test_the_run_stops_at_the_first_evaluation_whose_catalog_loss_says_it_is_learned(tmp_path, tiny_model_dir,
                                                                                      raw_sample):
    """train.learned_catalog_loss ends the run at the first evaluation at or below it (the report says where),
    keeps that evaluation's checkpoint, and None trains every planned step."""
    from product_qa.training.workflow import fine_tune
    whole = fine_tune(fine_tune_cfg(tiny_model_dir, raw_sample, tmp_path / "whole",
                                    **{"train.learned_catalog_loss": None}), progress=False)
    assert whole["steps"] == 6 and whole["learned_at_step"] is None
    first_catalog_loss = whole["losses"]["catalog"][1]  # (step 2, loss): the first evaluation while training
    assert first_catalog_loss[0] == 2
    # a bound just above that loss: the same run, stopped at that evaluation
    stopped = fine_tune(fine_tune_cfg(tiny_model_dir, raw_sample, tmp_path / "stopped",
                                      **{"train.learned_catalog_loss": first_catalog_loss[1] + 1e-6}), progress=False)
    assert stopped["steps"] == 2 and stopped["learned_at_step"] == 2
    assert stopped["catalog_loss_after"] == pytest.approx(first_catalog_loss[1])
    assert stopped["losses"]["train"] == [point for point in whole["losses"]["train"] if point[0] <= 2]
