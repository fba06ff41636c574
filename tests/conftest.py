import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_RECORDS = REPO.parent / "shared" / "data" / "real_trn_dev.jsonl"


def write_jsonl(path: Path, records, *, compress: bool = False) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The end of every driver: a `python -c` program that patches something (a kill, a key press) and then runs a
# stage script as `python script.py` would. The driver reads its own parameters from DRIVER_* environment
# variables, so the script and its arguments come right after -c. It runs in the repository (sys.path[0] is
# the working directory under -c), where the script finds config.py as it does when started by hand.
RUN_SCRIPT_AS_MAIN = """
import runpy as _runpy, sys as _sys
_sys.argv = _sys.argv[1:]
_runpy.run_path(_sys.argv[0], run_name="__main__")
"""


def run_script(script: str, *args: str, cwd: Path = REPO, timeout: int = 300, env: dict[str, str] | None = None,
               driver: str | None = None, **run_options) -> subprocess.CompletedProcess:
    """A stage script run as the user runs it; with `driver`, under that driver (then always in the repository)."""
    program = [str(REPO / script)] if driver is None else ["-c", driver + RUN_SCRIPT_AS_MAIN, str(REPO / script)]
    return subprocess.run([sys.executable, *program, *args], cwd=REPO if driver else cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
                          **run_options)


@pytest.fixture
def data_config(tmp_path):
    """A DataConfig writing under tmp_path, one process, keeping every record by default."""
    from config import DataConfig
    return DataConfig(output_dir=str(tmp_path / "out"), workers=1, min_content_chars=10)


os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def packaged_checkpoint(tmp_path_factory) -> Path:
    """The packaged SmolLM2 GGUF converted to a plain checkpoint (once per test session)."""
    from product_qa.modeling import resolve_model_path
    return Path(resolve_model_path("smollm2-135m-instruct", str(tmp_path_factory.mktemp("models"))))


@pytest.fixture(scope="session")
def tokenizer(packaged_checkpoint):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(packaged_checkpoint)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A two-layer Llama built from a config, with the real SmolLM2 tokenizer: trains in seconds on a CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def raw_sample(tmp_path_factory) -> Path:
    """A small generated trn.json: about 250 usable products."""
    from product_qa.data.synthetic import generate_records, write_records
    path = tmp_path_factory.mktemp("raw") / "trn.json"
    write_records(str(path), generate_records(400, seed=5))
    return path


def tiny_run_overrides(tiny_model_dir: Path, raw: Path, root: Path, **extra) -> list[str]:
    """--set overrides for a fast fine-tuning run of the tiny model in `root`."""
    settings = {"data.raw_path": raw, "data.output_dir": root / "data", "data.workers": 1,
                "model.name": tiny_model_dir, "train.output_dir": root / "runs", "train.max_length": 96,
                "train.max_steps": 6, "train.eval_steps": 2, "train.logging_steps": 1, "train.batch_size": 4,
                "train.max_eval_examples": 8, "train.learning_rate": 3e-3, "train.recall_questions": 2,
                "generation.max_new_tokens": 8, "train.early_stopping_patience": None,
                # the tiny run's catalog is pinned, not the default recipe's: its few steps see the same
                # examples whatever config.py's catalog size and epochs become
                "train.max_train_products": 20, "train.epochs": 3,
                # a model trained 6 steps is sure of nothing: the confidence gate would decline every answer
                "generation.min_confidence": 0.0,
                # the assistant check after training evaluates the run: only the tiny_run fixture does it
                "train.assistant_questions": 0, **extra}
    return [f"{key}={value}" for key, value in settings.items()]


def tiny_settings(tiny_model_dir: Path, raw: Path, root: Path, **extra) -> list[str]:
    """tiny_run_overrides plus small evaluation settings and the evaluation and RAG folders, all in `root`."""
    return tiny_run_overrides(tiny_model_dir, raw, root, **{
        "eval.output_dir": root / "evaluation", "rag.index_dir": root / "rag", "eval.catalog_questions": 6,
        "eval.indexed_questions": 6, "eval.unknown_questions": 6, "eval.test_questions": 2,
        "generation.batch_size": 4, "train.assistant_questions": 2, **extra})


def cli_overrides(settings: list[str]) -> list[str]:
    return sum((["--set", s] for s in settings), [])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir, raw_sample):
    """A fine-tuned tiny model (6 LoRA steps) and the overrides that point every stage at it."""
    from config import Config
    from product_qa.configurator import apply_overrides
    from product_qa.training.workflow import fine_tune
    root = tmp_path_factory.mktemp("answering")
    settings = tiny_settings(tiny_model_dir, raw_sample, root)
    report = fine_tune(apply_overrides(Config(), settings), progress=False)
    return {"root": root, "settings": settings, "run_dir": report["run_dir"]}
