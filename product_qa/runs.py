"""The layout of the fine-tuning runs under train.output_dir: which runs are finished, the latest one, the one
a command names (its --run flag, shared by ask.py, app.py and test_pipeline.py), what they say when there is
none yet, and the directory a run is built in until it is done."""
from __future__ import annotations

import argparse
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from product_qa.errors import UserError
from product_qa.io_utils import (
    OLD_MARK,
    TEMP_MARK,
    commit_directory,
    recover_directory,
    sync_tree,
    temp_path_for,
)

if TYPE_CHECKING:
    from config import Config

UNFINISHED_SUFFIX = ".unfinished"
RUN_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,98}[A-Za-z0-9_-])?")  # no final dot: Windows drops it


def check_run_name(name: str, where: str) -> None:
    """A run is the folder train.output_dir/NAME that training replaces whole: its name cannot reach another
    folder ('..', '/', '.'), nor carry the marks of the folders a run is built and swapped in."""
    marks = (TEMP_MARK, OLD_MARK, UNFINISHED_SUFFIX)  # in any case: Windows and macOS names ignore it
    if not RUN_NAME.fullmatch(name) or any(mark in name.lower() for mark in marks):
        raise UserError(f"{where}={name!r}: a run name is a folder name under train.output_dir: letters, digits, "
                        f"., - and _, up to 100, first a letter or digit, last not a dot, without {TEMP_MARK}, "
                        f"{OLD_MARK} or {UNFINISHED_SUFFIX}")


def unfinished_run_dir(run_dir: Path) -> Path:
    """Where a run is built (checkpoints, weights, report) until it is done and replaces `run_dir` whole, so
    that `ask.py` and the demo see the previous run or this one, never this one's weights under the other's
    report. A killed run stays here for --resume."""
    return run_dir.with_name(run_dir.name + UNFINISHED_SUFFIX)


def finish_run(work_dir: Path, run_dir: Path, unsynced: tuple[str, ...] = ()) -> None:
    """The run built in `work_dir` replaces `run_dir` whole. It first leaves the work directory's name for a
    staging name of this process: the swap then leaves the previous run (checkpoints included) under that name,
    which recover_directory removes, never under the work directory's, where --resume would take it for the
    newer run and continue it. Killed between the two steps, the finished run is removed and the previous one
    stays, as for a kill at the swap itself (the files are flushed to disk before, while a kill still leaves them
    to --resume)."""
    sync_tree(work_dir, unsynced)
    staging = temp_path_for(run_dir)
    shutil.rmtree(staging, ignore_errors=True)  # left by an earlier process of the same id
    os.rename(work_dir, staging)
    commit_directory(staging, run_dir, unsynced)  # flushed already: its own flush finds nothing left to write


def check_trained_data(recorded: object, current: str, data_dir: str | Path, run_dir: Path, fix: str) -> None:
    """The data in `data_dir` (its prepared_data_fingerprint, `current`) is the data the run was trained on
    (`recorded`): a run asked, evaluated or resumed on data prepared anew since would be scored and served against
    products it never saw. A run of an older version recorded none: it is used as before."""
    if isinstance(recorded, str) and recorded != current:
        raise UserError(f"{data_dir}: not the data the run {run_dir} was trained on (prepared anew since); {fix}")


def finished(run_dir: Path) -> bool:
    """A run that got to the end: its merged model, config.json and report are there, and it is no longer in the
    work directory it was built in."""
    return not run_dir.name.endswith(UNFINISHED_SUFFIX) and all(
        (run_dir / name).exists() for name in ("merged", "config.json", "training_report.json"))


def latest_run(runs_dir: Path) -> Path | None:
    """The most recently finished fine-tuning run."""
    for aside in runs_dir.glob(f"*{OLD_MARK}*"):  # a run set aside by a swap that was killed halfway
        recover_directory(runs_dir / aside.name.rpartition(OLD_MARK)[0])
    runs = [p.parent for p in runs_dir.glob("*/training_report.json") if finished(p.parent)]
    return max(runs, key=lambda run: (run / "training_report.json").stat().st_mtime, default=None)


def find_run(cfg: Config, run_name: str | None) -> Path | None:
    """The named run (an error when it is missing), else the latest one, else None (base model only)."""
    runs_dir = Path(cfg.train.output_dir)
    if run_name is None:
        return latest_run(runs_dir)
    check_run_name(run_name, "--run")
    run_dir = runs_dir / run_name
    recover_directory(run_dir)
    if not finished(run_dir):
        raise UserError(f"{run_dir}: no finished fine-tuning run there; train one with `python "
                        f"fine_tuning_project.py --run-name {run_name}`")
    return run_dir


def add_run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", help="fine-tuning run (default: eval.run_name, else the latest run)")


def run_from_args(cfg: Config, args: argparse.Namespace) -> Path | None:
    """The run --run names, else eval.run_name's, else the latest; None before any run (see no_run_note)."""
    return find_run(cfg, args.run or cfg.eval.run_name)


def no_run_note(cfg: Config, run_dir: Path | None) -> str | None:
    """Why the base model answers where the fine-tuned one would, and what to do about it; None with a run."""
    if run_dir is not None:
        return None
    return (f"no fine-tuned model yet (nothing under {cfg.train.output_dir}): the base model answers in its place; "
            "train one with `python fine_tuning_project.py`")
