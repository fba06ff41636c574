"""The index of every product of the prepared data: it finds the product a question names, and says when none fits.

The index holds every training-split product (`rag.index_splits` adds the others for production), not only the
run's memorized catalog, so a question about any product of the data gets its record. It is built once per
prepared data set, saved beside it (`<data.output_dir>/index/<key>/`: the bm25s index memory-mapped, the byte
offsets of each product's line), and reused by every process; the key changes when a split file is rewritten, so
new data gets a new index. Titles and descriptions are read from the split files when a question needs them,
never held in memory.

A question is matched in three steps:

1. candidates: the products whose title or short form (without its qualifiers and subtitle) the question names
   word for word, found by a hash of the title's words, then the best ranked by `rag.retriever` over the title
   the question names (a question in a known phrasing: its own words, not the phrasing's "what", "about"):
   `bm25` scores the titles' words with BM25 (bm25s), a word no title holds looked up by its spellings within
   one edit; `minilm` ranks them by the cosine similarity of MiniLM sentence embeddings of question and title
   (small data only: the embeddings are computed and held for every title). Among the CANDIDATES the title that
   the question spells out word for word wins (the longest, when several do; a title's short form counts too):
   bag-of-words confuses titles that reorder the same words;
2. the fit of each candidate: its title coverage (the IDF-weighted share of the title's distinct words that the
   question holds) and its question coverage (the same share of the question's own words, those that are not
   the words every question is phrased with, that belong to the whole title or its short form, without its
   qualifiers and subtitle, where the question spells one out word for word). A word counts as found when it is
   spelled within one edit (a typo) for words of 4 letters or more. The match score is the larger of the two: a
   question that names the whole title, with words around it, has title coverage 1; one that drops a subtitle or
   a format qualifier has question coverage 1. A question that names only the title's first words has neither:
   "Home Island" may be the album "Home Island by The Kingdoms [Audio CD]" or a product the index lacks, so the
   answer names the closest titles instead of describing one; a question about a product that is not indexed has
   both low (only some words are shared);
3. acceptance: a candidate in conflict with the question is never accepted: the question holds a word the title
   lacks while the title holds one the question lacks ("(VHS)" asked of a "(DVD)" title, another size or colour:
   such words are common, so their weight alone would hardly lower the score), or, where the question is asked in
   one of the known phrasings and so names its title exactly, that title holds a word the candidate lacks (a
   longer title: "Forgotten Valley: Crimson Kingdoms" is not "Forgotten Valley"). Otherwise a score of at least the
   threshold (`rag.min_score`, or the one calibrated on the validation split,
   `calibration.calibrate`) is a match, unless another candidate fits the question as well (within
   AMBIGUITY_MARGIN) and the question names neither the whole title nor more of it than of the other: then the
   question is ambiguous, and the answer lists those titles instead of picking one.
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import weakref
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
from rapidfuzz import process
from rapidfuzz.distance import OSA

from product_qa.answering.metrics import words
from product_qa.configurator import fingerprint
from product_qa.data.prompts import HELD_OUT_PHRASINGS, TRAINING_PHRASINGS
from product_qa.data.question_forms import dropped_qualifiers
from product_qa.errors import UserError
from product_qa.hashing import key_hash
from product_qa.io_utils import TEMP_MARK, atomic_outputs, make_folder, remove_stale_temps
from product_qa.modeling import load_sentence_encoder
from product_qa.reporting import terminal_text
from product_qa.settings import comma_separated

if TYPE_CHECKING:
    from config import DataConfig, RagConfig

NO_MATCH_MESSAGE = "No matching product was found in the catalog for this question."
CANDIDATES = 10  # top-ranked titles checked for the best fit
SUGGESTIONS = 3  # closest titles named when a question is ambiguous or matches nothing
AMBIGUITY_MARGIN = 0.02  # candidates whose scores differ by less fit a question equally well
DEFAULT_MIN_SCORE = 0.85  # the threshold where none was set or calibrated (an index of a list, no validation split)
FUZZY_MIN_LETTERS = 4  # shorter words must be spelled exactly: one edit turns "cat" into "car"
INDEX_VERSION = 8  # bump when the index's files change: old indexes are then rebuilt
INDEX_DIR = "index"  # under data.output_dir
# The words questions are phrased with ("what", "tell", "about", "o que é"): a question's own words are the others.
PHRASING_WORDS = frozenset(w for p in TRAINING_PHRASINGS + HELD_OUT_PHRASINGS
                           for w in words(p.template.replace("{title}", " ")))


def _phrasing_pattern(template: str) -> re.Pattern:
    """A phrasing as a pattern that captures the title: any case and spacing, the closing mark optional."""
    before, _, after = template.partition("{title}")
    spaced = r"\s+".join(re.escape(word) for word in before.split()) + (r"\s+" if before.strip() else "")
    closing = r"\s+".join(re.escape(word) for word in after.strip().rstrip(".?").split())
    return re.compile(rf"\s*{spaced}(?P<title>.+?)\s*{closing}[\s.?!]*", re.IGNORECASE)


# The title part of a question asked in one of the phrasings: what a person named, without the phrasing's words.
# The longest phrasings first: "What is the description of {title}?" before "What is {title}?".
_ASKED_TITLE = tuple(_phrasing_pattern(template) for template in sorted(
    (p.template for p in TRAINING_PHRASINGS + HELD_OUT_PHRASINGS), key=len, reverse=True))
ARTICLES = frozenset(("the", "a", "an", "o", "os", "as", "um", "uma"))  # "What is the X?" names X
_SCORE_CELLS = 1 << 24  # question x title similarities computed at a time by minilm (64 MiB of float32)
_ENCODE_BATCH = 64


@dataclass(frozen=True)
class Hit:
    uid: str
    title: str
    description: str  # the product's answer text from its example
    score: float  # the match score, in [0, 1]
    matched: bool  # score >= the threshold, and no other product fits as well
    # titles of the products that fit the question as well as this one (an ambiguous question), or, when nothing
    # matched, the closest titles: what the answer suggests
    suggestions: tuple[str, ...] = ()
    ambiguous: bool = False  # several products fit the question as well: suggestions names them
    conflict: bool = False  # the question names a word this product's title lacks, and so another product


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The column indexes of the k highest scores of each row, best first."""
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


# ----------------------------------------------------------------------------------------------- records
class _FileRecords:
    """The indexed products, read from the split files by byte offset when asked for."""

    def __init__(self, paths: list[Path], files: np.ndarray, offsets: np.ndarray) -> None:
        self._files, self._offsets = files, offsets
        # opened at once, so a split rewritten later is not read at this index's offsets; closed with the object
        self._handles = [os.open(path, os.O_RDONLY) for path in paths]
        weakref.finalize(self, _close_all, list(self._handles))

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index: int) -> dict:
        fd, offset, chunk = self._handles[int(self._files[index])], int(self._offsets[index]), b""
        while not chunk.endswith(b"\n"):
            piece = os.pread(fd, 65536, offset + len(chunk))
            if not piece:
                break
            chunk += piece
            if b"\n" in piece:
                break
        return orjson.loads(chunk.partition(b"\n")[0])


def _close_all(handles: list[int]) -> None:
    for handle in handles:
        os.close(handle)


# ----------------------------------------------------------------------------------------------- rankers
class _Bm25:
    """BM25 over the titles' words (bm25s), and the words' document frequencies, which the match score weighs."""

    def __init__(self, bm25: object) -> None:
        self.bm25 = bm25
        indptr = bm25.scores["indptr"]
        self._df = np.diff(np.asarray(indptr))  # the postings of a word are the titles that hold it
        self._n = int(bm25.scores["num_docs"])
        self._spellings: dict[tuple[int, str, int], list[str]] | None = None  # built at the first typo

    @classmethod
    def from_ids(cls, title_ids: list[list[int]], vocab: dict[str, int]) -> _Bm25:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG on import
        bm25 = bm25s.BM25()
        bm25.index((title_ids, vocab), create_empty_token=False, show_progress=False)
        return cls(bm25)

    @classmethod
    def load(cls, folder: Path) -> _Bm25:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)
        return cls(bm25s.BM25.load(str(folder), mmap=True, show_progress=False))

    def holds(self, word: str) -> bool:
        """Some indexed title holds `word`."""
        return word in self.bm25.vocab_dict

    def idf(self, word: str) -> float:
        """log(1 + N / (1 + df)): rare words (names, models, sizes) weigh most; a word no title holds, most."""
        token = self.bm25.vocab_dict.get(word)
        df = int(self._df[token]) if token is not None else 0
        return math.log(1 + self._n / (1 + df))

    def spellings(self, word: str) -> list[str]:
        """The indexed words within one edit of `word`, a word no title holds: what its typo may have meant. A
        word one edit away keeps the first or the last letter, so only the indexed words of a neighbouring length
        that share one of them are compared (a few thousand of a million-word vocabulary)."""
        if len(word) < FUZZY_MIN_LETTERS:
            return []
        if self._spellings is None:
            self._spellings = {}
            for known in self.bm25.vocab_dict:
                if len(known) >= FUZZY_MIN_LETTERS:
                    self._spellings.setdefault((0, known[0], len(known)), []).append(known)
                    self._spellings.setdefault((-1, known[-1], len(known)), []).append(known)
        pool = {known for end in (0, -1) for length in (len(word) - 1, len(word), len(word) + 1)
                for known in self._spellings.get((end, word[end], length), ())}
        return [known for known, _, _ in process.extract(word, sorted(pool), scorer=OSA.distance, score_cutoff=1,
                                                         limit=None)]

    def candidates(self, questions: list[str], k: int) -> np.ndarray:
        """The indexes of the k best titles for each question, best first; a word no title holds is looked up
        by its spellings within one edit (a typo). Scored through bm25s's token ids: its retrieve() fails on a
        question without one indexed word ("What is the capital of France?"), which here simply scores every
        title 0."""
        vocab = self.bm25.vocab_dict
        return np.concatenate([
            _top_k(self.bm25.get_scores_from_ids(
                [vocab[w] for w in words(q) if w in vocab]
                + [vocab[known] for w in words(q) if w not in vocab for known in self.spellings(w)])[None], k)
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


class _Names:
    """Every title and its short form (no qualifiers, no subtitle), by a hash of its words: the products a question
    names word for word, found however long their titles are. BM25 ranks a long title far down when the question
    names only its one-word short form ("Hidden" of "Hidden: Betrayed, Exploited and Forgotten. How One Boy...")."""

    def __init__(self, keys: np.ndarray, products: np.ndarray) -> None:
        self._keys, self._products = keys, products  # sorted by key

    @staticmethod
    def keys_of(title: str) -> set[int]:
        return {name_key(title), name_key(dropped_qualifiers(title) or title)}

    @classmethod
    def of(cls, keys: array, products: array) -> _Names:
        """From (key, product) pairs in any order."""
        keys_np, products_np = np.frombuffer(keys, dtype=np.uint64), np.frombuffer(products, dtype=np.int64)
        order = np.argsort(keys_np, kind="stable")
        return cls(keys_np[order], products_np[order])

    @classmethod
    def load(cls, folder: Path) -> _Names:
        return cls(np.load(folder / "names.npy", mmap_mode="r"), np.load(folder / "named.npy", mmap_mode="r"))

    def save(self, folder: Path) -> None:
        np.save(folder / "names.npy", self._keys)
        np.save(folder / "named.npy", self._products)

    def named(self, name: str) -> list[int]:
        """The products whose title or short form is `name`, word for word (at most CANDIDATES)."""
        key = np.uint64(name_key(name))
        start = int(np.searchsorted(self._keys, key, side="left"))
        end = int(np.searchsorted(self._keys, key, side="right"))
        return [int(i) for i in self._products[start:min(end, start + CANDIDATES)]]


def name_key(title: str) -> int:
    """A title's words, hashed: equal for any case and punctuation."""
    return key_hash(" ".join(words(title)))


def _vocabulary_ids(title_words: list[str], vocab: dict[str, int]) -> list[int]:
    return [vocab.setdefault(w, len(vocab)) for w in title_words]


# ------------------------------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class Fit:
    """How well one candidate title fits a question."""

    index: int
    score: float  # max(title coverage, question coverage)
    whole_title: bool  # the question holds every word of the title
    spelled: int  # words of the title, or of its short form (no qualifier, no subtitle), the question spells out
    # the question names something the title lacks and the title something the question lacks ("(VHS)" asked of
    # "(DVD)", another colour, another size): another product, however many words the two share
    conflict: bool = False


def _found(word: str, others: set[str], typos: set[str]) -> bool:
    """`word` is in `others`, or one of them is a typo of it: a question word no title holds, within one edit of it
    (a letter dropped, added or changed, or two neighbours swapped), both of FUZZY_MIN_LETTERS letters or more.
    A word some title holds is taken as meant ("orchards" is not a typo of "orchard")."""
    if word in others:
        return True
    return len(word) >= FUZZY_MIN_LETTERS and any(
        other in typos and abs(len(other) - len(word)) <= 1 and len(other) >= FUZZY_MIN_LETTERS
        and OSA.distance(word, other, score_cutoff=1) <= 1 for other in others)


class ProductIndex:
    """The indexed products, searchable by question. `records[i]` is product i: uid, title, answer."""

    def __init__(self, records: Sequence[dict], bm25: _Bm25, ranker: _Bm25 | _MiniLMRanker, names: _Names,
                 min_score: float, calibration: dict | None = None) -> None:
        self.records, self._bm25, self._ranker, self._names = records, bm25, ranker, names
        self.min_score, self.calibration = min_score, calibration

    def __len__(self) -> int:
        return len(self.records)

    @property
    def uids(self) -> set[str]:
        """Every indexed uid (reads every record: for tests and small indexes)."""
        return {self.records[i]["uid"] for i in range(len(self.records))}

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, products: list[dict], rag: RagConfig) -> ProductIndex:
        """An index of `products` (dicts with uid, title and answer; the first of each uid is kept), in memory."""
        by_uid: dict[str, dict] = {}
        for product in products:
            by_uid.setdefault(product["uid"], product)
        unique = list(by_uid.values())
        if not unique:
            raise UserError("the RAG index needs at least one training product")
        vocab: dict[str, int] = {}
        bm25 = _Bm25.from_ids([_vocabulary_ids(words(p["title"]), vocab) for p in unique], vocab)
        keys, named = array("Q"), array("q")
        for number, product in enumerate(unique):
            for key in _Names.keys_of(product["title"]):
                keys.append(key)
                named.append(number)
        return cls._with_ranker(unique, bm25, _Names.of(keys, named), rag, None)

    @classmethod
    def _with_ranker(cls, records: Sequence[dict], bm25: _Bm25, names: _Names, rag: RagConfig,
                     calibration: dict | None) -> ProductIndex:
        ranker = bm25 if rag.retriever == "bm25" else _MiniLMRanker(
            [records[i]["title"] for i in range(len(records))], rag.encoder, rag.index_dir)
        threshold = rag.min_score if rag.min_score is not None else (
            calibration["threshold"] if calibration else DEFAULT_MIN_SCORE)
        return cls(records, bm25, ranker, names, threshold, calibration)

    @classmethod
    def open(cls, data: DataConfig, rag: RagConfig, *, progress: bool = False) -> ProductIndex:
        """The index of the prepared data's `rag.index_splits`, from its folder when it is there, else built (and
        calibrated on the validation split) and saved for every later process."""
        from product_qa.data.examples import output_paths

        paths = output_paths(data)
        splits = comma_separated(rag.index_splits)
        files = [paths[s] for s in splits]
        for path in files:
            if not path.exists():
                raise UserError(f"{path}: no prepared data; run `python prepare_data.py` first")
        # calibrated on the validation split, unless the index holds it (then no product of it is unknown)
        validation = None if "validation" in splits else paths["validation"]
        key = fingerprint(INDEX_VERSION, [_file_identity(p) for p in files],
                          validation and _file_identity(validation), rag.max_false_accept)
        root = Path(data.output_dir) / INDEX_DIR
        target = root / f"{'+'.join(splits)}-{key}"
        if not (target / "meta.json").exists():
            _build_folder(files, validation, rag, root, target, progress)
        meta = orjson.loads((target / "meta.json").read_bytes())
        records = _FileRecords(files, np.load(target / "files.npy", mmap_mode="r"),
                               np.load(target / "offsets.npy", mmap_mode="r"))
        return cls._with_ranker(records, _Bm25.load(target / "bm25"), _Names.load(target), rag,
                                meta.get("calibration"))

    # ----------------------------------------------------------------------------------------- searching
    def search(self, questions: list[str]) -> list[Hit]:
        """The best product for each question, with its match score and whether it is accepted."""
        if not questions:
            return []
        return [self._hit(question, row) for question, row in zip(questions, self._candidates(questions), strict=True)]

    def _candidates(self, questions: list[str]) -> list[list[int]]:
        """Each question's candidates: the products whose title or short form it names word for word, then the
        ranker's best for the title it names (a question in a known phrasing: its own words, not the phrasing's)."""
        named = [asked_title(q) for q in questions]
        ranked = self._ranker.candidates([n or q for n, q in zip(named, questions, strict=True)],
                                         min(CANDIDATES, len(self.records)))
        candidates = []
        for name, row in zip(named, ranked, strict=True):
            exact = self._names.named(name) if name else []
            candidates.append(exact + [int(i) for i in row if int(i) not in exact][:CANDIDATES - len(exact)])
        return candidates

    def fits(self, question: str, candidates: list[int]) -> list[Fit]:
        """Each candidate's fit to the question, best first: the higher score, then a title the question holds
        whole, then one it spells out word for word (the longest), then the ranker's order."""
        question_words = words(question)
        asked = set(question_words)
        named = asked_title(question)
        # the words the person chose: the named title's (all of them: "The Witch of" keeps its "of"), or, for a
        # question in no known phrasing, those that are not the phrasings' words
        own = {w for w in words(named) if w not in ARTICLES} if named else \
            {w for w in asked if w not in PHRASING_WORDS and w not in ARTICLES}
        own = own or asked
        typos = {w for w in asked if not self._bm25.holds(w)}
        spelled = f" {' '.join(question_words)} "
        fits = []
        for rank, index in enumerate(candidates):
            title = self.records[index]["title"]  # one read from disk per candidate
            title_words = words(title)
            distinct = set(title_words)
            title_total = sum(self._bm25.idf(w) for w in distinct)
            title_cover = sum(self._bm25.idf(w) for w in distinct if _found(w, asked, typos)) / title_total \
                if title_total else 0.0
            # the longest of the title's names (the whole title, its short form) that the question spells out
            named_form = max((form for form in (title_words, words(dropped_qualifiers(title) or ""))
                              if form and f" {' '.join(form)} " in spelled), key=len, default=[])
            own_total = sum(self._bm25.idf(w) for w in own)
            own_cover = sum(self._bm25.idf(w) for w in own if w in named_form) / own_total if own_total else 0.0
            # where the question's phrasing says which title was asked, any word of it the title lacks is enough
            conflict = (title_cover < 1.0 - 1e-9 or named is not None) and any(
                not _found(w, distinct, distinct) for w in own)
            fits.append((Fit(index, max(title_cover, own_cover), title_cover >= 1.0 - 1e-9, len(named_form), conflict),
                         -rank))
        fits.sort(key=lambda f: (not f[0].conflict, round(f[0].score, 6), f[0].whole_title, f[0].spelled, f[1]),
                  reverse=True)
        return [f for f, _ in fits]

    def _hit(self, question: str, candidates: list[int]) -> Hit:
        fits = self.fits(question, candidates)
        return self.decide(fits, self.min_score)

    def decide(self, fits: list[Fit], threshold: float) -> Hit:
        """The hit for a question whose candidates fit as `fits` (best first), accepted at `threshold`."""
        best = fits[0]
        record = self.records[best.index]
        tied = [f for f in fits[1:] if f.score >= threshold and f.score >= best.score - AMBIGUITY_MARGIN
                and not f.conflict]
        # a question that names a whole title, or spells out more of one title than of any other, is not ambiguous
        named = best.whole_title or best.spelled > max((f.spelled for f in tied), default=0)
        ambiguous = bool(tied) and not named and not best.conflict
        matched = best.score >= threshold and not ambiguous and not best.conflict
        shown = [best, *tied][:SUGGESTIONS] if ambiguous else fits[:SUGGESTIONS]
        return Hit(record["uid"], record["title"], record["answer"], best.score, matched,
                   () if matched else tuple(self.records[f.index]["title"] for f in shown), ambiguous, best.conflict)

    def ranked(self, questions: list[str]) -> list[list[Fit]]:
        """Every question's fits (for calibration: one ranking, many thresholds)."""
        return [self.fits(q, row) for q, row in zip(questions, self._candidates(questions), strict=True)]


def asked_title(question: str) -> str | None:
    """The title a question names when it is asked in one of the phrasings ("What is {title}?"), else None."""
    for pattern in _ASKED_TITLE:
        if (found := pattern.fullmatch(question)) is not None:
            return found["title"]
    return None


def _file_identity(path: Path) -> list:
    """What tells a rewritten split from the one an index was built on: prepare_data.py writes a split by
    renaming a new file into place (a new inode and change time, which no copy that keeps mtime can fake)."""
    if not path.exists():
        return [os.path.abspath(path), None]
    stat = path.stat()
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]


def _scan(files: list[Path], progress: bool
          ) -> tuple[np.ndarray, np.ndarray, list[list[int]], dict[str, int], _Names]:
    """One pass over the split files: each product's file and byte offset (the first line of each uid), its
    title's word ids, and its names' keys. Only the titles' words stay in memory."""
    from tqdm import tqdm

    file_of, offsets, title_ids, vocab, seen = [], [], [], {}, set()
    keys, named = array("Q"), array("q")
    for number, path in enumerate(files):
        with open(path, "rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                              desc=f"indexing {path.name}", disable=not progress) as bar:
            offset = 0
            for line in handle:
                if line.strip():
                    record = orjson.loads(line)
                    uid = key_hash(record["uid"])
                    if uid not in seen:
                        seen.add(uid)
                        for key in _Names.keys_of(record["title"]):
                            keys.append(key)
                            named.append(len(offsets))
                        file_of.append(number)
                        offsets.append(offset)
                        title_ids.append(_vocabulary_ids(words(record["title"]), vocab))
                offset += len(line)
                bar.update(len(line))
    return (np.array(file_of, dtype=np.uint8), np.array(offsets, dtype=np.int64), title_ids, vocab,
            _Names.of(keys, named))


def _build_folder(files: list[Path], validation: Path | None, rag: RagConfig, root: Path, target: Path,
                  progress: bool) -> None:
    """Build the index of `files` in a temp folder, calibrate it on `validation` (if any), and rename it into
    place; older indexes of the same splits are removed (an index of other splits, used beside it, stays)."""
    make_folder(root, "index folder")
    remove_stale_temps(root)
    staging = root / f".{target.name}{TEMP_MARK}{os.getpid()}"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        file_of, offsets, title_ids, vocab, names = _scan(files, progress)
        if not len(offsets):
            raise UserError(f"{files[0]}: no products to index")
        bm25 = _Bm25.from_ids(title_ids, vocab)
        del title_ids
        bm25.bm25.save(str(staging / "bm25"), show_progress=False)
        np.save(staging / "files.npy", file_of)
        np.save(staging / "offsets.npy", offsets)
        names.save(staging)
        records = _FileRecords(files, file_of, offsets)
        index = ProductIndex(records, bm25, bm25, names, DEFAULT_MIN_SCORE)
        from product_qa.answering.calibration import calibrate

        calibration = calibrate(index, validation, rag.max_false_accept) if validation else None
        del index, records  # their file handles are closed
        (staging / "meta.json").write_bytes(orjson.dumps(
            {"version": INDEX_VERSION, "files": [str(p) for p in files], "products": len(offsets),
             "calibration": calibration}, option=orjson.OPT_INDENT_2))
        splits = target.name.rpartition("-")[0]
        for old in root.glob(f"{splits}-*"):
            if old.is_dir() and old.name != target.name and old.name.rpartition("-")[0] == splits:
                shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:  # another process with the same key got there first: its index is the same
            if not (target / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def source_line(hit: Hit) -> str:
    """The line naming an answer's product, one line that a terminal shows as written (the uid is the data's own,
    never cleaned: it may hold escape sequences)."""
    return f"Source: {terminal_text(hit.title)} (uid {terminal_text(hit.uid)})"
