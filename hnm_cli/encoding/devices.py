"""Where models run: the torch device for `auto`, and whether bf16 autocast is native on this CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hnm_cli.choices import Precision
from hnm_cli.errors import ConfigError

log = logging.getLogger("hnm")


def torch_device(device: str) -> str:
    """`auto` -> the best available torch device (cuda > mps > cpu); anything else as given, once it is checked.

    Raises:
        ConfigError: a device word torch does not take here, or a device this machine or torch build lacks
            (`cuda` on a CPU-only torch, `cuda:3` on a one-GPU machine, `mps` off Apple silicon).
    """
    import torch

    if device != "auto":
        check_device(device, torch)
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_device(device: str, torch: Any) -> None:
    """Raise ConfigError unless `device` (cpu, cuda, cuda:N, mps) exists on this machine, before torch asserts."""
    kind, colon, index = device.partition(":")
    where = f"torch {torch.__version__}"
    if device == "cpu":
        return
    if kind == "cuda" and (not colon or index.isdigit()):
        if not torch.backends.cuda.is_built():
            raise ConfigError(f"--device {device}: this torch build has no CUDA ({where}); use --device cpu or auto")
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError(f"--device {device}: no CUDA device is visible ({where}); use --device cpu or auto")
        if colon and int(index) >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 .. cuda:{count - 1}")
        return
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"--device mps: MPS is not available here ({where}); use --device cpu or auto")
        return
    raise ConfigError(f"--device {device!r}: must be auto, cpu, cuda, cuda:N or mps")


def cpu_has_bf16() -> bool:
    """True when /proc/cpuinfo lists native bf16 (AVX512_BF16 or AMX); elsewhere bf16 autocast is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: Precision | str, device: str) -> Precision:
    """A concrete precision for `precision` ("auto": bf16 on a CUDA GPU or a CPU with native bf16, else fp32),
    decided without importing torch, so an up-to-date rerun stays cheap and the fingerprint names what ran."""
    if precision != Precision.AUTO:
        return Precision(precision)
    if device.startswith("cuda") or (device == "auto" and likely_gpu(device)):
        return Precision.BF16
    if device == "mps":
        return Precision.FP32  # bf16 autocast on MPS depends on the macOS and torch versions
    return Precision.BF16 if cpu_has_bf16() else Precision.FP32


def warn_if_bf16_emulated(precision: str, device_type: str, what: str) -> None:
    """Warn once per model when bf16 was asked for on a CPU without native bf16 (emulated: slower than fp32)."""
    if precision == Precision.BF16 and device_type == "cpu" and not cpu_has_bf16():
        log.warning("%s: this CPU has no native bf16; autocast will be emulated and slow", what)


def likely_gpu(device: str) -> bool:
    """Whether `device` will be a GPU, decided without importing torch (the up-to-date check must stay cheap):
    an explicit cuda/mps device, or `auto` on a machine with an NVIDIA driver loaded."""
    if device.startswith(("cuda", "mps")):
        return True
    return device == "auto" and Path("/proc/driver/nvidia/version").is_file()
