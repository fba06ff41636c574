"""The web demo: ask about a product in the browser and compare the base model, the fine-tuned model and RAG.

    python app.py                      # http://127.0.0.1:7860 (this machine only)
    python app.py --port 8080          # another port
    python app.py --host 0.0.0.0       # let other machines on the network in
    python app.py --share              # also a public gradio.live link (needs internet)
    python app.py --run smollm2-lora   # a given fine-tuning run (default: the latest)

The models load once, when the app starts; questions are answered one at a time, in the order they came.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from config import Config
from product_qa.configurator import config_from_args, stage_parser
from product_qa.errors import run_cli
from product_qa.reporting import terminal_text
from product_qa.runs import add_run_argument, run_from_args
from product_qa.settings import check_app

DOCS_ANALYSIS = Path(__file__).resolve().parent / "docs" / "analysis"  # plots shipped with the repo


def build_parser() -> argparse.ArgumentParser:
    # a run's own data, model and train settings come from its config.json: these are where runs, data and
    # reports are found, and the model used before any run
    parser = stage_parser(__doc__, sections=("app", "generation", "rag", "model", "eval.run_name", "eval.output_dir",
                                             "analysis.output_dir", "train.output_dir", "data.output_dir"))
    parser.add_argument("--host", help="address to listen on (default: app.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: app.port, 7860)")
    parser.add_argument("--share", action="store_true", help="also serve a public gradio.live link")
    add_run_argument(parser)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    cfg = config_from_args(Config(), args)
    cfg.app.host = args.host or cfg.app.host
    cfg.app.port = args.port if args.port is not None else cfg.app.port
    cfg.app.share = args.share or cfg.app.share
    check_app(cfg.app)  # the flags are settings too

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    from product_qa.answering.systems import Answerer  # heavy imports (torch, gradio) after argument checks
    from product_qa.app.webapp import Demo, build_page, check_address, launch, shown_plots

    check_address(cfg.app.host, cfg.app.port)

    print("Loading the models and the RAG index (once) ...")
    demo = Demo.load(Answerer(cfg, run_from_args(cfg, args)))
    for notice in demo.notices:
        print("note:", terminal_text(notice.replace("**", "")))
    analysis_dir, eval_dir = Path(cfg.analysis.output_dir), Path(cfg.eval.output_dir)
    page = build_page(demo, analysis_dir, DOCS_ANALYSIS, eval_dir)
    launch(page, cfg.app.host, cfg.app.port, share=cfg.app.share,
           files=shown_plots(analysis_dir, DOCS_ANALYSIS, eval_dir))
    return 0


if __name__ == "__main__":
    run_cli(main)
