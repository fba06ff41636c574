"""Exploratory analysis of trn.json: statistics, quality issues, plots and report.md, in one streamed pass.

    python data_analysis.py                               # the bundled sample_data.json
    python data_analysis.py --data trn.json.gz --set analysis.top_k=50

Writes outputs/analysis/report.md, data_analysis_report.json and the PNG plots (see README_FINE_TUNING.md).
"""
from __future__ import annotations

import argparse

from config import Config
from product_qa.analysis import analyse
from product_qa.analysis_report import print_analysis_summary, write_report
from product_qa.configurator import add_override_argument, apply_overrides
from product_qa.errors import run_cli


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="input file (default: data.raw_path in config.py)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_override_argument(parser)
    args = parser.parse_args()

    cfg = apply_overrides(Config(), args.overrides)
    if args.data:
        cfg.data.raw_path = args.data
    analysis = analyse(cfg, progress=not args.no_progress)
    paths = write_report(analysis, cfg.analysis.output_dir)
    print_analysis_summary(analysis.report, paths)
    return 0


if __name__ == "__main__":
    run_cli(main)
