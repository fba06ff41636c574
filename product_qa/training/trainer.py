"""Fine-tuning with the Hugging Face Trainer: answer-only loss (and logits), length-grouped dynamic padding,
LoRA / full / QLoRA, checkpoints, resume, early stopping, and a report of what happened.

Batches are padded to their longest example, never to max_length, and examples of similar length are batched
together (the encoding and the batches are in `encoding.py`).
"""
from __future__ import annotations

import importlib.util
import inspect
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from tqdm import tqdm
from transformers import EarlyStoppingCallback, TrainerCallback

from product_qa.data.encoding import AnswerOnlyCollator, answer_only_loss, contiguous_output_layer_input, perplexity
from product_qa.devices import TORCH_DTYPES
from product_qa.errors import UserError
from product_qa.io_utils import read_json
from product_qa.modeling import damaged_weights

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import (
        PreTrainedModel,
        PreTrainedTokenizerBase,
        Trainer,
        TrainerControl,
        TrainerState,
        TrainingArguments,
    )

    from config import TrainConfig


# ------------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelChoice:
    """The base model a run trains, and how this machine runs it."""

    path: str  # what from_pretrained loads (modeling.resolve_model_path)
    precision: str  # bf16, fp16 or fp32 (devices.select_precision)
    device: str  # cuda, mps or cpu (devices.best_device)
    trust_remote_code: bool


def load_model(choice: ModelChoice, train: TrainConfig) -> PreTrainedModel:
    """The model to train: the full model, or the base wrapped with LoRA adapters (4-bit base for QLoRA).
    On CUDA a LoRA base is loaded in half precision (the float16 loading users expect); the trained
    weights stay in fp32 (master weights) and the forward pass runs under autocast."""
    from transformers import AutoModelForCausalLM

    if train.method == "qlora":
        check_qlora_possible(choice.device)
    try:
        model = AutoModelForCausalLM.from_pretrained(choice.path, trust_remote_code=choice.trust_remote_code,
                                                     **_loading_precision(choice, train.method))
    except SafetensorError as err:
        raise damaged_weights(choice.path, err) from None
    except (OSError, ValueError) as err:
        raise UserError(f"model {choice.path!r} could not be loaded: {str(err).splitlines()[0][:200]}") from None
    return model if train.method == "full" else _with_lora(model, train)


def check_qlora_possible(device: str) -> None:
    """QLoRA's 4-bit base needs an NVIDIA GPU and bitsandbytes: say which is missing, and the fix, in one line."""
    if device != "cuda":
        raise UserError(f"train.method=qlora (a 4-bit base) needs an NVIDIA GPU, and this machine trains on "
                        f"{device.upper()}: use train.method=lora")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("train.method=qlora needs the bitsandbytes package: run `make install-gpu` (or "
                        "`pip install -r requirements_gpu.txt`)")


class TrainingStarted(TrainerCallback):
    """Set once the Trainer begins to train: a resumed run's checkpoint is loaded before, so an error before it
    is the checkpoint's, and one after it is the run's own."""

    def __init__(self) -> None:
        self.started = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = True


def check_logging_possible(report_to: str) -> None:
    """The tracker train.report_to names is installed: said before any work (the Trainer finds out only after
    the data is prepared and the model loaded)."""
    if report_to != "none" and importlib.util.find_spec(report_to) is None:
        raise UserError(f"train.report_to={report_to} needs the {report_to} package: `pip install {report_to}`, "
                        "or set train.report_to=tensorboard (installed) or none")


def _loading_precision(choice: ModelChoice, method: str) -> dict[str, Any]:
    """from_pretrained's dtype (or 4-bit quantization, for QLoRA) for this method on this device."""
    half = {"bf16": TORCH_DTYPES["bf16"], "fp16": TORCH_DTYPES["fp16"]}.get(choice.precision)
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                          bnb_4bit_use_double_quant=True,
                                                          bnb_4bit_compute_dtype=half or torch.float16)}
    if method == "lora" and choice.device == "cuda" and half is not None:
        return {"dtype": half}
    return {"dtype": torch.float32}


def _with_lora(model: PreTrainedModel, train: TrainConfig) -> PreTrainedModel:
    """The base model wrapped with train.lora_* adapters (a 4-bit base readied for training first)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if train.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train.gradient_checkpointing)
    targets = train.lora_target_modules
    lora = LoraConfig(r=train.lora_r, lora_alpha=train.lora_alpha, lora_dropout=train.lora_dropout,
                      target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                      task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as err:  # e.g. target modules the model does not have
        raise UserError(f"train.lora_target_modules={targets!r}: {str(err).splitlines()[0][:200]}") from None


def count_parameters(model: PreTrainedModel) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- training
EVAL_SETS = ("catalog", "validation")  # the loss of catalog products asked anew, and of unseen products


def training_arguments(train: TrainConfig, run_dir: Path, precision: str, device: str, train_examples: int,
                       rounds: int) -> TrainingArguments:
    """The Trainer's arguments. The training examples hold `rounds` passes over the catalog, in their order
    (catalog.training_views), so the Trainer makes one sequential pass (or the share of it train.epochs asks)."""
    from transformers import TrainingArguments

    passes = train.epochs / rounds
    steps_per_pass = math.ceil(train_examples / (train.batch_size * train.gradient_accumulation_steps))
    total_steps = train.max_steps if train.max_steps > 0 else math.ceil(steps_per_pass * passes)
    # the train.* values are the user's (config.py says why); the others say why here
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=passes,  # one pass over the examples holds all the rounds: train.epochs / rounds of it
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        warmup_steps=round(train.warmup_ratio * total_steps),  # a share of the run, whatever its length
        lr_scheduler_type=train.lr_scheduler,
        train_sampling_strategy="sequential",  # the order is training_order's
        length_column_name="length",
        bf16=precision == "bf16",  # mixed precision where select_precision chose it for this device
        fp16=precision == "fp16",
        use_cpu=device == "cpu",  # the device chosen for the model, not the Trainer's own guess
        activation_checkpointing=train.gradient_checkpointing,
        eval_strategy="steps",  # the loss curves and early stopping need evaluations during the run
        eval_steps=train.eval_steps,
        save_strategy="steps",
        save_steps=train.eval_steps,  # a checkpoint at each evaluation, so the best one can be loaded back
        save_total_limit=train.save_total_limit,
        load_best_model_at_end=train.early_stopping_patience is not None,  # early stopping keeps the best
        metric_for_best_model=f"eval_{train.early_stopping_on}_loss",  # one of the two evaluation sets
        greater_is_better=False,  # a loss
        logging_steps=train.logging_steps,
        # tensorboard: the run adds its own writer, into the run's logs/ (the Trainer's would write under checkpoints/)
        report_to="none" if train.report_to == "tensorboard" else train.report_to,
        prediction_loss_only=True,  # evaluation needs the loss only: gathering every logit costs time and memory
        seed=train.seed,
        data_seed=train.seed,  # the same batches on every run with the same seed
        remove_unused_columns=False,  # the collator needs prompt_length, which the model's forward does not take
        label_names=["labels"],  # a PEFT model hides the base model's arguments, where the Trainer looks for them
        ddp_find_unused_parameters=False,  # every trained weight gets a gradient: DDP need not search each step
        disable_tqdm=True,  # LossProgressCallback draws the bar, with the loss
        dataloader_num_workers=0,
    )


def training_order(lengths: list[int], round_size: int, batch_size: int, group_by_length: bool, seed: int
                   ) -> list[int]:
    """The order of the training examples: round after round (each round keeps to itself, so every epoch asks
    each product its own way), and within a round, with `group_by_length`, batches of similar lengths (less
    padding; the Trainer's LengthGroupedSampler, applied per round)."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    order: list[int] = []
    for start in range(0, len(lengths), round_size):
        size = min(round_size, len(lengths) - start)
        if group_by_length:
            generator = torch.Generator().manual_seed(seed + start)
            order.extend(start + i for i in get_length_grouped_indices(lengths[start:start + size], batch_size,
                                                                       generator=generator))
        else:
            order.extend(range(start, start + size))  # already shuffled within the round
    return order


def _model_columns(dataset: Dataset) -> Dataset:
    return dataset.remove_columns([c for c in dataset.column_names
                                   if c not in ("input_ids", "prompt_length", "length")])


class LossProgressCallback(TrainerCallback):
    """One progress bar with the latest train and eval loss and the ETA (instead of printed log dicts)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.bar = enabled, None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if self.enabled and state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step")

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        names = {"loss": "loss", "eval_catalog_loss": "catalog", "eval_validation_loss": "validation"}
        shown = {label: f"{logs[key]:.3f}" for key, label in names.items() if key in (logs or {})}
        if self.bar is not None and shown:
            self.bar.set_postfix(shown, refresh=True)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()


class FollowedSetEarlyStopping(EarlyStoppingCallback):
    """Early stopping on one of several evaluation sets: the Trainer reports each set's evaluation on its own,
    and those of the other sets do not hold the metric followed (the library warns for each of them)."""

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float], **kwargs: Any) -> None:
        if args.metric_for_best_model in metrics:
            super().on_evaluate(args, state, control, metrics, **kwargs)


class StopWhenCatalogLearned(TrainerCallback):
    """Ends the run at the first evaluation whose catalog loss (the catalog's descriptions asked with held-out
    phrasings, nats per answer token) is `loss` or less: the catalog is learned, and the rest of the planned run
    would cost time for no recall. The step it stopped at is kept for the report."""

    def __init__(self, loss: float) -> None:
        self.loss, self.stopped_at = loss, None

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float], **kwargs: Any) -> None:
        if metrics.get("eval_catalog_loss", math.inf) <= self.loss and state.global_step < state.max_steps:
            control.should_training_stop = True
            self.stopped_at = state.global_step


@dataclass(frozen=True)
class TrainingSets:
    """The tokenized examples a run trains on, in training order, and each of EVAL_SETS."""

    train: Dataset
    evaluation: dict[str, Dataset]


def tensorboard_logs(log_dir: Path) -> TrainerCallback:
    """The Trainer's TensorBoard callback, writing its event files to log_dir (`tensorboard --logdir` it)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(SummaryWriter(log_dir=str(log_dir)))


def build_trainer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sets: TrainingSets,
                  args: TrainingArguments, train: TrainConfig, progress: bool) -> Trainer:
    from transformers import PrinterCallback, Trainer

    callbacks = [LossProgressCallback(enabled=progress)]
    if train.early_stopping_patience is not None:
        callbacks.append(FollowedSetEarlyStopping(early_stopping_patience=train.early_stopping_patience))
    if train.learned_catalog_loss is not None:
        callbacks.append(StopWhenCatalogLearned(train.learned_catalog_loss))
    # a model whose forward has no logits_to_keep (some remote-code models) computes every position, as before
    base_forward = getattr(model, "get_base_model", lambda: model)().forward
    answer_only = train.answer_only_logits and "logits_to_keep" in inspect.signature(base_forward).parameters
    collator = AnswerOnlyCollator(tokenizer.pad_token_id, answer_only_logits=answer_only)
    if answer_only:
        contiguous_output_layer_input(model)
    trainer = Trainer(model=model, args=args, train_dataset=_model_columns(sets.train),
                      eval_dataset={name: _model_columns(sets.evaluation[name]) for name in EVAL_SETS},
                      data_collator=collator, processing_class=tokenizer,
                      compute_loss_func=answer_only_loss, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # the bar shows the losses; the report keeps the whole history
    return trainer


CHECKPOINT_PREFIX = "checkpoint-"  # the Trainer's checkpoint-<step> folders


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a checkpoint-<step> folder; None for a folder of another name (checkpoint-abc)."""
    step = Path(path).name.removeprefix(CHECKPOINT_PREFIX)
    return int(step) if step.isascii() and step.isdigit() else None


def latest_checkpoint(run_dir: Path, remove_incomplete: bool = True) -> str | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json last, so a run killed while saving
    leaves a folder without it (or with it cut short): such folders are skipped (and removed, unless
    `remove_incomplete` is False), and the one before is used."""
    steps = {folder: checkpoint_step(folder) for folder in (run_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*")}
    folders = sorted((folder for folder, step in steps.items() if step is not None), key=steps.get, reverse=True)
    for folder in folders:
        try:
            read_json(folder / "trainer_state.json", "checkpoint's trainer state")
            return str(folder)
        except UserError:
            if remove_incomplete:
                shutil.rmtree(folder, ignore_errors=True)
    return None


TRAINING_ARGS_FILE = "training_args.bin"  # a whole pickle the Trainer saves for people and never loads back


def check_checkpoint_files(checkpoint: Path) -> None:
    """Every file of the checkpoint loads as the Trainer loads it (tensors with weights_only=True and its allowed
    globals, safetensors whole, JSON), before training resumes: a truncated rng_state.pth or adapter, or a pickle
    weights_only refuses, is one line naming the file and the way out, not a traceback midway through resuming."""
    from safetensors.torch import load_file
    from transformers.trainer_pt_utils import safe_globals

    for path in sorted(checkpoint.rglob("*")):
        try:
            if path.suffix in (".pt", ".pth", ".bin") and path.name != TRAINING_ARGS_FILE:
                with safe_globals():
                    torch.load(path, map_location="cpu", weights_only=True)
            elif path.suffix == ".safetensors":
                load_file(path, device="cpu")
            elif path.suffix == ".json":
                read_json(path, "checkpoint's settings")
        except Exception as err:  # whatever a damaged file makes its loader raise (pickle, zip, safetensors)
            reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise UserError(f"--resume: {path} is damaged ({reason}); delete {checkpoint} to resume from the "
                            "checkpoint before it, or train again without --resume") from None


def prepare_run_dir(work_dir: Path, resume: bool, main: bool = True) -> str | None:
    """The checkpoint to resume from (None to start fresh). A fresh start clears what an unfinished run left.
    Only the main process changes the work directory; the other ranks of a multi-process run (called after the
    main one is done here) only read the checkpoint they resume from."""
    if resume:
        if (checkpoint := latest_checkpoint(work_dir, remove_incomplete=main)) is None:
            raise UserError(f"--resume: no checkpoint in {work_dir / 'checkpoints'} to resume from (only a run "
                            "stopped before it finished can be resumed)")
        check_checkpoint_files(Path(checkpoint))
        return checkpoint
    if main:
        shutil.rmtree(work_dir, ignore_errors=True)
    return None


def save_outputs(trainer: Trainer, tokenizer: PreTrainedTokenizerBase, run_dir: Path, choice: ModelChoice,
                 method: str) -> None:
    """The adapter (LoRA/QLoRA) and the merged model, both safetensors, each with the tokenizer."""
    model = trainer.model
    if method == "full":
        model.save_pretrained(run_dir / "merged", safe_serialization=True)
        tokenizer.save_pretrained(run_dir / "merged")
        return
    model.save_pretrained(run_dir / "adapter", safe_serialization=True)
    tokenizer.save_pretrained(run_dir / "adapter")
    if method == "qlora":  # a 4-bit base cannot hold the merge
        model = _adapter_on_half_precision_base(run_dir / "adapter", choice)
    merged = model.merge_and_unload()
    merged.save_pretrained(run_dir / "merged", safe_serialization=True)
    tokenizer.save_pretrained(run_dir / "merged")


def _adapter_on_half_precision_base(adapter_dir: Path, choice: ModelChoice) -> PreTrainedModel:
    """The saved adapter on a bf16 (else fp16) copy of the base model, ready to merge."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(choice.path, dtype=TORCH_DTYPES["bf16" if choice.precision == "bf16"
                                                                                else "fp16"],
                                                trust_remote_code=choice.trust_remote_code)
    return PeftModel.from_pretrained(base, adapter_dir)


def loss_history(log_history: list[dict]) -> dict[str, list]:
    """(step, loss) pairs of the training loss and of each evaluation set's; a step evaluated twice (a resumed
    run's) counts once."""
    history = {"train": [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]}
    for name in EVAL_SETS:
        key = f"eval_{name}_loss"
        history[name] = sorted({entry["step"]: entry[key] for entry in log_history if key in entry}.items())
    return history


def with_perplexity(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    return [(step, perplexity(loss)) for step, loss in points]
