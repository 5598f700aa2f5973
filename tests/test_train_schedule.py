"""The one learning-rate schedule both trainers use, against values worked out from its formula.

The demo recipe had its own copy (`warmup_cosine(step, total, warmup)`); these are the values that
copy gave, so the shared schedule keeps every demo run's learning rates where they were.
"""

from __future__ import annotations

import math

import pytest
import torch

from blipsearch.train.schedule import cosine_with_warmup, make_optimizer

# total 10, warm-up 4: (step + 1) / 4 for steps 0-3, then (1 + cos(pi * (step - 4) / 6)) / 2
WARMED = {
    0: 0.25,
    1: 0.5,
    2: 0.75,
    3: 1.0,
    4: 1.0,
    5: 0.5 + math.sqrt(3) / 4,  # cos(pi / 6) = sqrt(3) / 2
    7: 0.5,  # cos(pi / 2) = 0
    9: 0.5 - math.sqrt(3) / 4,  # cos(5 pi / 6)
    10: 0.0,
    12: 0.0,  # held at the end
}
# total 4, no warm-up (the demo's `warmup_steps // 4` can be 0): (1 + cos(pi * step / 4)) / 2
COLD = {0: 1.0, 1: 0.5 + math.sqrt(2) / 4, 2: 0.5, 3: 0.5 - math.sqrt(2) / 4, 4: 0.0}


@pytest.mark.parametrize(("total", "warmup", "expected"), [(10, 4, WARMED), (4, 0, COLD)])
def test_schedule_gives_the_demo_recipes_former_factors(
    total: int, warmup: int, expected: dict[int, float]
) -> None:
    factor = cosine_with_warmup(total, warmup)
    for step, value in expected.items():
        assert factor(step) == pytest.approx(value, abs=1e-12), step


def test_optimizer_steps_every_group_along_the_schedule() -> None:
    base, text = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer, schedule = make_optimizer(
        [{"params": [base]}, {"params": [text], "lr": 2e-5, "weight_decay": 0.0}], 0.1, 0.05, 10, 4
    )
    assert isinstance(optimizer, torch.optim.AdamW)
    seen = []
    for _ in range(8):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    for step, (lr_base, lr_text) in enumerate(seen):
        if step in WARMED:
            assert lr_base == pytest.approx(0.1 * WARMED[step], abs=1e-12)
            assert lr_text == pytest.approx(2e-5 * WARMED[step], abs=1e-15)
    assert (
        optimizer.param_groups[0]["weight_decay"] == 0.05 and optimizer.param_groups[1]["weight_decay"] == 0.0
    )
