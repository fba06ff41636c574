"""export_model.py: a run's merged model as GGUF files (transformers' GGUF reader, the one modeling.py loads the
packaged model with, is the round-trip reference), the Ollama Modelfile, and --push-to-hub's early one-line stops."""
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from config import GenerationConfig
from conftest import REPO, cli_overrides, run_script
from product_qa.data.prompts import PLAIN_TEMPLATE, prompt_text
from product_qa.errors import UserError
from product_qa.exporting import (
    MODELFILE,
    check_architecture,
    export_model,
    ollama_template,
    parse_quants,
    pre_tokenizer_name,
)

SYSTEM_PROMPT = "Answer with the product's description."
QUESTIONS = ["What is the Girls Ballet Tutu Neon Pink?", "Describe Kestrel Art Easel for Kids Ages 5-11.",
             "O que é Forgotten Valley (DVD)? 1987, 102 minutes — ünïcode"]


@pytest.fixture(scope="module")
def tiny_export(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "gguf"
    export = export_model(tiny_model_dir, out, ["f16", "q8_0"], "tiny", "chat", SYSTEM_PROMPT,
                          GenerationConfig(max_new_tokens=8))
    return out, export


def load_gguf(folder: Path, name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return (AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval(),
            AutoTokenizer.from_pretrained(folder, gguf_file=name))


def greedy(model, tokenizer, prompt: str, new_tokens: int) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def test_f16_gguf_is_the_model_in_half_precision(tiny_model_dir, tiny_export, tokenizer):
    """The f16 file holds every weight of the source rounded to float16, in its place (the q/k permutation undone
    by the reader, the tied embeddings shared): same logits as the rounded source, same greedy tokens."""
    from transformers import AutoModelForCausalLM
    folder, export = tiny_export
    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model, _ = load_gguf(folder, export.files["f16"].name)
    assert model.config.tie_word_embeddings
    loaded = model.state_dict()
    for name, weight in source.state_dict().items():
        assert torch.equal(loaded[name], weight.half().float()), name
    prompt = prompt_text(tokenizer, QUESTIONS[0], "chat", SYSTEM_PROMPT)
    source.half().float()
    assert greedy(model, tokenizer, prompt, 8) == greedy(source, tokenizer, prompt, 8)


def test_q8_0_gguf_is_close(tiny_model_dir, tiny_export, tokenizer):
    from transformers import AutoModelForCausalLM
    folder, export = tiny_export
    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model, _ = load_gguf(folder, export.files["q8_0"].name)
    ids = tokenizer(prompt_text(tokenizer, QUESTIONS[1], "chat", SYSTEM_PROMPT), return_tensors="pt",
                    add_special_tokens=False)
    with torch.no_grad():
        expected, got = source(**ids).logits, model(**ids).logits
    assert not torch.equal(got, expected)  # quantized, not a copy
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()
    weight = source.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert torch.allclose(model.state_dict()["model.layers.0.self_attn.q_proj.weight"], weight,
                          atol=float(weight.abs().max()) / 100)


def test_gguf_tokenizer_encodes_like_the_source(tiny_export, tokenizer):
    folder, export = tiny_export
    _, loaded = load_gguf(folder, export.files["q8_0"].name)
    texts = [*QUESTIONS, prompt_text(tokenizer, QUESTIONS[2], "chat", SYSTEM_PROMPT), "  two  spaces\n\nand 12345"]
    for text in texts:
        assert loaded(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)[
            "input_ids"]
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]  # the same special tokens added (none)
    assert loaded.chat_template == tokenizer.chat_template
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == (tokenizer.bos_token, tokenizer.eos_token,
                                                                      tokenizer.pad_token)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": QUESTIONS[0]}]
    assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == prompt_text(
        tokenizer, QUESTIONS[0], "chat", SYSTEM_PROMPT)


def test_gguf_files_are_deterministic(tiny_model_dir, tiny_export, tmp_path):
    folder, export = tiny_export
    again = export_model(tiny_model_dir, tmp_path / "again", ["q8_0"], "tiny", "chat", SYSTEM_PROMPT,
                         GenerationConfig(max_new_tokens=8))
    assert again.files["q8_0"].read_bytes() == export.files["q8_0"].read_bytes()


# ------------------------------------------------------------------------------------------------ the Modelfile
def render_ollama(template: str, system: str, prompt: str) -> str:
    """Ollama's Go-template rendering of the pieces ollama_template writes: {{ if .System }}A{{ else }}B{{ end }},
    {{ .System }}, {{ .Prompt }} and a quoted {{ "{{" }}."""
    template = re.sub(r"\{\{ if \.System \}\}(.*?)\{\{ else \}\}(.*?)\{\{ end \}\}",
                      lambda m: m.group(1) if system else m.group(2), template, flags=re.S)
    pieces = {"{{ .System }}": system, "{{ .Prompt }}": prompt, '{{ "{{" }}': "{{"}
    return re.sub(r"\{\{ (?:\.System|\.Prompt|\"\{\{\") \}\}", lambda m: pieces[m.group(0)], template)


def modelfile_entries(text: str) -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    for command, value in re.findall(r'^([A-Z]+) ("""(?:.|\n)*?"""|.*)$', text, flags=re.M):
        entries.setdefault(command, []).append(value.removeprefix('"""').removesuffix('"""'))
    return entries


def test_modelfile_asks_as_the_pipeline_does(tiny_export, tokenizer):
    folder, export = tiny_export
    entries = modelfile_entries((folder / MODELFILE).read_text())
    assert entries["FROM"] == [f"./{export.files['q8_0'].name}"] and export.files["q8_0"].is_file()
    assert entries["SYSTEM"] == [SYSTEM_PROMPT]
    assert entries["PARAMETER"] == ["temperature 0", "repeat_penalty 1.15", "num_predict 8", 'stop "<|im_end|>"']
    template = entries["TEMPLATE"][0]
    for question in QUESTIONS:
        assert render_ollama(template, SYSTEM_PROMPT, question) == prompt_text(tokenizer, question, "chat",
                                                                               SYSTEM_PROMPT)
        # no SYSTEM line: the chat template's own default system prompt, as the pipeline's prompt without one
        assert render_ollama(template, "", question) == prompt_text(tokenizer, question, "chat", None)
    assert f"ollama create tiny -f {MODELFILE}" in (folder / "README.md").read_text()


def test_plain_prompt_template_and_braces(tokenizer, packaged_checkpoint):
    """The plain prompt (no system prompt); a chat template whose own text holds {{ is quoted for Go."""
    assert render_ollama(ollama_template(tokenizer, "plain"), "", "What is X?") == PLAIN_TEMPLATE.format(
        question="What is X?")
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(packaged_checkpoint)  # a copy: its chat template is changed
    tokenizer.chat_template = "{% for m in messages %}{{ '{{' + m['role'] + '}} ' + m['content'] }}\n{% endfor %}"
    template = ollama_template(tokenizer, "chat")
    assert render_ollama(template, "sys", "q?") == prompt_text(tokenizer, "q?", "chat", "sys")
    assert render_ollama(template, "", "q?") == prompt_text(tokenizer, "q?", "chat", None)


# ------------------------------------------------------------------------------------------------ what is refused
def test_quant_names_and_pre_tokenizers():
    assert parse_quants("q8_0, F16,q8_0") == ["q8_0", "f16"]
    for wrong in ("q4_k", "", "f16,q3"):
        with pytest.raises(UserError, match="choose among"):
            parse_quants(wrong)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    assert pre_tokenizer_name(byte_level) == "gpt-2"
    assert pre_tokenizer_name({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, byte_level]}) == "smollm"
    assert pre_tokenizer_name({"type": "Metaspace"}) is None


def test_unsupported_architecture(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "gpt2"
    shutil.copytree(tiny_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UserError, match="supported: LlamaForCausalLM"):
        check_architecture(model_dir)


def fake_run(root: Path, name: str, merged_config: dict | None) -> list[str]:
    """A finished-looking run folder (merged/, config.json, training_report.json) and the flags that name it."""
    run = root / "runs" / name
    (run / "merged").mkdir(parents=True)
    if merged_config is not None:
        (run / "merged" / "config.json").write_text(json.dumps(merged_config))
    (run / "config.json").write_text("{}")
    (run / "training_report.json").write_text("{}")
    return ["--set", f"train.output_dir={root / 'runs'}", "--run", name]


@pytest.mark.parametrize(("merged_config", "message"), [
    (None, "no merged model in the run"),
    ({"architectures": ["GPT2LMHeadModel"]}, "cannot be exported to GGUF here; supported: LlamaForCausalLM")])
def test_script_stops_in_one_line(tmp_path, merged_config, message):
    result = run_script("export_model.py", *fake_run(tmp_path, "broken", merged_config))
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "broken" / "gguf").exists()


@pytest.mark.parametrize("script", ["export_model.py", "fine_tuning_project.py"])
@pytest.mark.parametrize(("offline", "message"), [("0", "no Hugging Face token"), ("1", "HF_HUB_OFFLINE=1")])
def test_push_to_hub_without_token_or_network_stops_first(tmp_path, monkeypatch, script, offline, message):
    """Said before any work: no run is trained or exported (the run folder below stays as it is)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    flags = fake_run(tmp_path, "run", {"architectures": ["LlamaForCausalLM"]})
    args = flags if script == "export_model.py" else flags[:2]
    result = run_script(script, *args, "--push-to-hub", "someone/products",
                        env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": offline})
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run"]
    assert not (tmp_path / "runs" / "run" / "gguf").exists()


# ------------------------------------------------------------------------------------------------ a whole run
def test_script_exports_a_run(tiny_run, tmp_path):
    """The run's own prompt settings and answer cap reach the Modelfile; the export replaces the previous one."""
    from product_qa.settings import read_run_report
    run_dir = Path(tiny_run["run_dir"])
    out = tmp_path / "gguf"
    settings = [s for s in tiny_run["settings"] if not s.startswith("generation.max_new_tokens=")]  # the run's cap
    args = [*cli_overrides(settings), "--run", run_dir.name, "--output-dir", str(out), "--no-progress"]
    result = run_script("export_model.py", *args, "--quant", "q4_0,q8_0")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MODELFILE, "README.md", f"{run_dir.name}.Q4_0.gguf", f"{run_dir.name}.Q8_0.gguf"])
    saved = json.loads((run_dir / "config.json").read_text())
    entries = modelfile_entries((out / MODELFILE).read_text())
    assert entries["SYSTEM"] == [saved["train"]["system_prompt"]]
    assert f"num_predict {read_run_report(run_dir)['longest_answer_tokens']}" in entries["PARAMETER"]
    assert f"ollama create {run_dir.name} -f {MODELFILE}" in (out / "README.md").read_text()
    result = run_script("export_model.py", *args, "--quant", "f16")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([MODELFILE, "README.md", f"{run_dir.name}.F16.gguf"])
    assert f"FROM ./{run_dir.name}.F16.gguf" in (out / MODELFILE).read_text()  # no q8_0: the first one asked


def test_default_model_answers_the_same_from_its_f16_gguf(packaged_checkpoint, tmp_path):
    """The packaged SmolLM2-135M exported to f16 answers catalog questions of the sample with the same greedy
    tokens as the checkpoint it came from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    titles = [json.loads(line)["title"] for line in (REPO / "sample_data.json").read_text().splitlines()[:2]]
    export = export_model(packaged_checkpoint, tmp_path / "gguf", ["f16"], "smollm2", "chat", SYSTEM_PROMPT,
                          GenerationConfig(max_new_tokens=8))
    tokenizer = AutoTokenizer.from_pretrained(packaged_checkpoint)
    source = AutoModelForCausalLM.from_pretrained(packaged_checkpoint).eval()
    model, _ = load_gguf(export.files["f16"].parent, export.files["f16"].name)
    for title in titles:
        prompt = prompt_text(tokenizer, f"What is {title}?", "chat", SYSTEM_PROMPT)
        assert greedy(model, tokenizer, prompt, 8) == greedy(source, tokenizer, prompt, 8), title


def test_llama_cpp_reads_the_gguf(tiny_model_dir, tiny_export, tokenizer):
    """llama.cpp itself (llama-cpp-python, not a pinned requirement: skipped without it) tokenizes like the source
    tokenizer, special tokens included, and computes the source's logits from each file."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoModelForCausalLM
    folder, export = tiny_export
    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt = prompt_text(tokenizer, QUESTIONS[2], "chat", SYSTEM_PROMPT)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = source(torch.tensor([ids])).logits[0].numpy()
    for path in export.files.values():
        llama = llama_cpp.Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, seed=0)
        for text in [*QUESTIONS, prompt]:
            assert llama.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(
                text, add_special_tokens=False)["input_ids"], (path.name, text)
        llama.eval(ids)
        got = llama.scores[:len(ids)]
        assert abs(got - expected).max() < 0.03 * abs(expected).max(), path.name
