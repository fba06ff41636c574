"""From prepared examples to what a causal LM trains on: token ids with the prompt masked, batches padded to
their longest example, and the loss on answer tokens only. Shared by training, evaluation and analysis.

Each example is the prompt (the question in the model's chat template) followed by the answer and the EOS
token. Only the answer and its EOS count in the loss, and the EOS is labelled explicitly, so the model
learns to stop even when the pad token is the EOS token.

A split is tokenized block by block into an Arrow file under the data directory, keyed by the data file, the
tokenizer, the template, the system prompt and max_length: a second run, or the other ranks under torchrun,
memory-map it instead of tokenizing again, and memory stays flat in the number of examples.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from product_qa.configurator import fingerprint
from product_qa.data.prompts import answer_text, chat_messages, context_question, cut_to_tokens, prompt_text
from product_qa.errors import UserError
from product_qa.io_utils import TEMP_MARK, remove_stale_temps

if TYPE_CHECKING:
    from collections.abc import Iterator

    from datasets import Dataset, Features
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from transformers.utils import ModelOutput

IGNORE_INDEX = -100  # label of tokens that do not count in the loss
ENCODING_VERSION = 4  # bump when the encoding changes: old caches are then rebuilt
TOKENIZED_DIR = "tokenized"  # under data.output_dir
ENCODED_FILE = "encoded.arrow"  # a split's token ids, in its folder under TOKENIZED_DIR
BLOCK_BYTES = 8 << 20  # JSON read and encoded at a time: some ten thousand examples, work for every tokenizer thread
_QUESTION_SLOT = "\x00question\x00"
# questions the template frame is checked on: words, digits and punctuation at both ends
_PROBES = ("What is Acme Kettle, Steel (2 L)?", "2024 Wall Calendar 12", "\"Ulysses\": a novel.", "¿Qué es X-1000?")
# the columns an example is encoded from: a split's others (messages, phrasing...) are never read into Python
ENCODED_FROM = ("uid", "question", "answer", "document", "context")


# ----------------------------------------------------------------------------------------------- encoding
class ExampleEncoder:
    """Encodes examples into input ids and the prompt length (the collator derives the labels from it).

    The chat template is rendered once around a placeholder and filled by string concatenation: Jinja per
    example costs more than the tokenizer on a large catalog. Where the template's output depends on the
    question in another way, the prompt is rendered for each example."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, template: str, system_prompt: str | None,
                 max_length: int) -> None:
        self.tokenizer, self.template, self.system_prompt, self.max_length = (tokenizer, template, system_prompt,
                                                                              max_length)
        prefix, slot, suffix = prompt_text(tokenizer, _QUESTION_SLOT, template, system_prompt).partition(
            _QUESTION_SLOT)
        self._frame = (prefix, suffix) if slot and all(prefix + probe + suffix == self._rendered(probe)
                                                       for probe in _PROBES) else None
        self._frame_ids = self._token_frame()

    def _token_frame(self) -> tuple[list[int], list[int]] | None:
        """The token ids of the frame's text before and after the question, so that only the question is tokenized
        per example (about a third of a prompt's tokens with the system prompt). They hold where the frame ends and
        starts on a token boundary (a special token, a newline), checked on questions that start and end with
        letters, digits and punctuation; None where not (plain: "Question: " joins the question's first word)."""
        if self._frame is None:
            return None
        prefix, suffix = self._ids(list(self._frame))
        fits = all(prefix + ids + suffix == whole for ids, whole in
                   zip(self._ids(list(_PROBES)), self._ids([self.prompt(probe) for probe in _PROBES]), strict=True))
        return (prefix, suffix) if fits else None

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _rendered(self, question: str) -> str:
        return prompt_text(self.tokenizer, question, self.template, self.system_prompt)

    def prompt(self, question: str) -> str:
        return self._rendered(question) if self._frame is None else self._frame[0] + question + self._frame[1]

    def with_context(self, question: str, record: str, max_tokens: int | None = None) -> str:
        """The question with `record` (prompts.record_text) before it. The record is cut to half of the room
        max_length leaves after the rest of the prompt (or to `max_tokens`), so that a description copied after
        it as the answer fits too."""
        if max_tokens is None:
            rest = len(self.tokenizer(self.prompt(context_question(question, "")), add_special_tokens=False)
                       ["input_ids"])
            max_tokens = max(1, (self.max_length - rest) // 2)
        return context_question(question, cut_to_tokens(self.tokenizer, record, max_tokens))

    def user_turn(self, question: str, record: str = "") -> str:
        """What the model is asked: the question, after its record (cut to fit) for a context example."""
        return self.with_context(question, record) if record else question

    def messages(self, example: dict) -> list[dict[str, str]] | None:
        """The chat turns `example` is trained as (prompts.chat_messages): the system prompt (chat template only:
        the plain one has none), the user turn __call__ encodes, the answer. The model's chat template over them
        renders the trained text, prompt and answer. None for a document example: plain text, not a chat."""
        if example.get("document"):
            return None
        return chat_messages(self.user_turn(example["question"], example.get("context") or ""), example["answer"],
                             self.system_prompt if self.template == "chat" else None)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        """A batch of examples (columns uid, question, answer, and optionally document and context) -> input_ids,
        prompt_length, length, answer_tokens, truncated. A document example (catalog.training_views) is plain
        text: its "question" is the title, followed by a newline and the description, with no chat template. A
        context example shows its record (a non-empty `context`) before the question. An example longer than
        max_length loses the tail of its answer (and then has no EOS: the answer did not end there)."""
        count = len(batch["question"])
        documents = batch.get("document") or [False] * count
        questions = [self.user_turn(q, record)
                     for q, record in zip(batch["question"], batch.get("context") or [""] * count, strict=True)]
        prompts = self._prompt_ids(questions, documents)
        answers = self._ids([a if document else answer_text(a, self.template)
                             for a, document in zip(batch["answer"], documents, strict=True)])
        out: dict[str, list] = {"input_ids": [], "prompt_length": [], "length": [], "answer_tokens": [],
                                "truncated": []}
        eos = self.tokenizer.eos_token_id
        for uid, prompt_ids, answer_ids in zip(batch["uid"], prompts, answers, strict=True):
            room = self.max_length - len(prompt_ids)
            if room < 1:
                raise UserError(f"train.max_length={self.max_length} is shorter than the question of {uid} "
                                f"({len(prompt_ids)} prompt tokens): raise train.max_length")
            answer_ids.append(eos)
            kept = answer_ids[:room]
            out["input_ids"].append(prompt_ids + kept)
            out["prompt_length"].append(len(prompt_ids))
            out["length"].append(len(prompt_ids) + len(kept))
            out["answer_tokens"].append(len(kept))
            out["truncated"].append(len(answer_ids) > room)
        return out

    def _prompt_ids(self, questions: list[str], documents: list) -> list[list[int]]:
        """The prompts' token ids: a document's title and newline; a question inside the template, from the frame's
        ids where the question is framed by token boundaries (no whitespace at its ends), else tokenized whole."""
        framed = [self._frame_ids is not None and not document and q.strip() == q
                  for q, document in zip(questions, documents, strict=True)]
        texts = [q if frame else f"{q}\n" if document else self.prompt(q)
                 for q, document, frame in zip(questions, documents, framed, strict=True)]
        ids = self._ids(texts)
        if any(framed):
            prefix, suffix = self._frame_ids
            ids = [prefix + one + suffix if frame else one for one, frame in zip(ids, framed, strict=True)]
        return ids

    def encode(self, examples: list[dict]) -> list[dict]:
        """Examples (dicts with uid, question, answer) encoded one dict each, for a small list."""
        if not examples:
            return []
        columns = self({k: [e.get(k) or "" for e in examples] for k in ("uid", "question", "answer", "context")})
        return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]

    def key(self) -> str:
        """What the encoding depends on, besides the data: the tokenizer's vocabulary and rules, its EOS token,
        the template, the system prompt and max_length."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        vocabulary = backend.to_str() if backend is not None else repr(sorted(self.tokenizer.get_vocab().items()))
        return fingerprint(ENCODING_VERSION, hashlib.blake2b(vocabulary.encode(), digest_size=12).hexdigest(),
                           self.tokenizer.eos_token_id, self.prompt(_QUESTION_SLOT), self.template,
                           self.system_prompt, self.max_length)


def encoded_features() -> Features:
    from datasets import Features, Sequence, Value

    return Features({"input_ids": Sequence(Value("int32")), "prompt_length": Value("int32"),
                     "length": Value("int32"), "answer_tokens": Value("int32"), "truncated": Value("bool")})


def _read_blocks(path: Path) -> Iterator[dict[str, list]]:
    """The split's examples in blocks of some ten thousand, as columns: pyarrow's JSON reader parses only the
    columns an example is encoded from (the others are never read into Python)."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    schema = pa.schema([(name, pa.bool_() if name == "document" else pa.string()) for name in ENCODED_FROM])
    reader = pa_json.open_json(path, read_options=pa_json.ReadOptions(block_size=BLOCK_BYTES),
                               parse_options=pa_json.ParseOptions(explicit_schema=schema,
                                                                  unexpected_field_behavior="ignore"))
    for block in reader:
        yield block.to_pydict()


def _line_count(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: lines.read(1 << 24), b""))


def tokenized_split(path: Path, encoder: ExampleEncoder, *, progress: bool = True) -> Dataset:
    """The split at `path` encoded, as a memory-mapped datasets.Dataset, from the cache when it is there.

    One process streams the split through the encoder block by block into one Arrow file, and the tokenizer's own
    threads use every core: worker processes would each tokenize on one thread and copy every token through
    pickles and an extra Arrow file (1.15x the time and 2.7x the memory; benchmarks/bench_tokenize.py). Memory
    stays flat in the number of examples. The cache lives beside the data, in `tokenized/<split>-<key>/`, built
    in a temp folder and renamed, so a killed run leaves no half-written cache; caches of the same split under
    other keys are removed."""
    import pyarrow as pa
    from datasets import Dataset
    from tqdm.auto import tqdm

    if not path.exists():
        raise UserError(f"{path}: no prepared data; run `python prepare_data.py` first")
    stat = path.stat()
    # prepare_data.py writes a split by renaming a new file into place: a new inode and change time, which no
    # copy that keeps the modification time can fake
    key = fingerprint(encoder.key(), os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino,
                      stat.st_ctime_ns)
    root = path.parent / TOKENIZED_DIR
    target = root / f"{path.stem}-{key}"
    if (target / ENCODED_FILE).exists():
        return Dataset.from_file(str(target / ENCODED_FILE))
    if stat.st_size == 0:
        raise UserError(f"{path}: no examples (is the input too small, or are the filters too strict?)")
    remove_stale_temps(root)  # left by a killed run
    staging = root / f".{target.name}{TEMP_MARK}{os.getpid()}"
    schema = encoded_features().arrow_schema
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with (tqdm(total=_line_count(path) if progress else None, unit=" examples", desc=f"tokenizing {path.name}",
                   disable=not progress) as bar,
              pa.OSFile(str(staging / ENCODED_FILE), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer):
            for block in _read_blocks(path):
                writer.write_batch(pa.RecordBatch.from_pydict(encoder(block), schema=schema))
                bar.update(len(block["question"]))
        for old in root.glob(f"{path.stem}-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:  # another run with the same key got there first: its cache is the same
            if not (target / ENCODED_FILE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Dataset.from_file(str(target / ENCODED_FILE))


# ------------------------------------------------------------------------------------------------ batches
@dataclass
class AnswerOnlyCollator:
    """Pads a batch to its longest example: input ids with the pad token, labels with IGNORE_INDEX (by
    position, never by comparing with the pad id, which would mask an EOS that equals it).

    With `answer_only_logits` the batch also asks the model for logits only from the first position that
    predicts an answer token on (`logits_to_keep`): the output layer (49,152 x 576 for SmolLM2, a fifth of
    the forward FLOPs) and its softmax then skip most prompt positions, which carry no loss."""

    pad_token_id: int
    answer_only_logits: bool = False

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            ids, prompt = torch.tensor(feature["input_ids"]), feature["prompt_length"]
            input_ids[row, :len(ids)] = ids
            labels[row, prompt:len(ids)] = ids[prompt:]
            attention_mask[row, :len(ids)] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        if self.answer_only_logits:
            # the logit at position p predicts token p + 1: keep them from the shortest prompt's last token on
            batch["logits_to_keep"] = width - min(f["prompt_length"] for f in features) + 1
        return batch


def answer_only_loss(outputs: ModelOutput, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens, for the Trainer's `compute_loss_func`. The logits may cover only
    the last positions of the batch (`logits_to_keep`): each is paired with the label it predicts, the next
    one (the labels are shifted, not the logits: slicing 49,152-wide logits would copy them, and their
    gradient). Under gradient accumulation the sum is divided by the answer tokens of the whole accumulated
    batch, as the models' own loss does."""
    logits = outputs.logits
    kept = logits.shape[1]
    targets = torch.nn.functional.pad(labels[:, labels.shape[1] - kept + 1:], (0, 1), value=IGNORE_INDEX)
    total = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten().to(logits.device),
                                              ignore_index=IGNORE_INDEX, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
    return total / count


def contiguous_output_layer_input(model: PreTrainedModel) -> None:
    """With `logits_to_keep` the output layer gets a strided slice of the hidden states, and a strided 3-D input
    turns its matrix product into a batched one against a broadcast weight (30% slower on a 2-core AVX2 CPU,
    forward and backward): a contiguous copy of the slice costs far less."""
    model.get_output_embeddings().register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))


def perplexity(loss: float | None) -> float | None:
    """exp(loss), capped; None where no loss was measured."""
    return None if loss is None else math.exp(min(loss, 50.0))
