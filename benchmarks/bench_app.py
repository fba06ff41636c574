"""Benchmark of the web demo's answer latency (a benchmark, not a test): how long a person waits for a 64-token
answer from the default model, asked through the running page (HTTP, the queue, token streaming), against the
same prompts answered by a plain model.generate call in the same run (the baseline: the model's own time).

    python -m benchmarks.bench_app [--questions 10] [--tokens 64] [--mode fine_tuned]

The model is the latest fine-tuning run's when there is one (what the page answers with), else the base model.
Every answer is made exactly --tokens long (the model's end-of-text is held off), so the latencies compare
like with like. It prints the median time to the first streamed words and to the whole answer.
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import socket
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client

from config import Config
from product_qa.answering.generation import generate_answers
from product_qa.answering.systems import Answerer
from product_qa.app.webapp import PANELS, Demo, build_page, launch
from product_qa.configurator import positive_int
from product_qa.data.examples import output_paths, read_examples
from product_qa.data.preparation import prepare
from product_qa.errors import run_cli
from product_qa.runs import latest_run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ask_page(url: str, question: str, mode: str) -> tuple[float, float, str]:
    """Seconds to the first words of the answer and to the finished answer, and the answer, as a browser
    would see them (this runs in its own process, so the server has its process to itself)."""
    panel = PANELS.index(mode)
    client = Client(url, verbose=False)
    started = time.perf_counter()
    job = client.submit(question, mode, api_name="/respond")
    first = None
    for update in job:
        if first is None and update[panel]:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    return first if first is not None else total, total, job.outputs()[-1][panel]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=positive_int, default=10)
    parser.add_argument("--tokens", type=positive_int, default=64)
    parser.add_argument("--mode", default=None, choices=["base", "fine_tuned"],
                        help="the panel to ask (default: fine_tuned when a run exists, else base)")
    args = parser.parse_args()

    cfg = Config()
    cfg.generation.max_new_tokens = args.tokens
    prepare(cfg.data, progress=False)
    run_dir = latest_run(Path(cfg.train.output_dir))
    demo = Demo.load(Answerer(cfg, run_dir))
    mode = args.mode or ("fine_tuned" if run_dir else "base")
    model = demo.answerer.model(mode)
    model.generation_config.min_new_tokens = args.tokens  # every answer exactly --tokens long, in both paths
    questions = [e["question"] for e in read_examples(output_paths(demo.answerer.data_cfg)["validation"],
                                                      args.questions, seed=0)]
    print(f"{mode} model ({run_dir if mode == 'fine_tuned' else demo.answerer.model_cfg.name}), "
          f"{len(questions)} validation questions, "
          f"{args.tokens}-token answers, greedy; {model.device}, {os.cpu_count()} CPUs")

    # baseline: the model alone, one plain generate() call per question (no streaming, no web server);
    # each question is asked both ways in turn, so a busy spell on the machine hits both alike
    decoding = dataclasses.replace(cfg.generation, batch_size=1)
    prompts = [demo.answerer.prompt(q) for q in questions]
    page = build_page(demo, Path(cfg.analysis.output_dir), REPO / "docs" / "analysis", Path(cfg.eval.output_dir))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    launch(page, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    plain, asked = [], []
    try:
        with multiprocessing.get_context("spawn").Pool(1) as browser:
            generate_answers(model, demo.answerer.tokenizer, prompts[:1], decoding)  # warm-up
            browser.apply(ask_page, (url, questions[0], mode))
            for question, prompt in zip(questions, prompts, strict=True):
                plain += generate_answers(model, demo.answerer.tokenizer, [prompt], decoding)
                asked.append(browser.apply(ask_page, (url, question, mode)))
    finally:
        page.close()
    assert all(a.new_tokens == args.tokens for a in plain), [a.new_tokens for a in plain]
    plain_median = statistics.median(a.seconds for a in plain)
    first_median = statistics.median(first for first, _, _ in asked)
    page_median = statistics.median(total for _, total, _ in asked)
    same = sum(text == a.text for (_, _, text), a in zip(asked, plain, strict=True))

    print(f"plain generate(), no streaming : median {plain_median:5.2f} s per {args.tokens}-token answer "
          f"({args.tokens / plain_median:.1f} tokens/s)")
    print(f"web page, streamed             : median {page_median:5.2f} s per {args.tokens}-token answer; "
          f"first words after {first_median:.2f} s")
    print(f"page / plain: {page_median / plain_median:.2f}x; {same}/{len(questions)} answers identical")


if __name__ == "__main__":
    run_cli(main)
