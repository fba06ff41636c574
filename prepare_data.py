"""Stage 1: stream trn.json, clean, filter, dedupe, sample, split by product and build question->answer examples.

    python prepare_data.py                      # the bundled sample_data.json
    python prepare_data.py --data trn.json.gz --set data.max_records=50000

Writes outputs/data/{train,validation,test}.jsonl and prep_report.json (see README_FINE_TUNING.md).
"""
from __future__ import annotations

import argparse

from config import Config
from product_qa.configurator import config_from_args, stage_parser
from product_qa.data.preparation import prepare
from product_qa.data.report import print_prep_summary
from product_qa.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__, sections=("data",))
    parser.add_argument("--strict", action="store_true", help="stop at the first bad line instead of skipping it")
    parser.add_argument("--force", action="store_true", help="redo even if the outputs are up to date")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    cfg = config_from_args(Config(), args)
    report = prepare(cfg.data, strict=args.strict, force=args.force, progress=not args.no_progress)
    print_prep_summary(report)
    return 0


if __name__ == "__main__":
    run_cli(main)
