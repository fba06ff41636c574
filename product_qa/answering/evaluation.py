"""Evaluation: every system answers the same questions, on three sets, and is scored against the real description.

- catalog: products the model memorized, asked with a phrasing training never used: did it learn them?
- indexed: training-split products the model was not trained on in any way, which the index holds: does the
  assistant answer the rest of the catalog from the records it retrieves?
- unknown: products of the test split, in neither the training data nor the index: is each declined (or "no
  matching product") rather than described as another product?

Each product is asked twice: in a held-out phrasing, and in one of the question forms people type
(data/question_forms.py: a dropped qualifier, a typo, only the first words...), chosen by its uid; the summary
gives every figure per form too.

Scores: ROUGE-1/2/L, BLEU and chrF, MiniLM similarity, perplexity of the reference answer, length against
the reference, repetition (distinct-n, repeated 3-grams), latency and tokens/s, and for the RAG systems
whether they used the right product (catalog, indexed) or abstained (unknown), and whether an answer described
another product.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from product_qa.answering import metrics
from product_qa.answering.report import answers_frame, evaluation_markdown, plot_evaluation
from product_qa.answering.retrieval import Hit
from product_qa.answering.systems import (
    MODEL_OF,
    MODEL_ONLY_SYSTEMS,
    SYSTEM_LABELS,
    Answer,
    Answerer,
    withheld,
)
from product_qa.data.catalog import recall_questions
from product_qa.data.encoding import IGNORE_INDEX, AnswerOnlyCollator, ExampleEncoder, answer_only_loss, perplexity
from product_qa.data.examples import output_paths, read_examples, sample_in_order
from product_qa.data.prompts import HELD_OUT_PHRASINGS, pick_phrasing
from product_qa.data.question_forms import NAMED_FORMS, question_forms
from product_qa.errors import UserError
from product_qa.hashing import key_hash, mix64
from product_qa.io_utils import atomic_outputs, json_bytes, prepare_output_dir, write_json_atomic
from product_qa.modeling import load_sentence_encoder
from product_qa.settings import comma_separated

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from config import Config, EvalConfig

# averaged over answers (invented_details over the answers that state specific facts)
SCORED = ("rouge1", "rouge2", "rougeL", "similarity", "exact", "invented_details", "declined", "wrong_product",
          "length_ratio", "repeated_3gram")
HELD_OUT_FORM = "held_out"  # the form of a question asked in a held-out phrasing
DESCRIBED = 0.5  # ROUGE-L at which an answer counts as describing a product


# ---------------------------------------------------------------------------------------------- questions
def question_sets(answerer: Answerer, evaluation: EvalConfig) -> dict[str, list[dict]]:
    """The catalog, indexed and unknown questions: uid, title, question, reference, form. Each product once in a
    held-out phrasing and once in another form (question_forms), so every set measures both."""
    paths = output_paths(answerer.data_cfg)
    catalog = recall_questions(answerer.catalog, evaluation.catalog_questions, evaluation.seed)
    trained = answerer.catalog.trained_uids()
    untaught = [e for e in read_examples(paths["train"]) if e["uid"] not in trained]
    indexed = [{"uid": e["uid"], "title": e["title"], "reference": e["answer"],
                "question": pick_phrasing(HELD_OUT_PHRASINGS, key_hash(e["uid"]), evaluation.seed).question(e["title"])}
               for e in sample_in_order(untaught, evaluation.indexed_questions, evaluation.seed)]
    test = (read_examples(paths["test"], evaluation.unknown_questions, evaluation.seed) if _has_lines(paths["test"])
            else [])
    unknown = [{"uid": e["uid"], "title": e["title"], "reference": e["answer"], "question": e["question"]}
               for e in test]
    return {name: _with_forms(items, evaluation.seed)
            for name, items in (("catalog", catalog), ("indexed", indexed), ("unknown", unknown))}


def _with_forms(items: list[dict], seed: int) -> list[dict]:
    """Each item in its held-out phrasing, then each again in one other form (by its uid: forms spread evenly)."""
    asked = [{**{k: it[k] for k in ("uid", "title", "question", "reference")}, "form": HELD_OUT_FORM} for it in items]
    for it in items:
        forms = {name: q for name, q in question_forms(it["title"], key_hash(it["uid"]), seed).items()
                 if name != "exact"}  # the held-out phrasing already asks the exact title
        name = sorted(forms)[mix64(key_hash(it["uid"]) ^ seed) % len(forms)]
        asked.append({"uid": it["uid"], "title": it["title"], "question": forms[name], "reference": it["reference"],
                      "form": name})
    return asked


def _has_lines(path: Path) -> bool:
    """False for a missing or empty split file: a small catalog can leave the test split empty."""
    return path.exists() and path.stat().st_size > 0


def selected_systems(evaluation: EvalConfig, available: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The systems to run, and those skipped because no fine-tuned model exists yet."""
    asked = comma_separated(evaluation.systems)  # checked by settings.check_eval
    return [s for s in asked if s in available], [s for s in asked if s not in available]


# ------------------------------------------------------------------------------------------------ scoring
@torch.no_grad()
def reference_perplexity(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, items: list[dict],
                         answerer: Answerer, batch_size: int = 8) -> float | None:
    """exp(mean negative log-likelihood per token) of the reference answers (and their EOS) after the question,
    the same prompt and answer-only masking as training."""
    encoder = ExampleEncoder(tokenizer, template=answerer.template, system_prompt=answerer.train_cfg.system_prompt,
                             max_length=answerer.train_cfg.max_length)
    encoded = encoder.encode([{**it, "answer": it["reference"]} for it in items])
    encoded.sort(key=lambda e: e["length"])
    collate = AnswerOnlyCollator(tokenizer.pad_token_id, answer_only_logits=True)  # as training: no prompt logits
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v
                 for k, v in collate(encoded[start:start + batch_size]).items()}
        labels = batch.pop("labels")
        total_nll += answer_only_loss(model(**batch), labels, num_items_in_batch=1).item()  # the sum
        total_tokens += int((labels != IGNORE_INDEX).sum())
    return perplexity(total_nll / total_tokens) if total_tokens else None


def score_answers(items: list[dict], answers: list[Answer], nearest: list[Hit], encoder: metrics.CachedEncoder,
                  set_name: str) -> list[dict]:
    """One row per question: the answer, what it was scored, and the retrieved product. `nearest` is the index's
    best product for each question: an answer closer to its description than to the reference, when that is
    another product, described the wrong product."""
    predictions, references = [a.text for a in answers], [it["reference"] for it in items]
    rouge = metrics.rouge_scores(predictions, references)
    other = metrics.rouge_scores(predictions, [hit.description for hit in nearest])
    chrf = metrics.sentence_chrf(predictions, references)
    similarity = metrics.semantic_similarity(encoder, predictions, references)
    rows = []
    for i, (item, answer) in enumerate(zip(items, answers, strict=True)):
        wrong = (nearest[i].uid != item["uid"] and not withheld(answer.text)
                 and other[i]["rougeL"] >= DESCRIBED and other[i]["rougeL"] > rouge[i]["rougeL"])
        row = {"uid": item["uid"], "title": item["title"], "form": item["form"], "question": item["question"],
               "answer": answer.text,
               "reference": item["reference"], **rouge[i], "chrf": chrf[i], "similarity": similarity[i],
               "exact": float(rouge[i]["rougeL"] >= metrics.EXACT_ROUGE_L),
               # an answer that describes no product states no facts (the titles it suggests are the index's)
               "invented_details": None if withheld(answer.text) else metrics.invented_details_rate(
                   answer.text, item["question"], item["reference"]),
               "declined": float(withheld(answer.text)), "wrong_product": float(wrong),
               "length_ratio": metrics.length_ratio(answer.text, item["reference"]),
               "repeated_3gram": metrics.repeated_ngram_rate(answer.text, 3),
               "new_tokens": answer.new_tokens, "seconds": answer.seconds, "confidence": answer.confidence,
               "route": answer.route}
        if answer.source is not None:
            hit = answer.source
            row.update(source_uid=hit.uid, source_title=hit.title, match_score=hit.score, matched=hit.matched,
                       right_product=(hit.matched and hit.uid == item["uid"]) if set_name != "unknown"
                       else not hit.matched)
        rows.append(row)
    return rows


def summarize(rows: list[dict], wall_seconds: float) -> dict:
    """A system's scores on one set: means of the per-answer scores, corpus BLEU/chrF, distinct-n, speed."""
    predictions = [r["answer"] for r in rows]
    summary = metrics.summarize([{k: r[k] for k in SCORED} for r in rows])
    summary.update(metrics.corpus_bleu_chrf(predictions, [r["reference"] for r in rows]))
    summary.update(distinct_1=metrics.distinct_n(predictions, 1), distinct_2=metrics.distinct_n(predictions, 2))
    new_tokens = sum(r["new_tokens"] for r in rows)
    summary.update(questions=len(rows), new_tokens=new_tokens, seconds=round(wall_seconds, 2),
                   latency_s=sum(r["seconds"] for r in rows) / max(len(rows), 1),
                   tokens_per_s=new_tokens / wall_seconds if wall_seconds > 0 and new_tokens else None)
    if "right_product" in rows[0]:
        summary["right_product"] = sum(r["right_product"] for r in rows) / len(rows)
        summary["no_match"] = sum(not r["matched"] for r in rows) / len(rows)
    if rows[0]["route"] is not None:
        summary["routes"] = {route: sum(r["route"] == route for r in rows) / len(rows)
                             for route in sorted({r["route"] for r in rows})}
    summary["forms"] = {form: {"questions": len(group), "rougeL": sum(r["rougeL"] for r in group) / len(group),
                               **({"right_product": sum(r["right_product"] for r in group) / len(group)}
                                  if "right_product" in group[0] else {})}
                        for form in dict.fromkeys(r["form"] for r in rows)
                        for group in [[r for r in rows if r["form"] == form]]}
    # the headline figures: the held-out phrasings, and the mean over the forms that name the title or its short form
    # (a question with only the title's first words is answered with the closest titles, by design)
    named = [entry["rougeL"] for form, entry in summary["forms"].items() if form in NAMED_FORMS]
    summary["held_out_rougeL"] = summary["forms"].get(HELD_OUT_FORM, {}).get("rougeL")
    summary["named_forms_rougeL"] = sum(named) / len(named) if named else None
    return summary


def worst(rows: list[dict], n: int) -> list[dict]:
    """The n answers furthest from their reference (lowest ROUGE-L, then chrF). A RAG system's right "no matching
    product" on an unknown product scores low against the reference but is the right answer: not listed."""
    keep = ("uid", "question", "answer", "reference", "rougeL", "chrf", "source_uid")
    wrong = [r for r in rows if not (r.get("right_product") and not r.get("matched", True)) and r["rougeL"] < 1.0]
    return [{k: r[k] for k in keep if k in r} for r in sorted(wrong, key=lambda r: (r["rougeL"], r["chrf"]))[:n]]


# ----------------------------------------------------------------------------------------------- workflow
def evaluate(cfg: Config, run_dir: Path | None, *, progress: bool = True) -> dict:
    """Run the selected systems on both question sets and return the report (written by the caller)."""
    answerer = Answerer(cfg, run_dir)
    systems, skipped = selected_systems(cfg.eval, answerer.systems)
    sets = question_sets(answerer, cfg.eval)
    encoder = metrics.CachedEncoder(load_sentence_encoder(cfg.rag.encoder))
    answerer.load(systems)
    index = answerer.index
    started = time.perf_counter()
    results = {}
    for set_name, items in sets.items():
        if items:
            nearest = index.search([it["question"] for it in items])
            results[set_name] = {"questions": len(items), "systems": {
                system: _system_result(answerer, system, set_name, items, nearest, encoder, progress)
                for system in systems}}
    if not results:
        raise UserError("no questions to ask: the training and test splits are empty")
    return {
        "run": str(run_dir) if run_dir else None, "model": answerer.model_cfg.name, "template": answerer.template,
        "systems": systems, "skipped_systems": skipped, "labels": {s: SYSTEM_LABELS[s] for s in systems},
        "decoding": {k: getattr(answerer.decoding, k) for k in ("max_new_tokens", "repetition_penalty",
                                                              "no_repeat_ngram_size", "batch_size")}
        | {"min_confidence": answerer.min_confidence},  # the run's threshold (answering.Answerer)
        "rag": {"retriever": cfg.rag.retriever, "min_score": index.min_score,
                "max_context_tokens": cfg.rag.max_context_tokens, "indexed_products": len(index)},
        "calibration": index.calibration,
        "seconds": round(time.perf_counter() - started, 1), "sets": results,
    }


def _system_result(answerer: Answerer, system: str, set_name: str, items: list[dict], nearest: list[Hit],
                   encoder: metrics.CachedEncoder, progress: bool) -> dict:
    """One system's answers to one question set: every answer scored, the summary, the worst answers."""
    started = time.perf_counter()
    answers = answerer.answer([it["question"] for it in items], system,
                              progress=f"{set_name}: {system}" if progress else None)
    wall = time.perf_counter() - started
    rows = score_answers(items, answers, nearest, encoder, set_name)
    summary = summarize(rows, wall)
    evaluation = answerer.cfg.eval
    if evaluation.perplexity and system in MODEL_ONLY_SYSTEMS:
        summary["perplexity"] = reference_perplexity(answerer.model(MODEL_OF[system]), answerer.tokenizer, items,
                                                     answerer)
    return {"summary": summary, "worst": worst(rows, evaluation.worst_examples), "answers": rows}


def write_evaluation(report: dict, output_dir: str) -> dict[str, Path]:
    """evaluation_report.json (every answer and score), .md (tables, worst answers), .png (bar chart), and the
    answers as a table, one row each (evaluation_answers.parquet and .csv, for pandas)."""
    out = prepare_output_dir(output_dir)
    paths = {"json": out / "evaluation_report.json", "markdown": out / "evaluation_report.md",
             "chart": out / "evaluation_report.png", "answers_parquet": out / "evaluation_answers.parquet",
             "answers_csv": out / "evaluation_answers.csv"}
    answers = answers_frame(report)
    with atomic_outputs(paths) as handles:  # all written in full before any replaces the old one
        handles["json"].write(json_bytes(report))
        handles["markdown"].write(evaluation_markdown(report).encode())
        answers.to_parquet(handles["answers_parquet"], index=False)
        answers.to_csv(handles["answers_csv"], index=False)
        plot_evaluation(report, answers, handles["chart"])
    return paths


def generation_test(cfg: Config, run_dir: Path | None, questions: list[str], *, progress: bool = True
                    ) -> tuple[dict, Path]:
    """The same questions to the base and the fine-tuned model; saved to test_results.json. Without questions
    of the user's, eval.test_questions from each evaluation set (with their reference answers)."""
    answerer = Answerer(cfg, run_dir)
    if questions:
        items = [{"set": "yours", "question": question, "reference": None, "question_cut": cut}
                 for question, cut in map(answerer.clean, questions)]
    else:
        few = cfg.eval.test_questions
        sets = question_sets(answerer, dataclasses.replace(cfg.eval, catalog_questions=few, indexed_questions=0,
                                                           unknown_questions=few))
        items = [{"set": name, **item} for name, group in sets.items() for item in group
                 if item["form"] == HELD_OUT_FORM]
    systems = [s for s in MODEL_ONLY_SYSTEMS if s in answerer.systems]
    answers = {s: answerer.answer([it["question"] for it in items], s, progress=s if progress else None)
               for s in systems}
    results = {"run": str(run_dir) if run_dir else None, "model": answerer.model_cfg.name, "systems": systems,
               "decoding": dataclasses.asdict(answerer.decoding),
               "questions": [{**item, **{s: answers[s][i].text for s in systems}} for i, item in enumerate(items)]}
    path = Path(cfg.eval.output_dir) / "test_results.json"
    write_json_atomic(path, results)
    return results, path
