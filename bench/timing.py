"""Timing with warm-up and percentiles, the machine's measured GEMM bound, and model FLOP counts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def samples(
    fn: Callable[[], Any], *, repeats: int, warmup: int = 1, device: torch.device | None = None
) -> list[float]:
    """Seconds per call, after `warmup` untimed calls (allocator, kernels, caches)."""
    for _ in range(warmup):
        fn()
    device = device or torch.device("cpu")
    timed = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        timed.append(time.perf_counter() - started)
    return timed


def latency(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "mean_ms": round(float(values.mean()), 3),
        "n": len(seconds),
    }


def gemm_gflops(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048) -> float:
    """Dense matrix-multiply throughput: the ceiling every fp32 model path is compared with."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    repeats = 5 if device.type == "cpu" else 50
    best = min(samples(lambda: a @ b, repeats=repeats, warmup=2, device=device))
    return 2 * size**3 / best / 1e9


def int8_gemm_gflops(size: int = 2048) -> float:
    """The same GEMM through torch's dynamic-int8 linear (what quantize=int8 runs on the CPU)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    layer = DynamicLinear(size, size, dtype=torch.qint8)
    layer.set_weight_bias(torch.quantize_per_tensor(torch.randn(size, size), 0.05, 0, torch.qint8), None)
    x = torch.randn(size, size)
    best = min(samples(lambda: layer(x), repeats=5, warmup=2))
    return 2 * size**3 / best / 1e9


def vision_flops(config: Any) -> float:
    """Multiply-adds x2 of one image through the ViT (patch embedding, attention, MLP)."""
    v = config.vision_config
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    width, inner = v.hidden_size, v.intermediate_size
    per_layer = 2 * tokens * (4 * width * width + 2 * width * inner) + 4 * tokens * tokens * width
    patches = 2 * (tokens - 1) * 3 * v.patch_size**2 * width
    return float(v.num_hidden_layers * per_layer + patches)


def text_flops(config: Any, length: int, cross_tokens: int = 0) -> float:
    """One text of `length` tokens through the text encoder; with `cross_tokens`, the stock ITM
    cost (keys and values of every vision token projected in every layer)."""
    t = config.text_config
    width, inner = t.hidden_size, t.intermediate_size
    per_layer = 2 * length * (4 * width * width + 2 * width * inner) + 4 * length * length * width
    if cross_tokens:
        encoder = t.encoder_hidden_size
        per_layer += 2 * length * 2 * width * width + 2 * 2 * cross_tokens * encoder * width
        per_layer += 4 * length * cross_tokens * width
    return float(t.num_hidden_layers * per_layer)
