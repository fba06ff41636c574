"""Exploratory analysis of trn.json: statistics, quality issues, plots and report.md, in one streamed pass.

    python data_analysis.py                               # the bundled sample_data.json
    python data_analysis.py --data trn.json.gz --set analysis.top_k=50

Writes outputs/analysis/report.md, data_analysis_report.json and the PNG plots (see README_FINE_TUNING.md).
"""
from __future__ import annotations

import argparse

from config import Config
from product_qa.analysis.report import print_analysis_summary, write_report
from product_qa.analysis.statistics import analyse
from product_qa.configurator import config_from_args, stage_parser
from product_qa.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    # the filters of data are the analysis's funnel; the train settings make the examples it measures in tokens
    return stage_parser(__doc__, sections=("analysis", "data", "model", "train.max_length",
                                           "train.prompt_template", "train.system_prompt"))


def main() -> int:
    args = build_parser().parse_args()
    cfg = config_from_args(Config(), args)
    analysis = analyse(cfg, progress=not args.no_progress)
    paths = write_report(analysis, cfg.analysis.output_dir)
    print_analysis_summary(analysis.report, paths)
    return 0


if __name__ == "__main__":
    run_cli(main)
