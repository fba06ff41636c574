"""Test what fine-tuning changed: the same questions to the base model and the fine-tuned model, side by side;
with --evaluate, every system (the assistant, base, fine-tuned, retrieval alone, base + RAG, fine-tuned + RAG)
scored on the same questions: catalog products (new phrasings), indexed products the model was not trained on,
and unknown products (the test split), each also in a question form people type.

    python test_pipeline.py                           # generation test, the latest run (base model alone before any)
    python test_pipeline.py --run smollm2-lora "What is the Girls Ballet Tutu Neon Pink?"
    python test_pipeline.py --evaluate                # the full evaluation and the RAG comparison
    python test_pipeline.py --evaluate --set eval.catalog_questions=20 --set eval.systems=base,retrieval

The generation test writes outputs/evaluation/test_results.json; the evaluation writes evaluation_report.json
(every answer and score), .md (tables and the worst answers) and .png (bar chart) there.
"""
from __future__ import annotations

import argparse

from config import Config
from product_qa.configurator import config_from_args, stage_parser
from product_qa.errors import UserError, run_cli
from product_qa.io_utils import prepare_output_dir
from product_qa.reporting import terminal_text
from product_qa.runs import add_run_argument, no_run_note, run_from_args


def build_parser() -> argparse.ArgumentParser:
    # a run's own data, model and train settings come from its config.json: these are where runs and data are found,
    # and the model used before any run
    parser = stage_parser(__doc__, sections=("eval", "generation", "rag", "model", "train.output_dir",
                                             "data.output_dir"))
    parser.add_argument("questions", nargs="*", help="your own questions (default: eval.test_questions held-out "
                                                     "questions from the catalog and the unknown products)")
    add_run_argument(parser)
    parser.add_argument("--evaluate", action="store_true", help="score every system on the evaluation sets")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    cfg = config_from_args(Config(), args)
    if args.evaluate and args.questions:
        raise UserError("--evaluate asks the evaluation sets' questions; leave out your own questions (or --evaluate)")

    from product_qa.answering.evaluation import (  # heavy imports (torch, transformers) after argument checks
        evaluate,
        generation_test,
        write_evaluation,
    )
    from product_qa.answering.model_card import write_model_cards
    from product_qa.answering.report import print_evaluation_summary, print_generation_test

    run_dir = run_from_args(cfg, args)
    prepare_output_dir(cfg.eval.output_dir)  # a folder that cannot be written is said before the answers, not after
    if args.evaluate:
        report = evaluate(cfg, run_dir, progress=not args.no_progress)
        paths = write_evaluation(report, cfg.eval.output_dir)
        cards, not_written = write_model_cards(run_dir, report) if run_dir and "fine_tuned" in report["systems"] \
            else ([], None)
        print_evaluation_summary(report, [str(p) for p in [*paths.values(), *cards]])
        if not_written:
            print(f"model card not updated: {terminal_text(not_written)}")
    else:
        results, path = generation_test(cfg, run_dir, args.questions, progress=not args.no_progress)
        print_generation_test(results, str(path), no_run_note(cfg, run_dir))
    return 0


if __name__ == "__main__":
    run_cli(main)
