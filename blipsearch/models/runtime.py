"""Device and precision choices, made once per model and explained when they cannot be honoured."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch

from blipsearch.errors import ConfigError
from blipsearch.machine import cpu_has_native_bf16

T = TypeVar("T")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(requested: str) -> torch.device:
    """Map `auto|cpu|cuda|mps` (or `cuda:N`) to a device that exists on this machine."""
    name = requested.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"Device '{requested}' was asked for but this torch build sees no CUDA GPU; "
                "set BLIPSEARCH_DEVICE=cpu or auto."
            )
        return torch.device(name)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("Device 'mps' was asked for but Metal is not available; use cpu or auto.")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"Unknown device '{requested}'; choose auto, cpu, cuda or mps.")


def training_bf16(requested: bool | None, device: torch.device) -> bool:
    """Whether training autocasts to bfloat16: as asked, else on a CUDA GPU that has it. Not on a CPU
    by default: only AMX or AVX512-BF16 make it faster there, and emulated it is many times slower."""
    if requested is not None:
        return requested
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def resolve_dtype(requested: str, device: torch.device, *, role: str | None = None) -> torch.dtype:
    """bf16/fp16 on CUDA; on a CPU with native bf16 (AVX512-BF16, AMX) bf16 for the retrieval
    model, where it was measured faster at close top-10 agreement with fp32 (bench/results/);
    fp32 elsewhere, where reduced precision buys nothing or is unsafe."""
    name = requested.strip().lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and role == "retrieval" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"Unknown dtype '{requested}'; choose auto, float32, bfloat16 or float16.")
    dtype = _DTYPES[name]
    if device.type == "cpu" and dtype is torch.float16:
        raise ConfigError("float16 is not supported for inference on CPU; use float32 or bfloat16.")
    return dtype


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items; the last one may be shorter."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]
