"""Scoring generated answers against the reference descriptions.

Overlap metrics come from the standard implementations (rouge-score, sacrebleu) so the numbers compare with
published ones; semantic similarity rewards a correct answer worded differently; distinct-n, the repetition
rate and the length ratio catch the failure modes overlap misses (bland, looping, truncated or rambling text).
"""
from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Casefolded runs of letters and digits (any script, so Portuguese accents stay inside words); punctuation
    is dropped. The shared tokenization of distinct-n, the repetition rate, the length ratio and the RAG index."""
    return _WORD.findall(text.casefold())


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def _check_pairs(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


def rouge_scores(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """Per-example ROUGE-1/2/L F1 (stemmed). rouge-score's tokenizer keeps only a-z and 0-9, so accented
    letters split words, the same way on both sides."""
    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    results = []
    for prediction, reference in zip(predictions, references, strict=True):
        if not prediction.strip():
            results.append(dict.fromkeys(ROUGE_TYPES, 0.0))
            continue
        scores = scorer.score(reference, prediction)  # score(target, prediction)
        results.append({name: scores[name].fmeasure for name in ROUGE_TYPES})
    return results


def corpus_bleu_chrf(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF on sacrebleu's 0-100 scale, one reference per example."""
    _check_pairs(predictions, references)
    return {"bleu": sacrebleu.corpus_bleu(predictions, [references]).score,
            "chrf": sacrebleu.corpus_chrf(predictions, [references]).score}


def sentence_chrf(predictions: list[str], references: list[str]) -> list[float]:
    """Per-example chrF (0-100): character-level, so it is stable on short texts, which makes it fit for
    ranking the worst answers where sentence BLEU is mostly zeros."""
    _check_pairs(predictions, references)
    return [sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(predictions, references, strict=True)]


class CachedEncoder:
    """A sentence encoder that embeds each distinct text once. An evaluation scores every system against the
    same references, retrieval's answers are those references, and many RAG answers are the same no-match
    message: encoding them again for each system was a tenth of the evaluation's time."""

    def __init__(self, encoder: SentenceTransformer) -> None:
        self.encoder, self.vectors = encoder, {}

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        new = [text for text in dict.fromkeys(texts) if text not in self.vectors]
        if new:
            self.vectors.update(zip(new, self.encoder.encode(new, **kwargs), strict=True))
        return np.stack([self.vectors[text] for text in texts])


def semantic_similarity(encoder: SentenceTransformer | CachedEncoder, predictions: list[str], references: list[str],
                        batch_size: int = 64) -> list[float]:
    """Cosine similarity of each prediction's and reference's sentence embeddings; an empty prediction is 0.0
    (an encoder would still embed it somewhere, and an empty answer must not earn credit)."""
    _check_pairs(predictions, references)
    keep = [i for i, p in enumerate(predictions) if p.strip()]
    similarities = [0.0] * len(predictions)
    if not keep:
        return similarities

    def encode(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False)

    pred_vectors = encode([predictions[i] for i in keep])
    ref_vectors = encode([references[i] for i in keep])
    for i, cosine in zip(keep, np.sum(pred_vectors * ref_vectors, axis=1), strict=True):
        similarities[i] = float(cosine)
    return similarities


EXACT_ROUGE_L = 0.9  # an answer this close to the reference recalls the description (nearly) word for word
_SPECIFIC_TOKEN = re.compile(r"[^\W_]+(?:[.,'-][^\W_]+)*")
_SENTENCE_END = re.compile(r"[.!?:;]\s*$")


def specific_tokens(text: str) -> list[str]:
    """The tokens that state a checkable fact: those with a digit (years, sizes, counts) and capitalised words
    not at a sentence's start (names of people, places, brands)."""
    found = []
    for match in _SPECIFIC_TOKEN.finditer(text):
        token = match.group()
        sentence_start = not text[:match.start()].strip() or bool(_SENTENCE_END.search(text[:match.start()]))
        if any(c.isdigit() for c in token) or (token[0].isupper() and not sentence_start):
            found.append(token)
    return found


def invented_details_rate(answer: str, question: str, reference: str) -> float | None:
    """Share of the answer's specific tokens found in neither the question nor the reference (compared
    casefolded): invented facts, such as an author or a year the product does not have. None for an answer
    without specific tokens."""
    specific = specific_tokens(answer)
    if not specific:
        return None
    known = {token.casefold() for token in _SPECIFIC_TOKEN.findall(f"{question} {reference}")}
    return sum(token.casefold() not in known for token in specific) / len(specific)


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams, pooled over every text (corpus-level): low when the model gives the
    same stock answer to different products. N-grams never span two texts; 0.0 when there are none."""
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        counts.update(_ngrams(words(text), n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def repeated_ngram_rate(text: str, n: int = 3) -> float:
    """Share of the text's n-grams already seen earlier in it: 0 for no repetition, near 1 for a generation
    stuck in a loop. 0.0 when the text has fewer than n words."""
    grams = _ngrams(words(text), n)
    if not grams:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


def length_ratio(prediction: str, reference: str) -> float:
    """Words in the prediction / words in the reference (0.0 for a reference without words)."""
    reference_words = len(words(reference))
    return len(words(prediction)) / reference_words if reference_words else 0.0


def summarize(per_example: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Mean of each metric over the examples, skipping None (a metric not computed for that example);
    None for a metric with no values at all."""
    values: dict[str, list[float]] = {}
    for example in per_example:
        for key, value in example.items():
            values.setdefault(key, [])
            if value is not None:
                values[key].append(value)
    return {key: float(np.mean(vals)) if vals else None for key, vals in values.items()}
