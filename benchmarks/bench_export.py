"""Benchmark of export_model.py (a benchmark, not a test): a run's merged model exported to GGUF, each quant timed,
then the run's catalog questions answered greedily with the run's prompt and decoding (as test_pipeline.py asks
them) by the merged model (the baseline) and by each GGUF file read back by transformers, in one run.
Targets: the export of the default model within 60 s a quant on 2 cores; f16 answers identical to the merged
model's; q8_0 answers at mean ROUGE-L >= 0.98 against them. With llama-cpp-python importable, llama.cpp answers
from each file too (its own sampler set to greedy, the repetition penalty applied to the answer's tokens only, as
the pipeline does).

    python -m benchmarks.bench_export [--run smollm2-lora] [--questions 40] [--quant f16,q8_0]

The export goes to a temporary folder: the run is only read. The last line is JSON.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

from config import Config
from product_qa.configurator import apply_overrides, positive_int
from product_qa.errors import UserError, run_cli
from product_qa.exporting import parse_quants

TARGET_SECONDS = 60.0
TARGET_Q8_ROUGE = 0.98


def llama_cpp_answers(path: Path, prompts: list[str], max_new_tokens: int, penalty: float) -> list[str]:
    """Greedy answers from llama.cpp (llama-cpp-python), the penalty on the answer's own tokens as in
    answering/generation.py (llama.cpp's own repeat_penalty also counts the prompt's)."""
    import numpy as np
    from llama_cpp import Llama, LogitsProcessorList

    llama = Llama(model_path=str(path), n_ctx=2048, n_threads=2, verbose=False, logits_all=False)
    answers = []
    for prompt in prompts:
        prompt_ids = llama.tokenize(prompt.encode(), add_bos=False, special=True)

        def answer_penalty(input_ids: np.ndarray, scores: np.ndarray, start: int = len(prompt_ids)) -> np.ndarray:
            seen = np.unique(input_ids[start:])
            scores[seen] = np.where(scores[seen] > 0, scores[seen] / penalty, scores[seen] * penalty)
            return scores

        out = llama.create_completion(prompt_ids, max_tokens=max_new_tokens, temperature=0.0, top_k=1,
                                      repeat_penalty=1.0, logits_processor=LogitsProcessorList([answer_penalty]))
        answers.append(out["choices"][0]["text"].strip())
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="the run to export (default: eval.run_name, else the latest run)")
    parser.add_argument("--questions", type=positive_int, default=40)
    parser.add_argument("--quant", default="f16,q8_0")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args()
    cfg = apply_overrides(Config(), args.overrides)
    quants = parse_quants(args.quant)

    import torch
    from transformers import AutoModelForCausalLM

    from product_qa.answering.generation import generate_answers
    from product_qa.answering.metrics import rouge_scores
    from product_qa.answering.systems import Answerer
    from product_qa.data.prompts import HELD_OUT_PHRASINGS
    from product_qa.exporting import export_model
    from product_qa.runs import find_run

    run_dir = find_run(cfg, args.run or cfg.eval.run_name)
    if run_dir is None:
        raise UserError(f"no fine-tuning run under {cfg.train.output_dir}; train one with `python "
                        "fine_tuning_project.py`")
    answerer = Answerer(cfg, run_dir)
    # each catalog product asked as it was trained, then in the held-out phrasings the evaluation asks
    questions = [question for e in answerer.catalog.known
                 for question in (e["question"], *(p.question(e["title"]) for p in HELD_OUT_PHRASINGS))]
    prompts = [answerer.prompt(question) for question in questions[:args.questions]]
    decoding = answerer.decoding
    print(f"run {run_dir}: {len(prompts)} questions on {len(answerer.catalog.known)} catalog products, greedy, "
          f"max_new_tokens={decoding.max_new_tokens}, repetition_penalty={decoding.repetition_penalty}; "
          f"torch threads {torch.get_num_threads()}")

    def answers(model) -> list[str]:
        return [g.text for g in generate_answers(model, answerer.tokenizer, prompts, decoding)]

    reference = answers(answerer.model("fine_tuned"))
    with_llama_cpp = importlib.util.find_spec("llama_cpp") is not None
    print("llama.cpp: " + ("llama-cpp-python answers too" if with_llama_cpp else "llama-cpp-python not installed"))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        export = export_model(run_dir / "merged", Path(folder) / "gguf", quants, run_dir.name,
                              answerer.train_cfg.prompt_template, answerer.train_cfg.system_prompt, decoding)
        print(f"checkpoint and tokenizer read in {export.seconds['read']:.1f} s")
        for quant, path in export.files.items():
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                         dtype=torch.float32).eval()
            got = answers(model)
            rouge = sum(s["rougeL"] for s in rouge_scores(got, reference)) / len(reference)
            results[quant] = {"export_seconds": round(export.seconds[quant], 1),
                              "mb": round(path.stat().st_size / 2**20, 1),
                              "identical": sum(a == b for a, b in zip(got, reference, strict=True)),
                              "rougeL": round(rouge, 4)}
            if with_llama_cpp:
                llama = llama_cpp_answers(path, prompts, decoding.max_new_tokens, decoding.repetition_penalty)
                results[quant]["llama_cpp_identical"] = sum(a == b for a, b in zip(llama, reference, strict=True))
                results[quant]["llama_cpp_rougeL"] = round(
                    sum(s["rougeL"] for s in rouge_scores(llama, reference)) / len(reference), 4)
            print(f"{quant:>5}: {results[quant]}")
    count = len(reference)
    slowest = max(r["export_seconds"] for r in results.values())
    print(f"target: export <= {TARGET_SECONDS:.0f} s a quant -> slowest {slowest:.1f} s "
          f"{'MET' if slowest <= TARGET_SECONDS else 'NOT MET'}")
    if "f16" in results:
        same = results["f16"]["identical"]
        print(f"target: f16 answers identical to the merged model's -> {same}/{count} "
              f"{'MET' if same == count else 'NOT MET'}")
    if "q8_0" in results:
        rouge = results["q8_0"]["rougeL"]
        print(f"target: q8_0 ROUGE-L >= {TARGET_Q8_ROUGE} -> {rouge:.4f} "
              f"{'MET' if rouge >= TARGET_Q8_ROUGE else 'NOT MET'}")
    print(json.dumps({"run": run_dir.name, "questions": count, "read_seconds": round(export.seconds["read"], 1),
                      **results}))


if __name__ == "__main__":
    run_cli(main)
