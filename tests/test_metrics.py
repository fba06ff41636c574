"""Each metric on cases worked out by hand, and the similarity metric with the real sentence encoder."""
import pytest

from product_qa.answering import metrics
from product_qa.answering.metrics import (
    corpus_bleu_chrf,
    distinct_n,
    length_ratio,
    repeated_ngram_rate,
    rouge_scores,
    semantic_similarity,
    sentence_chrf,
    summarize,
    words,
)

SENTENCES = ["a soft cotton shirt for summer days", "the red leather shoe with a rubber sole"]


def test_words_lowercases_and_drops_punctuation_but_keeps_accents():
    assert words("Red SHOE, size 42! Descrição: ótimo.") == ["red", "shoe", "size", "42", "descrição", "ótimo"]
    assert words("  \n") == []


def test_rouge_on_one_substituted_word():
    # "the red shoe" vs "the blue shoe": 2 shared unigrams (the, shoe) of 3 on each side -> P = R = F1 = 2/3.
    # Bigrams: (the red, red shoe) vs (the blue, blue shoe) share none -> ROUGE-2 = 0.
    # LCS = "the shoe" (2 words) -> ROUGE-L = 2/3.
    [scores] = rouge_scores(["the red shoe"], ["the blue shoe"])
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == 0.0
    assert scores["rougeL"] == pytest.approx(2 / 3)


def test_rouge_identical_stemmed_and_empty():
    identical, stemmed, empty = rouge_scores(["red shoes", "running shoes", ""], ["red shoes", "run shoe", "shoe"])
    assert identical == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert stemmed == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}  # Porter: running -> run, shoes -> shoe
    assert empty == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_rouge_recall_and_precision_both_count():
    # "shoe" vs "the red shoe": P = 1/1, R = 1/3 -> F1 = 2 * 1 * (1/3) / (1 + 1/3) = 1/2.
    [scores] = rouge_scores(["shoe"], ["the red shoe"])
    assert scores["rouge1"] == pytest.approx(0.5)


def test_pairs_must_line_up():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_scores(["a", "b"], ["a"])


def test_corpus_bleu_and_chrf():
    # Identical texts (7+ words, so 4-grams exist): every n-gram precision is 1, no brevity penalty -> 100.
    assert corpus_bleu_chrf(SENTENCES, SENTENCES) == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    # No shared word -> unigram precision 0 -> BLEU 0; chrF stays low but not necessarily 0 (shared letters).
    disjoint = corpus_bleu_chrf(["xyz qqq www vvv"], SENTENCES[:1])
    assert disjoint["bleu"] == 0.0
    assert 0.0 <= disjoint["chrf"] < 10.0


def test_sentence_chrf_ranks_the_worse_answer_lower():
    identical, close, wrong, empty = sentence_chrf(
        [SENTENCES[0], "a soft cotton shirt for winter", "a steel hammer", ""], [SENTENCES[0]] * 4)
    assert identical == pytest.approx(100.0)
    assert identical > close > wrong > empty == 0.0


def test_distinct_n():
    # ["a a b"]: unigrams a, a, b -> 2 distinct of 3.
    assert distinct_n(["a a b"], 1) == pytest.approx(2 / 3)
    # ["a b a b"]: bigrams ab, ba, ab -> 2 distinct of 3.
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    # Corpus-level: the same answer twice -> bigrams ab, bc, ab, bc -> 2 of 4; none spans "c" + "a".
    assert distinct_n(["a b c", "A B C."], 2) == pytest.approx(0.5)
    assert distinct_n(["a", ""], 2) == 0.0
    assert distinct_n([], 1) == 0.0


def test_repeated_ngram_rate():
    # Trigrams abc, bca, cab, abc -> the last repeats an earlier one: 1 of 4.
    assert repeated_ngram_rate("a b c a b c", 3) == pytest.approx(0.25)
    # A loop: "x y" * 10 -> 19 bigrams, only xy and yx distinct -> 17 of 19 repeated.
    assert repeated_ngram_rate("x y " * 10, 2) == pytest.approx(17 / 19)
    assert repeated_ngram_rate("a b c d e", 3) == 0.0
    assert repeated_ngram_rate("a b", 3) == 0.0  # fewer words than n


def test_length_ratio():
    assert length_ratio("a b", "a b c d") == pytest.approx(0.5)  # 2 words / 4 words
    assert length_ratio("one, two, three!", "one") == pytest.approx(3.0)
    assert length_ratio("", "a b") == 0.0
    assert length_ratio("a b", " ... ") == 0.0  # a reference without words


def test_summarize_skips_none():
    summary = summarize([{"rouge1": 0.5, "similarity": None, "judge": None},
                         {"rouge1": 1.0, "similarity": 0.2, "judge": None},
                         {"rouge1": 0.0, "similarity": 0.4}])
    # rouge1: (0.5 + 1.0 + 0.0) / 3 = 0.5; similarity: (0.2 + 0.4) / 2 = 0.3; judge: only None -> None.
    assert summary == {"rouge1": pytest.approx(0.5), "similarity": pytest.approx(0.3), "judge": None}
    assert summarize([]) == {}


@pytest.fixture(scope="module")
def encoder():
    from product_qa.modeling import load_sentence_encoder
    return load_sentence_encoder("all-MiniLM-L6-v2")


def test_semantic_similarity(encoder):
    reference = "A warm wool sweater for cold winter days."
    identical, paraphrase, unrelated, empty = semantic_similarity(
        encoder, [reference, "A cozy woollen jumper to keep you warm in winter.", "Replacement brake pads for cars.",
                  ""], [reference] * 4, batch_size=2)
    assert identical == pytest.approx(1.0, abs=1e-4)
    assert paraphrase > unrelated + 0.2
    assert empty == 0.0
    assert all(isinstance(value, float) for value in (identical, paraphrase, unrelated, empty))


def test_semantic_similarity_all_empty_needs_no_encoding():
    assert semantic_similarity(None, ["", "  "], ["a", "b"]) == [0.0, 0.0]


def test_specific_tokens_are_numbers_and_names_not_at_a_sentence_start():
    text = "Clara Kowalski stars in this 1987 western. Directed by Victor Abernathy, it runs 102 minutes."
    assert metrics.specific_tokens(text) == ["Kowalski", "1987", "Victor", "Abernathy", "102"]
    assert metrics.specific_tokens("A plain sentence. Another one.") == []


def test_invented_details_rate_on_hand_computed_cases():
    question = "What is Forgotten Valley (DVD)?"
    reference = "Directed by Victor Abernathy, Forgotten Valley runs 102 minutes."
    # Michael and 1990 are in neither the question nor the reference; Valley and 102 are: 2 of 4
    assert metrics.invented_details_rate("Directed by Michael, the film Valley (1990) runs 102 minutes.",
                                         question, reference) == 0.5
    assert metrics.invented_details_rate("It runs 102 minutes, by victor abernathy.", question, reference) == 0.0
    assert metrics.invented_details_rate("A good film.", question, reference) is None  # nothing specific said
