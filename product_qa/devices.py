"""Where the model runs and in which precision, chosen in one place for training, answering and the encoder:
CUDA, then Apple's MPS, then the CPU."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TextIO

import torch

from product_qa.errors import UserError

# the precision names of config.py's train.precision, as torch dtypes
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def best_device() -> str:
    """cuda when a usable NVIDIA GPU is there, else mps on Apple Silicon, else cpu."""
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cuda_unusable_warning() -> str | None:
    """One line when this machine has an NVIDIA driver but torch cannot use the GPU (a driver older than the
    CUDA of the torch build, or a CPU-only build): without it the run would silently train on the CPU."""
    if torch.cuda.is_available() or not nvidia_driver_present():
        return None
    build = f"torch {torch.__version__} (CUDA {torch.version.cuda})" if torch.version.cuda else \
        f"torch {torch.__version__}, a CPU-only build"
    return (f"warning: an NVIDIA driver is installed but {build} cannot use the GPU; running on the "
            f"{best_device().upper()}. Install the torch build that matches the driver (README_FINE_TUNING.md, GPU).")


def cpu_supports_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX). Without them bf16 autocast
    is emulated and far slower than fp32."""
    try:
        flags = Path(cpuinfo_path).read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def select_precision(requested: str, device: str) -> str:
    """bf16, fp16 or fp32 for training on this device. auto: on CUDA bf16 where supported, else fp16; on MPS
    fp32 (the Trainer's mixed precision is CUDA's and the CPU's); on CPU bf16 where the processor has native
    bf16, else fp32."""
    if device == "mps":
        if requested in ("fp16", "bf16"):
            raise UserError(f"{requested} training needs a CUDA GPU (or bf16 on a CPU); on Apple MPS use "
                            "train.precision=fp32 or auto")
        return "fp32"
    if device == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return "bf16" if bf16_ok else "fp16"
        if requested == "bf16" and not bf16_ok:
            raise UserError("this GPU does not support bf16: use train.precision=fp16 or auto")
        return requested
    if requested == "fp16":
        raise UserError("fp16 needs a CUDA GPU; on CPU use train.precision=bf16 (with AVX512-BF16) or fp32")
    if requested == "auto":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return requested


def inference_dtype(device: str) -> torch.dtype:
    """Answering: on a GPU bf16 (fp16 where bf16 is missing), on MPS fp16 (its fast half type); on a CPU fp32,
    since generation's small matmuls gain little from bf16 and are emulated, and slow, without AVX512-BF16."""
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def announce(device: str, precision: str, file: TextIO) -> None:
    """What every stage that loads a model says first: where it runs and in which precision, after the warning
    when a GPU is there but unusable (always on stderr)."""
    if warning := cuda_unusable_warning():
        print(warning, file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name() if device == "cuda" else "Apple GPU" if device == "mps" else "CPU"
    print(f"device: {device} ({name}), precision: {precision}", file=file, flush=True)


def announce_answering() -> None:
    """announce() for the answering stages, on stderr: their stdout holds the answers."""
    device = best_device()
    precision = next(name for name, dtype in TORCH_DTYPES.items() if dtype == inference_dtype(device))
    announce(device, precision, sys.stderr)
