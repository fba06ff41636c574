"""A run's merged model exported for llama.cpp and Ollama: one GGUF file per quantization type (the weights, the
tokenizer and the chat template in its metadata), an Ollama Modelfile that asks it as the pipeline does (the run's
prompt, greedy, its repetition penalty and answer cap), and a README, written as one set (io_utils.replaced_directory).

The layout follows llama.cpp's convert_hf_to_gguf.py for LlamaForCausalLM: tensor names from gguf's LLAMA map, the
q/k projections permuted to llama.cpp's rotary layout, 1-D tensors (norms) kept in F32, a tied lm_head left out (the
reader reuses token_embd), and a byte-level BPE vocabulary (tokenizer.ggml.model "gpt2" with its pre-tokenizer name).
transformers reads it back with from_pretrained(folder, gguf_file=...), as modeling.py reads the packaged model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from product_qa.errors import UserError
from product_qa.io_utils import read_json, replaced_directory

if TYPE_CHECKING:
    import numpy as np
    from gguf import GGMLQuantizationType
    from transformers import PreTrainedTokenizerBase

    from config import GenerationConfig

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
# --quant names: what gguf 0.19 can write in numpy (its K-quants only read). Low-bit files keep the embeddings in
# Q8_0, as llama.cpp's quantizer keeps them above 4 bits: with tied embeddings they are the output layer too.
QUANT_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
DEFAULT_QUANTS = ("f16", "q8_0")
OLLAMA_QUANT = "q8_0"  # the file the Modelfile names: next to lossless, half the size of f16
MODELFILE = "Modelfile"

# llama.cpp's names (tokenizer.ggml.pre) for the byte-level pre-tokenizers a tokenizer.json describes
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {"gpt-2": "ByteLevel with its regex (GPT-2, SmolLM2 as converted here)",
                  "smollm": "single digits, then ByteLevel (SmolLM2 from the hub)",
                  "llama-bpe": "the Llama 3 split, then ByteLevel"}


def parse_quants(text: str) -> list[str]:
    """--quant: comma-separated names of QUANT_TYPES, each once, in the order given."""
    quants = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in quants if name not in QUANT_TYPES]
    if not quants or unknown:
        raise UserError(f"--quant {text!r}: choose among {', '.join(QUANT_TYPES)} (comma-separated)")
    return list(dict.fromkeys(quants))


def gguf_name(run_name: str, quant: str) -> str:
    return f"{run_name}.{quant.upper()}.gguf"


# ----------------------------------------------------------------------------------------------- checkpoint
@dataclass(frozen=True)
class LlamaCheckpoint:
    """What every GGUF of one checkpoint shares: hyperparameters, F32 tensors under GGUF names, the vocabulary."""
    config: dict
    tensors: dict[str, np.ndarray]
    tokens: list[str]
    token_types: list[int]
    pre_tokenizer: str
    add_bos: bool


def check_architecture(model_dir: Path) -> dict:
    """The checkpoint's config.json, if it is a model this exporter writes; else one line naming the supported ones."""
    config = read_json(model_dir / "config.json", "model's config")
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(architectures, list) or not set(architectures) & set(SUPPORTED_ARCHITECTURES):
        raise UserError(f"{model_dir}: a {architectures} model cannot be exported to GGUF here; supported: "
                        f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise UserError(f"{model_dir}: rope type {rope_type!r} is not exported; only the default rotary embedding")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise UserError(f"{model_dir}: a Llama with bias terms is not exported (transformers' GGUF reader drops them)")
    return config


def pre_tokenizer_name(pre_tokenizer: dict | None) -> str | None:
    """llama.cpp's name for a tokenizer.json pre-tokenizer (PRE_TOKENIZERS), None for one it is not."""
    if not isinstance(pre_tokenizer, dict):
        return None
    steps = pre_tokenizer.get("pretokenizers", []) if pre_tokenizer.get("type") == "Sequence" else [pre_tokenizer]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") == LLAMA3_SPLIT and not \
            steps[1].get("use_regex", True):
        return "llama-bpe"
    return None


def _vocabulary(model_dir: Path, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int],
                                                                                               str]:
    """(tokens, token types, pre-tokenizer name) as convert_hf_to_gguf.py writes a byte-level BPE vocabulary: ids the
    tokenizer lacks up to the model's vocab_size are [PAD<id>] (unused), added tokens control or user-defined."""
    import gguf

    description = read_json(model_dir / "tokenizer.json", "tokenizer")
    model = description.get("model", {}) if isinstance(description, dict) else {}
    pre = pre_tokenizer_name(description.get("pre_tokenizer") if isinstance(description, dict) else None)
    if model.get("type") != "BPE" or pre is None:
        raise UserError(f"{model_dir / 'tokenizer.json'}: only byte-level BPE tokenizers are exported (pre-tokenizer: "
                        f"{'; '.join(PRE_TOKENIZERS.values())})")
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[index])
        types.append(gguf.TokenType.NORMAL if index not in added else
                     gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
    return tokens, types, pre


def _permuted(weights: np.ndarray, heads: int) -> np.ndarray:
    """A q or k projection's rows in llama.cpp's rotary order (convert_hf_to_gguf.py LlamaModel.permute): HF
    rotates the two halves of each head, llama.cpp interleaved pairs."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2)
            .reshape(weights.shape))


def _tensors(model_dir: Path, config: dict) -> dict[str, np.ndarray]:
    """The checkpoint's weights as F32 numpy arrays under GGUF names, q/k permuted, a tied lm_head left out."""
    import gguf
    from safetensors import SafetensorError, safe_open

    from product_qa.modeling import damaged_weights

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir}: no safetensors weights; export a merged model (a run's merged/)")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    tensors: dict[str, np.ndarray] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as weights:  # pt: numpy has no bfloat16
                for name in weights.keys():
                    if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and
                                                                config.get("tie_word_embeddings")):
                        continue
                    target = names.get_name(name, try_suffixes=(".weight", ".bias"))
                    if target is None:
                        raise UserError(f"{path}: tensor {name} has no place in a Llama GGUF")
                    array = weights.get_tensor(name).float().numpy()
                    if name.endswith("q_proj.weight"):
                        array = _permuted(array, heads)
                    elif name.endswith("k_proj.weight"):
                        array = _permuted(array, kv_heads)
                    tensors[target] = array
        except SafetensorError as err:
            raise damaged_weights(str(model_dir), err) from None
    return tensors


def read_checkpoint(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> LlamaCheckpoint:
    """The checkpoint in `model_dir` with its tokenizer, ready to write in any quant."""
    config = check_architecture(model_dir)
    tokens, types, pre = _vocabulary(model_dir, tokenizer, config["vocab_size"])
    probe = tokenizer("a")["input_ids"]  # what the tokenizer adds by itself: llama.cpp must do the same
    return LlamaCheckpoint(config, _tensors(model_dir, config), tokens, types, pre,
                           add_bos=bool(probe) and probe[0] == tokenizer.bos_token_id)


# --------------------------------------------------------------------------------------------------- writing
def _tensor_type(name: str, array: np.ndarray, quant: str) -> GGMLQuantizationType:
    """The type a tensor is written in: 1-D in F32, else `quant` (see QUANT_TYPES for the embeddings)."""
    import gguf

    types = gguf.GGMLQuantizationType
    wanted = types[quant.upper()]
    if array.ndim == 1:
        return types.F32  # norms: tiny, and precision-critical
    if quant.startswith(("q4", "q5")) and name.startswith(("token_embd.", "output.")):
        wanted = types.Q8_0
    block = gguf.GGML_QUANT_SIZES[wanted][0]
    return wanted if array.shape[-1] % block == 0 else types.F16  # rows that do not fill whole blocks


FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0",
              "q5_1": "MOSTLY_Q5_1", "q5_0": "MOSTLY_Q5_0", "q4_1": "MOSTLY_Q4_1", "q4_0": "MOSTLY_Q4_0"}


def write_gguf(checkpoint: LlamaCheckpoint, model_dir: Path, path: Path, quant: str, name: str) -> None:
    """One GGUF file of the checkpoint in `quant` (QUANT_TYPES), at `path` (a staging folder's: see export_run)."""
    import gguf

    config = checkpoint.config
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config["hidden_size"] // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(getattr(gguf.LlamaFileType, FILE_TYPES[quant]))
    if quant.startswith("q"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(checkpoint.pre_tokenizer)
    writer.add_token_list(checkpoint.tokens)
    writer.add_token_types(checkpoint.token_types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=config["vocab_size"])
    special.add_special_token.setdefault("bos", checkpoint.add_bos)
    special.add_to_gguf(writer, quiet=True)  # merges, bos/eos/unk/pad ids, add_bos, the chat template
    for tensor_name, array in checkpoint.tensors.items():
        qtype = _tensor_type(tensor_name, array, quant)
        writer.add_tensor(tensor_name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ---------------------------------------------------------------------------------------------------- Ollama
SYSTEM_SLOT, PROMPT_SLOT = "\x00system\x00", "\x00prompt\x00"  # never in a chat template's own text


def _go_text(rendered: str) -> str:
    """A rendered prompt piece as Go template text: the slots become Ollama's variables, a literal {{ is quoted."""
    text = rendered.replace("{{", '{{ "{{" }}').replace(SYSTEM_SLOT, "{{ .System }}").replace(PROMPT_SLOT,
                                                                                              "{{ .Prompt }}")
    if "\x00" in text:
        raise UserError("the chat template splits the question or the system prompt; it cannot be written as an "
                        "Ollama TEMPLATE")
    return text


def ollama_template(tokenizer: PreTrainedTokenizerBase, template: str) -> str:
    """The run's prompt (data/prompts.prompt_text: its chat template, or the plain one) as an Ollama TEMPLATE:
    .System and .Prompt where the system prompt and the question go. Rendered both with a system prompt and
    without (a chat template may put a default one in), the two joined by {{ if .System }}."""
    from product_qa.data.prompts import prompt_text

    with_system = prompt_text(tokenizer, PROMPT_SLOT, template, SYSTEM_SLOT)
    without = prompt_text(tokenizer, PROMPT_SLOT, template, None)
    if SYSTEM_SLOT not in with_system:  # the plain template: no system prompt
        return _go_text(without)
    start = _shared_length(with_system, without)  # what the two share, before and after, is written once
    end = _shared_length(with_system[start:][::-1], without[start:][::-1])
    return (f"{_go_text(with_system[:start])}{{{{ if .System }}}}{_go_text(with_system[start:len(with_system) - end])}"
            f"{{{{ else }}}}{_go_text(without[start:len(without) - end])}{{{{ end }}}}"
            f"{_go_text(with_system[len(with_system) - end:])}")


def _shared_length(first: str, second: str) -> int:
    """How many leading characters the two share, short of a brace or a slot's mark, so that no {{ and no slot is
    cut in two."""
    length = 0
    while length < min(len(first), len(second)) and first[length] == second[length]:
        length += 1
    while length and first[length - 1] in "{}\x00":
        length -= 1
    return length


def _quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise UserError(f'the {what} holds """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def modelfile_text(gguf_file: str, tokenizer: PreTrainedTokenizerBase, template: str, system: str | None,
                   decoding: GenerationConfig, run_name: str) -> str:
    """An Ollama Modelfile asking the model as the pipeline does: the run's prompt and system prompt, greedy,
    the repetition penalty and the answer cap of the generation settings, stopping at the end-of-turn token."""
    lines = [f"# The fine-tuned run {run_name}: ollama create {run_name} -f {MODELFILE}", f"FROM ./{gguf_file}",
             f"TEMPLATE {_quoted(ollama_template(tokenizer, template), 'chat template')}"]
    if system:
        lines.append(f"SYSTEM {_quoted(system, 'system prompt')}")
    lines += ["PARAMETER temperature 0",  # greedy, as the pipeline answers
              f"PARAMETER repeat_penalty {decoding.repetition_penalty}",
              f"PARAMETER num_predict {decoding.max_new_tokens}",
              f"PARAMETER stop {json.dumps(tokenizer.eos_token)}"]
    return "\n".join(lines) + "\n"


def readme_text(run_name: str, files: list[str], ollama_file: str, system_prompt: str | None) -> str:
    """The folder's README: a Hugging Face model card header (GGUF) and how to run each file."""
    system = f" -sys {json.dumps(system_prompt)}" if system_prompt else ""
    return "\n".join([
        "---", "tags: [gguf, ollama, product-qa]", "---", "",
        f"# {run_name} (GGUF)", "",
        f"The merged model of the fine-tuning run `{run_name}`, written by `export_model.py`: "
        + ", ".join(f"`{name}`" for name in files) + ". Each file carries the tokenizer and the chat template.", "",
        f"- Ollama: `ollama create {run_name} -f {MODELFILE}` (it uses `{ollama_file}`), then "
        f"`ollama run {run_name} \"What is the Girls Ballet Tutu Neon Pink?\"`",
        f"- llama.cpp: `llama-cli -m {ollama_file}{system} -cnv --temp 0`",
        f"- transformers: `AutoModelForCausalLM.from_pretrained(folder, gguf_file=\"{ollama_file}\")`", ""])


# ----------------------------------------------------------------------------------------------------- a run
@dataclass(frozen=True)
class Export:
    files: dict[str, Path]  # the GGUF file of each quant
    seconds: dict[str, float]  # the time each took to write, reading the checkpoint included in "read"


def export_model(model_dir: Path, output_dir: Path, quants: list[str], run_name: str, prompt_template: str,
                 system_prompt: str | None, decoding: GenerationConfig) -> Export:
    """Every GGUF of `quants`, the Modelfile and the README written into `output_dir` as one set (the previous
    export stays until the new one is whole). The prompt is the run's: `prompt_template` (train.prompt_template)
    resolved against the model's tokenizer, and its `system_prompt`."""
    import time

    from transformers import AutoTokenizer

    from product_qa.data.prompts import resolve_template

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = resolve_template(tokenizer, prompt_template)
    system = system_prompt if template == "chat" else None  # the plain template has no system prompt
    checkpoint = read_checkpoint(model_dir, tokenizer)
    seconds = {"read": time.perf_counter() - started}
    files = {quant: gguf_name(run_name, quant) for quant in quants}
    ollama_file = files.get(OLLAMA_QUANT, files[quants[0]])
    with replaced_directory(output_dir, MODELFILE) as staging:
        for quant, name in files.items():
            started = time.perf_counter()
            write_gguf(checkpoint, model_dir, staging / name, quant, run_name)
            seconds[quant] = time.perf_counter() - started
        (staging / MODELFILE).write_text(modelfile_text(ollama_file, tokenizer, template, system, decoding, run_name),
                                         encoding="utf-8")
        (staging / "README.md").write_text(readme_text(run_name, list(files.values()), ollama_file, system),
                                           encoding="utf-8")
    return Export({quant: output_dir / name for quant, name in files.items()}, seconds)
