"""Device and precision choice (product_qa/devices.py) with the accelerators' availability patched: CUDA, then
MPS, then the CPU; the precision each supports; the warning when a GPU is there but torch cannot use it."""
from __future__ import annotations

import pytest
import torch

import product_qa.devices as devices
from product_qa.errors import UserError


@pytest.fixture
def machine(monkeypatch):
    """Patch what the machine has: machine(cuda=..., mps=..., driver=..., bf16_cpu=..., bf16_gpu=...)."""
    def patch(cuda: bool = False, mps: bool = False, driver: bool = False, bf16_cpu: bool = False,
              bf16_gpu: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(devices, "nvidia_driver_present", lambda: driver)
        monkeypatch.setattr(devices, "cpu_supports_bf16", lambda: bf16_cpu)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_gpu)
    return patch


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert devices.best_device() == expected


def test_training_precision_follows_what_each_device_supports(machine):
    machine(bf16_cpu=True)
    assert devices.select_precision("auto", "cpu") == "bf16"
    machine(bf16_cpu=False)
    assert devices.select_precision("auto", "cpu") == "fp32"
    assert devices.select_precision("bf16", "cpu") == "bf16"  # asked for explicitly: allowed, if slow
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        devices.select_precision("fp16", "cpu")
    machine(cuda=True, bf16_gpu=True)
    assert devices.select_precision("auto", "cuda") == "bf16"
    machine(cuda=True, bf16_gpu=False)
    assert devices.select_precision("auto", "cuda") == "fp16"
    with pytest.raises(UserError, match="does not support bf16"):
        devices.select_precision("bf16", "cuda")
    machine(mps=True)
    assert devices.select_precision("auto", "mps") == "fp32"
    for half in ("fp16", "bf16"):
        with pytest.raises(UserError, match="on Apple MPS use train.precision=fp32"):
            devices.select_precision(half, "mps")


def test_answers_run_in_the_half_type_of_each_gpu_and_in_fp32_on_the_cpu(machine):
    machine(cuda=True, bf16_gpu=True)
    assert devices.inference_dtype("cuda") == torch.bfloat16
    machine(cuda=True, bf16_gpu=False)
    assert devices.inference_dtype("cuda") == torch.float16
    assert devices.inference_dtype("mps") == torch.float16
    assert devices.inference_dtype("cpu") == torch.float32


def test_cpu_flags_decide_native_bf16(tmp_path):
    with_bf16, without = tmp_path / "bf16", tmp_path / "plain"
    with_bf16.write_text("flags\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n")
    without.write_text("flags\t: fpu sse avx2\n")
    assert devices.cpu_supports_bf16(str(with_bf16)) and not devices.cpu_supports_bf16(str(without))
    assert not devices.cpu_supports_bf16(str(tmp_path / "missing"))


def test_a_gpu_torch_cannot_use_is_said_in_one_line(machine):
    machine(cuda=False, driver=True)
    warning = devices.cuda_unusable_warning()
    assert warning is not None and "\n" not in warning and "cannot use the GPU" in warning and "CPU" in warning
    machine(cuda=False, driver=False)  # no NVIDIA GPU at all: nothing to warn about
    assert devices.cuda_unusable_warning() is None
    machine(cuda=True, driver=True)
    assert devices.cuda_unusable_warning() is None


def test_peak_memory_is_in_megabytes_on_linux_and_macos(monkeypatch):
    import resource

    import product_qa.memory as memory

    usage = type("Usage", (), {"ru_maxrss": 512 * 1024})()  # 512 MB as Linux says it (KiB)
    monkeypatch.setattr(resource, "getrusage", lambda who: usage)
    monkeypatch.setattr(memory.sys, "platform", "linux")
    assert memory.peak_rss_mb() == 512
    usage.ru_maxrss = 512 * 2**20  # the same peak as macOS says it (bytes)
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.peak_rss_mb() == 512
