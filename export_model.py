"""Export a fine-tuning run's merged model for llama.cpp and Ollama: one GGUF file per quantization type (with the
tokenizer and the chat template in it), an Ollama Modelfile that asks it as the pipeline does, and a README.

    python export_model.py                              # the latest run: f16 and q8_0 into outputs/runs/<run>/gguf/
    python export_model.py --run smollm2-lora --quant f16,q8_0,q4_0
    python export_model.py --output-dir /tmp/smollm2-gguf
    python export_model.py --push-to-hub you/smollm2-products            # then upload the GGUF folder
    python export_model.py --push-to-hub you/smollm2-products --push merged

Quant types: f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0 (q4/q5 keep the embeddings in q8_0). Then
`ollama create NAME -f outputs/runs/<run>/gguf/Modelfile` and `ollama run NAME "What is ...?"`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from config import Config
from product_qa.configurator import config_from_args, stage_parser
from product_qa.errors import UserError, run_cli
from product_qa.exporting import DEFAULT_QUANTS, check_architecture, export_model, parse_quants
from product_qa.hub import PUSHED_FOLDERS, add_push_arguments, check_hub_access
from product_qa.reporting import terminal_text
from product_qa.runs import add_run_argument, run_from_args
from product_qa.settings import read_run_report


def build_parser() -> argparse.ArgumentParser:
    # the run's own prompt settings come from its config.json: here only where runs are and how answers are decoded
    parser = stage_parser(__doc__, sections=("generation", "eval.run_name", "train.output_dir"))
    add_run_argument(parser)
    parser.add_argument("--quant", default=",".join(DEFAULT_QUANTS),
                        help=f"quantization types, comma-separated (default: {','.join(DEFAULT_QUANTS)})")
    parser.add_argument("--output-dir", type=Path, help="where the export goes (default: the run's gguf/ folder); "
                                                        "replaced whole")
    add_push_arguments(parser, ("gguf", *PUSHED_FOLDERS), "gguf")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    cfg = config_from_args(Config(), args)
    quants = parse_quants(args.quant)
    token = check_hub_access(args.push_to_hub) if args.push_to_hub else None
    run_dir = run_from_args(cfg, args)
    if run_dir is None:
        raise UserError(f"no fine-tuning run under {cfg.train.output_dir} to export; train one with "
                        "`python fine_tuning_project.py`")
    model_dir = run_dir / "merged"
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no merged model in the run; train it again with `python "
                        f"fine_tuning_project.py --run-name {run_dir.name}`")
    check_architecture(model_dir)  # an unsupported model is said before anything is read

    from product_qa.answering.systems import run_decoding, run_train_settings  # heavy imports after argument checks

    train_cfg = run_train_settings(cfg, run_dir)
    output_dir = args.output_dir or run_dir / "gguf"
    export = export_model(model_dir, output_dir, quants, run_dir.name, train_cfg.prompt_template,
                          train_cfg.system_prompt, run_decoding(cfg, train_cfg, read_run_report(run_dir)))
    print(f"exported {run_dir.name} to {terminal_text(str(output_dir))} (read in {export.seconds['read']:.1f} s):")
    for quant, path in export.files.items():
        print(f"  {path.name}  {path.stat().st_size / 2**20:,.1f} MB  {export.seconds[quant]:.1f} s")
    print(f"Ollama: ollama create {run_dir.name} -f {terminal_text(str(output_dir / 'Modelfile'))}")
    if args.push_to_hub:
        from product_qa.hub import push_folder

        folder = output_dir if args.push == "gguf" else run_dir / PUSHED_FOLDERS[args.push]
        print(f"pushed the {args.push} folder: {push_folder(folder, args.push_to_hub, token, args.push)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
