"""Which classes a training batch holds, and which wrong pairs ITM learns from.

Batches hold distinct classes, so that in-batch contrast never treats an image's own class as a
negative. ITM's negatives are sampled from the in-batch ITC similarities (BLIP's mining), mixed
with uniform draws early on: hard negatives alone give a head that starts from scratch nothing
it can tell apart.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F


def class_batches(classes: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of distinct classes; each pass over a permutation covers every class once."""
    while True:
        order = torch.randperm(classes, generator=generator)
        for start in range(0, classes - batch + 1, batch):
            yield order[start : start + batch]


def neighbour_batches(
    table: torch.Tensor, classes: int, batch: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless batches of `batch` distinct classes: half random anchors, each joined by one of its
    `table` neighbours (the classes ITC confuses it with), the rest filled at random, so that
    in-batch mining finds the negatives re-ranking meets."""
    while True:
        anchors = torch.randperm(classes, generator=generator)[: batch // 2].tolist()
        chosen = dict.fromkeys(anchors)
        for anchor in anchors:
            pick = table[anchor, int(torch.randint(table.shape[1], (1,), generator=generator))]
            chosen.setdefault(int(pick))
        while len(chosen) < batch:
            chosen.setdefault(int(torch.randint(classes, (1,), generator=generator)))
        yield torch.tensor(list(chosen)[:batch])


def hard_negative_share(step: int, total: int, curriculum: float) -> float:
    """1 at and after `curriculum * total` steps, rising linearly from 0 before that."""
    ramp = curriculum * total
    return 1.0 if ramp <= 0 else min(1.0, step / ramp)


def negative_weights(logits: torch.Tensor, same: torch.Tensor, hard: float) -> torch.Tensor:
    """Sampling weights over the batch for one negative per row: a `hard` share by the ITC softmax
    (BLIP's mining), the rest uniform; a row's own class never has weight."""
    uniform = (~same).float()
    uniform = uniform / uniform.sum(1, keepdim=True)
    weights = hard * F.softmax(logits, dim=1) + (1.0 - hard) * uniform
    return weights.masked_fill(same, 0.0)
