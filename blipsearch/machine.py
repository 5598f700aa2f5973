"""What machine a measurement ran on, for reports and model cards."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_name() -> str:
    """The CPU's marketing name where Linux tells it, else what `platform` knows."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether the CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere torch
    emulates bf16 and it is slower than fp32."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return bool(NATIVE_BF16_FLAGS & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def machine_description() -> str:
    """CPU, core count and GPU in one line, as training records where a run's times were taken."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu_name()}, {os.cpu_count()} cores, {gpu}"
