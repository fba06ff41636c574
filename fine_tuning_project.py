"""The main job: fine-tune a foundation model so that a question about a product title gets its description.

    python fine_tuning_project.py                       # LoRA on the bundled sample, on this machine's CPU/GPU
    python fine_tuning_project.py --resume              # continue the last run from its latest checkpoint
    python fine_tuning_project.py --set train.method=full --set train.epochs=2 --run-name full-2ep
    torchrun --nproc_per_node 2 fine_tuning_project.py  # several processes (DDP); see README_FINE_TUNING.md
    python fine_tuning_project.py --push-to-hub you/smollm2-products    # then upload the merged model and its card
    python fine_tuning_project.py --push-to-hub you/smollm2-lora --push adapter

Prepares the data if needed, shows a few base-model answers, measures validation loss and perplexity,
trains, measures again, and saves the adapter, the merged model and a report under outputs/runs/<run name>/.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from config import Config
from product_qa.configurator import config_from_args, stage_parser
from product_qa.errors import run_cli
from product_qa.hub import PUSHED_FOLDERS, add_push_arguments, check_hub_access
from product_qa.runs import check_run_name


def build_parser() -> argparse.ArgumentParser:
    # it prepares the data when needed, and after training asks the assistant (generation, rag) a few questions
    parser = stage_parser(__doc__, sections=("data", "model", "train", "generation", "rag", "eval.seed"))
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--run-name", help="name of the run (default: train.run_name in config.py)")
    add_push_arguments(parser, tuple(PUSHED_FOLDERS), "merged")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    cfg = config_from_args(Config(), args)
    if args.run_name:
        check_run_name(args.run_name, "--run-name")
        cfg.train.run_name = args.run_name
    token = check_hub_access(args.push_to_hub) if args.push_to_hub else None  # before training, not after

    from product_qa.training.report import print_training_summary
    from product_qa.training.workflow import fine_tune  # heavy imports (torch, transformers) after argument checks

    report = fine_tune(cfg, resume=args.resume, progress=not args.no_progress)
    if report:
        print_training_summary(report)
        if args.push_to_hub:
            from product_qa.hub import push_folder

            folder = Path(report["run_dir"]) / PUSHED_FOLDERS[args.push]
            print(f"pushed the {args.push} model: {push_folder(folder, args.push_to_hub, token, args.push)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
