"""The learning-rate schedule and optimizer every trainer uses: AdamW, linear warm-up, cosine decay.

One definition, so that `blipsearch train` and the demo recipe cannot drift apart, and so that a
resumed run's LambdaLR reproduces the factor of every step from the step alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The factor on the base rate after `step` scheduler steps: (step + 1) / warmup during warm-up,
    then (1 + cos(pi * progress)) / 2, with progress from 0 at the end of warm-up to 1 at
    `total_steps` and held at 1 beyond."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_optimizer(
    parameters: Sequence[torch.nn.Parameter] | Sequence[dict[str, Any]],
    lr: float,
    weight_decay: float,
    total_steps: int,
    warmup_steps: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over `parameters` (tensors, or groups with their own rates) and its `cosine_with_warmup`."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total_steps, warmup_steps))
    return optimizer, schedule
