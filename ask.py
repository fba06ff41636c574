"""Ask about a product; the answer streams in as it is generated.

    python ask.py "What is the Girls Ballet Tutu Neon Pink?"    # the assistant (latest run)
    python ask.py --system fine_tuned "..."                     # another system (--rag, --base: shortcuts)
    python ask.py --compare "..."                               # every system, one after another
    python ask.py                                               # interactive: one question per line
    python ask.py --batch questions.txt --output answers.jsonl  # one question a line in, one JSON object out

The assistant finds the product in the index of every product of the data: a matched product is answered by the
fine-tuned model reading its record, and the source is named; otherwise a catalog product the model knows is
answered from memory, and anything else is declined with the closest titles.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from config import Config
from product_qa.configurator import config_from_args, stage_parser
from product_qa.errors import UserError, run_cli
from product_qa.reporting import terminal_text
from product_qa.runs import add_run_argument, no_run_note, run_from_args
from product_qa.settings import ANSWERING_SYSTEMS

if TYPE_CHECKING:
    from product_qa.answering.systems import Answerer


def systems_to_ask(answerer: Answerer, args: argparse.Namespace) -> list[str]:
    if args.compare:
        return list(answerer.systems)
    if not args.base and (note := no_run_note(answerer.cfg, answerer.run_dir)):
        print(f"note: {terminal_text(note)}", file=sys.stderr)
    if args.system:
        answerer.check_system(args.system)
        return [args.system]
    if not (args.rag or args.base):
        return ["assistant"]
    model = "base" if args.base else answerer.stand_in("fine_tuned")
    return [f"{model}_rag" if args.rag else model]


def answer_batch(answerer: Answerer, path: Path, output: Path | None, system: str, progress: bool = True) -> int:
    """Every question of `path` (one a line, blank lines skipped) answered by `system`, batched; one JSON object a
    question, in order, to `output` (written whole, then renamed into place) or to stdout."""
    import orjson

    from product_qa.io_utils import atomic_outputs

    try:
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")  # line numbers as an editor shows
    except OSError as err:
        raise UserError(f"{path}: cannot read the questions ({err.strerror})") from None
    if output is not None and (output.is_dir() or not os.access(output.parent if output.parent.exists() else ".",
                                                                  os.W_OK)):
        raise UserError(f"{output}: cannot write the answers there (a folder, or a folder that cannot be written)")
    asked = [(number, *answerer.clean(line)) for number, line in enumerate(lines, 1) if line.strip()]
    if not asked:
        raise UserError(f"{path}: no questions (one question a line)")
    answers = answerer.answer([question for _, question, _ in asked], system,
                              progress=f"{system}: {path.name}" if progress else None)
    records = b"".join(orjson.dumps({
        "line": number, "question": question, "question_cut": cut, "answer": answer.text, "system": system,
        "route": answer.route,
        "source": {"uid": answer.source.uid, "title": answer.source.title}
        if answer.source is not None and answer.source.matched else None,
        "match_score": None if answer.source is None else round(answer.source.score, 4),
        "confidence": answer.confidence}) + b"\n"
        for (number, question, cut), answer in zip(asked, answers, strict=True))
    if output is None:
        sys.stdout.buffer.write(records)
    else:
        try:
            with atomic_outputs({"answers": output}) as handles:
                handles["answers"].write(records)
        except OSError as err:
            raise UserError(f"{output}: cannot write the answers ({err.strerror})") from None
        print(f"{len(asked)} answers ({system}) -> {terminal_text(str(output))}", file=sys.stderr)
    return 0


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
        for piece in pieces:  # the answer may repeat its record's text: escape sequences and all
            print(terminal_text(piece, multiline=True), end="", flush=True)
        print()
        if hit is not None and hit.matched:
            print(source_line(hit))


def build_parser() -> argparse.ArgumentParser:
    # a run's own data, model and train settings come from its config.json: these are where runs and data are found,
    # and the model used before any run
    parser = stage_parser(__doc__, sections=("generation", "rag", "model", "eval.run_name", "train.output_dir",
                                             "data.output_dir"))
    parser.add_argument("question", nargs="*", help="the question (none: ask interactively)")
    parser.add_argument("--rag", action="store_true", help="give the model the retrieved product description")
    parser.add_argument("--base", action="store_true", help="ask the base model instead of the fine-tuned one")
    parser.add_argument("--compare", action="store_true", help="ask every system, one after another")
    parser.add_argument("--system", choices=ANSWERING_SYSTEMS, help="the system that answers (default: assistant)")
    parser.add_argument("--batch", type=Path, metavar="FILE", help="answer every question of FILE, one a line")
    parser.add_argument("--output", type=Path, metavar="FILE",
                        help="with --batch: write the answers here as JSON Lines (default: standard output)")
    add_run_argument(parser)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    cfg = config_from_args(Config(), args)
    if args.compare and (args.rag or args.base or args.system):
        raise UserError("--compare asks every system already; leave out --rag, --base and --system")
    if args.system and (args.rag or args.base):
        raise UserError("--system names the system; leave out --rag and --base")
    if args.batch is None and args.output is not None:
        raise UserError("--output goes with --batch FILE")
    if args.batch is not None and (args.question or args.compare):
        raise UserError("--batch reads the questions from its file: give no question and no --compare")

    from product_qa.answering.systems import Answerer  # heavy imports (torch, transformers) after argument checks

    answerer = Answerer(cfg, run_from_args(cfg, args))
    systems = systems_to_ask(answerer, args)
    if args.batch is not None:
        return answer_batch(answerer, args.batch, args.output, systems[0], progress=not args.no_progress)
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
            print(f"error: {terminal_text(str(err))}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
