"""Evaluation: every system answers the same questions, on two sets, and is scored against the real description.

- seen: products the model was trained on, asked with a phrasing training never used: did it learn them?
- unseen: products of the test split, in neither the training data nor the RAG index: does it generalize,
  and does RAG say "no matching product" rather than describe another one?

Scores: ROUGE-1/2/L, BLEU and chrF, MiniLM similarity, perplexity of the reference answer, length against
the reference, repetition (distinct-n, repeated 3-grams), latency and tokens/s, and for the RAG systems
whether they used the right product (seen) or abstained (unseen).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from product_qa.answering import metrics
from product_qa.answering.report import evaluation_markdown, plot_evaluation
from product_qa.answering.systems import MODEL_OF, MODEL_ONLY_SYSTEMS, RAG_SYSTEMS, SYSTEM_LABELS, Answer, Answerer
from product_qa.data.catalog import is_declined, recall_questions
from product_qa.data.encoding import IGNORE_INDEX, AnswerOnlyCollator, ExampleEncoder, answer_only_loss, perplexity
from product_qa.data.examples import output_paths, read_examples
from product_qa.errors import UserError
from product_qa.io_utils import atomic_outputs, json_bytes, prepare_output_dir, write_json_atomic
from product_qa.modeling import load_sentence_encoder

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from config import Config, EvalConfig

# averaged over answers (invented_details over the answers that state specific facts)
SCORED = ("rouge1", "rouge2", "rougeL", "similarity", "exact", "invented_details", "declined", "length_ratio",
          "repeated_3gram")


# ---------------------------------------------------------------------------------------------- questions
def question_sets(answerer: Answerer, evaluation: EvalConfig) -> dict[str, list[dict]]:
    """The seen and unseen questions: uid, title, question, reference. Seen: distinct catalog products (the
    run's, not its declined ones), each asked once with a held-out phrasing."""
    paths = output_paths(answerer.data_cfg)
    seen = [{k: q[k] for k in ("uid", "title", "question", "reference")}
            for q in recall_questions(answerer.catalog, evaluation.seen_questions, evaluation.seed)]
    test = (read_examples(paths["test"], evaluation.unseen_questions, evaluation.seed) if _has_lines(paths["test"])
            else [])
    unseen = [{"uid": e["uid"], "title": e["title"], "reference": e["answer"], "question": e["question"]}
              for e in test]
    return {"seen": seen, "unseen": unseen}


def _has_lines(path: Path) -> bool:
    """False for a missing or empty split file: a small catalog can leave the test split empty."""
    return path.exists() and path.stat().st_size > 0


def selected_systems(evaluation: EvalConfig, available: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The systems to run, and those skipped because no fine-tuned model exists yet."""
    asked = [s.strip() for s in evaluation.systems.split(",") if s.strip()]  # checked by settings.check_eval
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


def score_answers(items: list[dict], answers: list[Answer], encoder: metrics.CachedEncoder, set_name: str
                  ) -> list[dict]:
    """One row per question: the answer, what it was scored, and the retrieved product."""
    predictions, references = [a.text for a in answers], [it["reference"] for it in items]
    rouge = metrics.rouge_scores(predictions, references)
    chrf = metrics.sentence_chrf(predictions, references)
    similarity = metrics.semantic_similarity(encoder, predictions, references)
    rows = []
    for i, (item, answer) in enumerate(zip(items, answers, strict=True)):
        row = {"uid": item["uid"], "question": item["question"], "answer": answer.text,
               "reference": item["reference"], **rouge[i], "chrf": chrf[i], "similarity": similarity[i],
               "exact": float(rouge[i]["rougeL"] >= metrics.EXACT_ROUGE_L),
               "invented_details": metrics.invented_details_rate(answer.text, item["question"], item["reference"]),
               "declined": float(is_declined(answer.text)),
               "length_ratio": metrics.length_ratio(answer.text, item["reference"]),
               "repeated_3gram": metrics.repeated_ngram_rate(answer.text, 3),
               "new_tokens": answer.new_tokens, "seconds": answer.seconds, "confidence": answer.confidence}
        if answer.source is not None:
            hit = answer.source
            row.update(source_uid=hit.uid, source_title=hit.title, match_score=hit.score, matched=hit.matched,
                       right_product=(hit.matched and hit.uid == item["uid"]) if set_name == "seen"
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
    return summary


def worst(rows: list[dict], n: int) -> list[dict]:
    """The n answers furthest from their reference (lowest ROUGE-L, then chrF). A RAG system's right "no matching
    product" on an unseen product scores low against the reference but is the right answer: not listed."""
    keep = ("uid", "question", "answer", "reference", "rougeL", "chrf", "source_uid")
    wrong = [r for r in rows if not (r.get("right_product") and not r.get("matched", True))]
    return [{k: r[k] for k in keep if k in r} for r in sorted(wrong, key=lambda r: (r["rougeL"], r["chrf"]))[:n]]


# ----------------------------------------------------------------------------------------------- workflow
def evaluate(cfg: Config, run_dir: Path | None, *, progress: bool = True) -> dict:
    """Run the selected systems on both question sets and return the report (written by the caller)."""
    answerer = Answerer(cfg, run_dir)
    systems, skipped = selected_systems(cfg.eval, answerer.systems)
    sets = question_sets(answerer, cfg.eval)
    encoder = metrics.CachedEncoder(load_sentence_encoder(cfg.rag.encoder))
    answerer.load(systems)
    started = time.perf_counter()
    results = {set_name: {"questions": len(items),
                          "systems": {system: _system_result(answerer, system, set_name, items, encoder, progress)
                                      for system in systems}}
               for set_name, items in sets.items() if items}
    index = answerer.index if any(s in RAG_SYSTEMS for s in systems) else None
    if not results:
        raise UserError("no questions to ask: the training and test splits are empty")
    return {
        "run": str(run_dir) if run_dir else None, "model": answerer.model_cfg.name, "template": answerer.template,
        "systems": systems, "skipped_systems": skipped, "labels": {s: SYSTEM_LABELS[s] for s in systems},
        "decoding": {k: getattr(answerer.decoding, k) for k in ("max_new_tokens", "repetition_penalty",
                                                              "no_repeat_ngram_size", "batch_size")}
        | {"min_confidence": answerer.min_confidence},  # the run's threshold (answering.Answerer)
        "rag": {"retriever": cfg.rag.retriever, "min_score": cfg.rag.min_score,
                "max_context_tokens": cfg.rag.max_context_tokens,
                "indexed_products": len(index.uids) if index else None},
        "seconds": round(time.perf_counter() - started, 1), "sets": results,
    }


def _system_result(answerer: Answerer, system: str, set_name: str, items: list[dict],
                   encoder: metrics.CachedEncoder, progress: bool) -> dict:
    """One system's answers to one question set: every answer scored, the summary, the worst answers."""
    started = time.perf_counter()
    answers = answerer.answer([it["question"] for it in items], system,
                              progress=f"{set_name}: {system}" if progress else None)
    wall = time.perf_counter() - started
    rows = score_answers(items, answers, encoder, set_name)
    summary = summarize(rows, wall)
    evaluation = answerer.cfg.eval
    if evaluation.perplexity and system in MODEL_ONLY_SYSTEMS:
        summary["perplexity"] = reference_perplexity(answerer.model(MODEL_OF[system]), answerer.tokenizer, items,
                                                     answerer)
    return {"summary": summary, "worst": worst(rows, evaluation.worst_examples), "answers": rows}


def write_evaluation(report: dict, output_dir: str) -> dict[str, Path]:
    """evaluation_report.json (every answer and score), .md (tables, worst answers) and .png (bar chart)."""
    out = prepare_output_dir(output_dir)
    paths = {"json": out / "evaluation_report.json", "markdown": out / "evaluation_report.md",
             "chart": out / "evaluation_report.png"}
    with atomic_outputs(paths) as handles:  # all three written in full before any replaces the old one
        handles["json"].write(json_bytes(report))
        handles["markdown"].write(evaluation_markdown(report).encode())
        plot_evaluation(report, handles["chart"])
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
        sets = question_sets(answerer, dataclasses.replace(cfg.eval, seen_questions=cfg.eval.test_questions,
                                                           unseen_questions=cfg.eval.test_questions))
        items = [{"set": name, **item} for name, group in sets.items() for item in group]
    systems = [s for s in MODEL_ONLY_SYSTEMS if s in answerer.systems]
    answers = {s: answerer.answer([it["question"] for it in items], s, progress=s if progress else None)
               for s in systems}
    results = {"run": str(run_dir) if run_dir else None, "model": answerer.model_cfg.name, "systems": systems,
               "decoding": dataclasses.asdict(answerer.decoding),
               "questions": [{**item, **{s: answers[s][i].text for s in systems}} for i, item in enumerate(items)]}
    path = Path(cfg.eval.output_dir) / "test_results.json"
    write_json_atomic(path, results)
    return results, path
