"""Where the model runs and in which precision, chosen in one place for training, answering and the encoder."""
from __future__ import annotations

from pathlib import Path

import torch

from product_qa.errors import UserError

# the precision names of config.py's train.precision, as torch dtypes
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def best_device() -> str:
    """cuda when a usable GPU is there, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_supports_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX). Without them bf16 autocast
    is emulated and far slower than fp32."""
    try:
        flags = Path(cpuinfo_path).read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def select_precision(requested: str, device: str) -> str:
    """bf16, fp16 or fp32 for this device. auto: on CUDA bf16 where supported, else fp16; on CPU bf16 where
    the processor has native bf16, else fp32."""
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
    """Answering: on a GPU bf16 (fp16 where bf16 is missing); on a CPU fp32, since generation's small matmuls
    gain little from bf16 and are emulated, and slow, on CPUs without AVX512-BF16."""
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
