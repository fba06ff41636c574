"""Ask about a product; the answer streams in as it is generated.

    python ask.py "What is the Girls Ballet Tutu Neon Pink?"    # the fine-tuned model (latest run)
    python ask.py --rag "What is the Girls Ballet Tutu Neon Pink?"  # ... given the retrieved description
    python ask.py --base "..."                                  # the base model (with --rag: base + RAG)
    python ask.py --compare "..."                               # every system, one after another
    python ask.py                                               # interactive: one question per line

Answers given with a retrieved description name their source product (title and uid); when no catalog title
matches the question, the answer says so instead of describing another product.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from config import Config
from product_qa.configurator import config_from_args, stage_parser
from product_qa.errors import UserError, run_cli
from product_qa.runs import add_run_argument, no_run_note, run_from_args

if TYPE_CHECKING:
    from product_qa.answering.systems import Answerer


def systems_to_ask(answerer: Answerer, args: argparse.Namespace) -> list[str]:
    if args.compare:
        return list(answerer.systems)
    if not args.base and (note := no_run_note(answerer.cfg, answerer.run_dir)):
        print(f"note: {note}", file=sys.stderr)
    model = "base" if args.base else answerer.stand_in("fine_tuned")
    return [f"{model}_rag" if args.rag else model]


def ask(answerer: Answerer, question: str, systems: list[str]) -> None:
    from product_qa.answering.retrieval import source_line
    from product_qa.answering.systems import SYSTEM_LABELS

    question, cut = answerer.clean(question)
    if cut:
        print(f"note: the question was cut to its first {len(question)} characters", file=sys.stderr)
    for system in systems:
        if len(systems) > 1:
            print(f"\n== {SYSTEM_LABELS[system]}")
        hit, pieces = answerer.stream(question, system)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()
        if hit is not None and hit.matched:
            print(source_line(hit))


def main() -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("question", nargs="*", help="the question (none: ask interactively)")
    parser.add_argument("--rag", action="store_true", help="give the model the retrieved product description")
    parser.add_argument("--base", action="store_true", help="ask the base model instead of the fine-tuned one")
    parser.add_argument("--compare", action="store_true", help="ask every system, one after another")
    add_run_argument(parser)
    args = parser.parse_args()
    cfg = config_from_args(Config(), args)
    if args.compare and (args.rag or args.base):
        raise UserError("--compare asks every system already; leave out --rag and --base")

    from product_qa.answering.systems import Answerer  # heavy imports (torch, transformers) after argument checks

    answerer = Answerer(cfg, run_from_args(cfg, args))
    systems = systems_to_ask(answerer, args)
    if args.question:  # an empty one is refused with a clear message
        ask(answerer, " ".join(args.question), systems)
        return 0
    print("Ask about a product (quit, exit or Ctrl-D to leave).")
    while True:
        try:
            line = input("\nquestion> ")
        except EOFError:
            print()
            return 0
        if line.strip().lower() in ("quit", "exit"):
            return 0
        try:
            ask(answerer, line, systems)
        except UserError as err:  # an empty question: say so and ask again
            print(f"error: {err}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
