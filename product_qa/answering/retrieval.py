"""The RAG baseline's index of the training products: it finds the product a question names.

A question such as "What do you know about <title>?" is matched to one indexed product in two steps:

1. ranking (`rag.retriever`): `bm25` scores the titles' words with BM25 (the bm25s library); `minilm` ranks them by
   the cosine similarity of MiniLM sentence embeddings of question and title. Every word is kept, stopwords
   included: BM25's IDF already discounts "the" and "of", and they tell "The Forgotten Kingdom" from "Forgotten
   Kingdom (DVD)". Bag-of-words and embeddings both confuse titles that reorder the same words ("Archives of
   Lisbon: A Cookbook of Istanbul" and "Archives of Istanbul: A Cookbook of Lisbon"), so among the top
   CANDIDATES the title that the question spells out word for word wins (the longest, when several do);
2. the match score, the same for both retrievers: the IDF-weighted share of the retrieved title's distinct words
   that the question holds. A question naming a title verbatim scores 1.0; a question about another product
   whose title shares most words ("... Ages 2-5" for "... Ages 2-6", another brand) scores less. Below
   `rag.min_score` the product does not count as a match and the answer is NO_MATCH_MESSAGE. On the bundled
   sample, seen titles asked with the held-out phrasings score 1.0 and the best match of a test-split
   (unseen) product scores 0.2-0.83, so the default 0.85 separates them. The score cannot tell an indexed
   title from a longer one that contains all its words ("Tides of New Orleans" in "Tides of New Orleans: A
   Novel"): that scores 1.0 too.

The minilm title embeddings are cached under `rag.index_dir` as a .npy keyed by the encoder and every title.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from product_qa.answering.metrics import words
from product_qa.configurator import fingerprint
from product_qa.errors import UserError
from product_qa.io_utils import atomic_outputs
from product_qa.modeling import load_sentence_encoder

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from config import RagConfig

NO_MATCH_MESSAGE = "No matching product was found in the catalog for this question."
CANDIDATES = 10  # top-ranked titles checked for one the question spells out verbatim
_SCORE_CELLS = 1 << 24  # question x title similarities computed at a time by minilm (64 MiB of float32)
_ENCODE_BATCH = 64


@dataclass(frozen=True)
class Hit:
    uid: str
    title: str
    description: str  # the product's answer text from its example
    score: float  # IDF-weighted share of the title's words found in the question, in [0, 1]
    matched: bool  # score >= rag.min_score


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The column indexes of the k highest scores of each row, best first."""
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


class _Bm25Ranker:
    def __init__(self, title_words: list[list[str]]) -> None:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG on import
        self._bm25 = bm25s.BM25()
        self._bm25.index(title_words, create_empty_token=False, show_progress=False)

    def candidates(self, questions: list[str], k: int) -> np.ndarray:
        """The indexes of the k best titles for each question, best first. Scored through bm25s's token ids:
        its retrieve() fails on a question without one indexed word ("What is the capital of France?"), which
        here simply scores every title 0."""
        vocab = self._bm25.vocab_dict
        return np.concatenate([
            _top_k(self._bm25.get_scores_from_ids([vocab[w] for w in words(q) if w in vocab])[None], k)
            for q in questions])


class _MiniLMRanker:
    def __init__(self, titles: list[str], encoder_name: str, index_dir: str) -> None:
        self._encoder = load_sentence_encoder(encoder_name)
        path = Path(index_dir) / f"titles-{fingerprint(encoder_name, titles)}.npy"
        if path.exists():
            self._titles = np.load(path)
        else:
            self._titles = self._encode(titles)
            with atomic_outputs({"npy": path}) as handles:
                np.save(handles["npy"], self._titles)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._encoder.encode(texts, batch_size=_ENCODE_BATCH, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

    def candidates(self, questions: list[str], k: int) -> np.ndarray:
        """The indexes of the k titles most similar to each question, best first; the similarity matrix is
        built a block of questions at a time so a large catalog never needs questions x titles in memory."""
        embedded = self._encode(questions)
        block = max(1, _SCORE_CELLS // len(self._titles))
        return np.concatenate([_top_k(embedded[start:start + block] @ self._titles.T, k)
                               for start in range(0, len(embedded), block)])


class ProductIndex:
    """The training products, one per uid, searchable by question."""

    def __init__(self, products: list[dict], ranker: _Bm25Ranker | _MiniLMRanker, min_score: float) -> None:
        self.products = products
        self._ranker = ranker
        self._min_score = min_score
        self._title_words = [words(p["title"]) for p in products]
        self._phrases = [" ".join(tokens) for tokens in self._title_words]
        self._distinct = [tuple(dict.fromkeys(tokens)) for tokens in self._title_words]
        df = Counter(w for distinct in self._distinct for w in distinct)
        self._idf = {w: math.log(1 + len(products) / (1 + n)) for w, n in df.items()}
        self.uids = {p["uid"] for p in products}

    @classmethod
    def build(cls, products: list[dict], rag: RagConfig) -> ProductIndex:
        """Index `products` (dicts with uid, title and answer; the first of each uid is kept) with the
        retriever `rag.retriever`."""
        by_uid: dict[str, dict] = {}
        for product in products:
            by_uid.setdefault(product["uid"], product)
        unique = list(by_uid.values())
        if not unique:
            raise UserError("the RAG index needs at least one training product")
        titles = [p["title"] for p in unique]
        ranker = (_Bm25Ranker([words(t) for t in titles]) if rag.retriever == "bm25"
                  else _MiniLMRanker(titles, rag.encoder, rag.index_dir))
        return cls(unique, ranker, rag.min_score)

    def search(self, questions: list[str]) -> list[Hit]:
        """The best product for each question, with its match score."""
        if not questions:
            return []
        candidates = self._ranker.candidates(questions, min(CANDIDATES, len(self.products)))
        return [self._hit(question, [int(i) for i in row]) for question, row in zip(questions, candidates, strict=True)]

    def _hit(self, question: str, candidates: list[int]) -> Hit:
        question_words = words(question)
        spelled = f" {' '.join(question_words)} "
        verbatim = [i for i in candidates if self._phrases[i] and f" {self._phrases[i]} " in spelled]
        best = max(verbatim, key=lambda i: len(self._title_words[i])) if verbatim else candidates[0]
        score = self._match_score(set(question_words), best)
        product = self.products[best]
        return Hit(product["uid"], product["title"], product["answer"], score, score >= self._min_score)

    def _match_score(self, question_words: set[str], index: int) -> float:
        """sum(idf of the title's words in the question) / sum(idf of the title's words), with
        idf(w) = log(1 + N / (1 + df(w))) over the N indexed titles: rare words (names, models, sizes) weigh
        most, so missing one of them costs more than missing "the". Both sums run in the same order, so a
        question holding every word scores exactly 1.0. A title without words scores 0."""
        title = self._distinct[index]
        total = sum(self._idf[w] for w in title)
        return sum(self._idf[w] for w in title if w in question_words) / total if total else 0.0


def context_text(hit: Hit, tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> str:
    """The hit's description cut to at most max_tokens tokens of the model's tokenizer, for the prompt. A cut
    inside a multi-byte character decodes to U+FFFD, which is dropped."""
    ids = tokenizer(hit.description, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return hit.description
    return tokenizer.decode(ids[:max(max_tokens, 0)]).rstrip("\ufffd")


def source_line(hit: Hit) -> str:
    return f"Source: {hit.title} (uid {hit.uid})"
