"""Token counts on the reservoir sample, with the model's tokenizer, and the terms of its word clouds."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from itertools import compress
from typing import TYPE_CHECKING

import numpy as np

from product_qa.analysis.cleaning_trace import FIELDS
from product_qa.analysis.sketches import HeavyHitters
from product_qa.analysis.text import count_terms
from product_qa.data.prompts import TRAINING_PHRASINGS, build_example, pick_phrasing, resolve_template
from product_qa.data.selection import dedupe_keys

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from config import AnalysisConfig, Config, DataConfig
    from product_qa.analysis.statistics import SampledRecord

CLOUD_WORDS = 200  # words drawn in each word cloud
_CLOUD_CHUNK = 5000  # sampled records tokenized at a time for the word clouds


@dataclass
class TokenFigures:
    lengths: dict[str, np.ndarray]  # "title", "content", "question_answer" (empty when not counted)
    max_length: dict  # the recommended max_length and what it covers
    not_tokenized: dict[str, int]  # per field: texts left out as too long
    sample_size: int = 0  # records whose tokens were counted
    # per record of the token sample, as `lengths` (None: an empty or too long field; a dropped record's example)
    per_record: dict[str, list[int | None]] = field(default_factory=dict)

    @classmethod
    def not_counted(cls, analysis: AnalysisConfig) -> TokenFigures:
        return cls({}, {"coverage_target": analysis.max_length_coverage, "examples_measured": 0},
                   {name: 0 for name in FIELDS})

    def summary_lengths(self, name: str) -> np.ndarray:
        return self.lengths.get(name, np.zeros(0, dtype=np.int64))


def training_lengths(records: list[SampledRecord], tokenizer: PreTrainedTokenizerBase,
                     cfg: Config) -> tuple[np.ndarray, str]:
    """Tokens of each kept record as the training stage encodes it, untruncated: the question in the training
    phrasing prepare picks for it, in the train.prompt_template (the chat template and train.system_prompt by
    default), then the description and EOS. Returns the lengths and the template used."""
    from product_qa.data.encoding import ExampleEncoder  # imports torch: only when tokens are counted

    template = resolve_template(tokenizer, cfg.train.prompt_template)
    encoder = ExampleEncoder(tokenizer, template=template, system_prompt=cfg.train.system_prompt,
                             max_length=sys.maxsize)
    examples = []
    for record in records:
        title_key, _ = dedupe_keys(record.clean_title, record.clean_content)
        examples.append(build_example(record.uid, record.clean_title, record.clean_content,
                                      pick_phrasing(TRAINING_PHRASINGS, title_key, cfg.data.seed)))
    lengths = np.array([e["length"] for e in encoder.encode(examples)], dtype=np.int64)
    return lengths, template


def count_tokens(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros(0, dtype=np.int64)
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return np.array([len(ids) for ids in encoded], dtype=np.int64)


def too_long(record: SampledRecord, name: str, data: DataConfig) -> bool:
    """The field cleans past data.max_title_chars / max_content_chars: preparation drops the record for it."""
    return len(getattr(record, f"clean_{name}")) > getattr(data, f"max_{name}_chars")


def token_figures(sample: list[SampledRecord], tokenizer: PreTrainedTokenizerBase, cfg: Config) -> TokenFigures:
    """Token lengths of the sample's raw titles and contents and of its kept records' training texts, the
    max_length that covers `analysis.max_length_coverage` of the latter (rounded up to a multiple of 8), and how
    many titles and contents were not tokenized: those that preparation drops as too long (one 50 MB description
    took gigabytes to tokenize)."""
    kept = [record.drop_reason is None for record in sample]
    qa, template = training_lengths(list(compress(sample, kept)), tokenizer, cfg)
    lengths, skipped, per_record = {}, {}, {"question_answer": _spread(qa, kept)}
    for name in FIELDS:
        counted = [bool(getattr(record, name)) and not too_long(record, name, cfg.data) for record in sample]
        lengths[name] = count_tokens(tokenizer, [getattr(record, name) for record in compress(sample, counted)])
        skipped[name] = sum(bool(getattr(record, name)) for record in sample) - len(lengths[name])
        per_record[name] = _spread(lengths[name], counted)
    lengths["question_answer"] = qa
    return TokenFigures(lengths, max_length_choice(qa, template, cfg), skipped, len(sample), per_record)


def _spread(values: np.ndarray, measured: list[bool]) -> list[int | None]:
    """The values of the measured records in their places among all, None for the others."""
    found = iter(values.tolist())
    return [next(found) if was else None for was in measured]


def max_length_choice(qa: np.ndarray, template: str, cfg: Config) -> dict:
    """The max_length covering `analysis.max_length_coverage` of the examples' lengths `qa`, and what
    train.max_length covers."""
    coverage = cfg.analysis.max_length_coverage
    choice = {"coverage_target": coverage, "examples_measured": len(qa), "template": template,
              "system_prompt": cfg.train.system_prompt if template == "chat" else None,
              "train_max_length": cfg.train.max_length}
    if len(qa):
        at_coverage = int(np.quantile(qa, coverage, method="inverted_cdf"))
        recommended = -(-at_coverage // 8) * 8
        choice.update({"tokens_at_coverage": at_coverage, "recommended": recommended,
                       "coverage": round(float((qa <= recommended).mean()), 4),
                       "train_max_length_coverage": round(float((qa <= cfg.train.max_length).mean()), 4)})
    return choice


def cloud_terms(sample: list[SampledRecord], analysis: AnalysisConfig) -> dict[str, list[tuple[str, int]]]:
    """The most frequent terms of the sample's cleaned titles and contents, for the word clouds."""
    clouds = {}
    for name in FIELDS:
        counter = HeavyHitters(analysis.counter_capacity)
        texts = [text for record in sample if (text := getattr(record, f"clean_{name}"))]
        for start in range(0, len(texts), _CLOUD_CHUNK):  # chunks: a token list of the whole sample is large
            counter.add(*count_terms(texts[start:start + _CLOUD_CHUNK], analysis.counter_capacity)[0]["words"])
        clouds[name] = [(word.decode("utf-8", "replace"), count) for word, count in counter.top(CLOUD_WORDS)]
    return clouds
