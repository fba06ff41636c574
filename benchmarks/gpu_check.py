"""Check every CUDA path in a few minutes, for the day a GPU is at hand: the main job in fp16 and in bf16,
QLoRA (4-bit base, needs requirements_gpu.txt), the evaluation and ask.py, each on the bundled sample.

    python -m benchmarks.gpu_check                 # about 4 to 8 minutes on one GPU
    python -m benchmarks.gpu_check --steps 40      # longer training paths (steadier tokens/s)

Prints one line per path, `ok` with its time and training tokens/s or `FAILED` with the error's last line,
and exits 1 when a path failed. Runs go under outputs/gpu_check/, never over your own runs.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from product_qa.configurator import positive_int
from product_qa.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "outputs" / "gpu_check"
TIMEOUT_S = 90  # per path: five paths stay under 8 minutes even when every one hangs
QUESTION = "What is the Girls Ballet Tutu Neon Pink?"


@dataclass
class Outcome:
    path: str
    ok: bool
    seconds: float
    detail: str


def _common(steps: int) -> list[str]:
    """Small, fixed work per path: the check is about whether a path runs, and its speed, not about quality."""
    settings = [f"train.output_dir={WORK / 'runs'}", f"eval.output_dir={WORK / 'evaluation'}",
                f"train.max_steps={steps}", "train.eval_steps=10", "train.recall_questions=4",
                "eval.catalog_questions=16", "eval.unknown_questions=8", "eval.test_questions=2"]
    return ["--no-progress", *sum((["--set", s] for s in settings), [])]


def _run(path: str, command: list[str]) -> tuple[Outcome, str]:
    started = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True,
                                timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Outcome(path, False, time.perf_counter() - started, f"timed out after {TIMEOUT_S} s"), ""
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no error output)"])[-1]
        return Outcome(path, False, seconds, f"exit {result.returncode}: {last[:200]}"), result.stdout
    return Outcome(path, True, seconds, ""), result.stdout


def _train(path: str, run_name: str, settings: list[str], steps: int) -> Outcome:
    outcome, _ = _run(path, ["fine_tuning_project.py", "--run-name", run_name, *_common(steps),
                             *sum((["--set", s] for s in settings), [])])
    if not outcome.ok:
        return outcome
    report = orjson.loads((WORK / "runs" / run_name / "training_report.json").read_bytes())
    if report["device"] != "cuda":
        return Outcome(path, False, outcome.seconds, f"trained on {report['device']}, not on the GPU")
    outcome.detail = (f"{report['precision']}, {report['steps']} steps, {report['tokens_per_second']:,.0f} tokens/s, "
                      f"recall ROUGE-L {report['recall']['fine_tuned']['rougeL']:.2f}"
                      if report.get("recall") else f"{report['precision']}, {report['steps']} steps")
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=20, help="optimizer steps of each training path")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no usable CUDA GPU here (torch.cuda.is_available() is False): nothing to check")
        sys.exit(1)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    outcomes = [_train("train fp16", "gpu-fp16", ["train.precision=fp16"], args.steps),
                _train("train bf16", "gpu-bf16", ["train.precision=bf16"], args.steps),
                _train("train qlora", "gpu-qlora", ["train.method=qlora"], args.steps)]
    run = "gpu-bf16" if outcomes[1].ok else "gpu-fp16"
    evaluation, _ = _run("evaluate", ["test_pipeline.py", "--evaluate", "--run", run, *_common(args.steps)])
    if evaluation.ok:
        report = orjson.loads((WORK / "evaluation" / "evaluation_report.json").read_bytes())
        seen = report["sets"]["catalog"]["systems"]
        evaluation.detail = ", ".join(f"{name} {entry['summary']['rougeL']:.2f}" for name, entry in seen.items())
    outcomes.append(evaluation)
    ask, answer = _run("ask.py", ["ask.py", "--run", run, *_common(args.steps), QUESTION])
    if ask.ok:
        ask.detail = " ".join(answer.split())[:80]
    outcomes.append(ask)
    for outcome in outcomes:
        status = "ok    " if outcome.ok else "FAILED"
        print(f"{status} {outcome.path:<12} {outcome.seconds:6.1f} s  {outcome.detail}")
    sys.exit(0 if all(outcome.ok for outcome in outcomes) else 1)


if __name__ == "__main__":
    run_cli(main)
