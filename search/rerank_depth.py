"""How deep ITM re-ranks: one depth per deployment, decided once, so load never changes an order.

A depth learned per query (as many candidates as fit the time left) let a busy machine score fewer
candidates than an idle one, so the same query came back in different orders and its pages could
disagree. Instead the depth is fixed before the first query: `rerank_k` when set, else calibrated
once from the cost of scoring a few dummy candidates through the real model, as many as fit
`rerank_budget_ms`. Every query then scores exactly min(depth, shortlist) candidates; only the
per-query safety deadline (`rerank_deadline_ms`) can stop it short, and the page says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image

from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings

CALIBRATION_CANDIDATES = 4
CALIBRATION_QUERY = "a grey square used to time the re-ranker"
DEADLINE_BUDGETS = 10.0
"""The default safety deadline, in budgets: far enough above the calibrated cost that only a
machine in real trouble reaches it, near enough that a stalled query still answers."""


def default_rerank_k(device: torch.device) -> int:
    """On a CPU each candidate costs a cross-attention pass (and a vision-encoder pass when its
    tokens are not cached), so 8 keeps a query within seconds (bench/results/); on an accelerator
    both passes batch and cost far less, so the shortlist is 32. Calibration never goes deeper."""
    return 8 if device.type == "cpu" else 32


def default_rerank_budget_ms(device: torch.device) -> float:
    """On a CPU, about eight cached BLIP-base candidates fit in 400 ms (bench/results/), which keeps
    a query interactive; on an accelerator 100 ms covers a deep shortlist."""
    return 400.0 if device.type == "cpu" else 100.0


def rerank_budget_seconds(settings: Settings, device: torch.device) -> float:
    return (settings.rerank_budget_ms or default_rerank_budget_ms(device)) / 1000.0


def rerank_deadline_seconds(settings: Settings, device: torch.device) -> float:
    if settings.rerank_deadline_ms is not None:
        return settings.rerank_deadline_ms / 1000.0
    return DEADLINE_BUDGETS * rerank_budget_seconds(settings, device)


@dataclass(frozen=True)
class RerankDepth:
    """The deployment's re-rank depth and where it came from (logged, and shown by /readyz)."""

    depth: int
    source: Literal["setting", "calibrated"]
    seconds_per_candidate: float | None = None
    budget_ms: float | None = None


def depth_for_budget(seconds_per_candidate: float, budget_seconds: float, most: int) -> int:
    """As many candidates as fit the budget, at least one (a re-ranked query is never unscored)
    and at most `most`."""
    if seconds_per_candidate <= 0:
        return most
    fit = int(round(budget_seconds / seconds_per_candidate, 9))  # 0.1 / 0.05 may read 1.99999
    return max(1, min(most, fit))


def measure_seconds_per_candidate(
    model: RetrievalModel, settings: Settings, clock: Callable[[], float]
) -> float:
    """ITM's cost per candidate on this machine, timed on `clock` so a test can decide it.

    With `vision_tokens=files` every candidate also pays a vision-encoder pass at query time, so
    the timing includes one; with the cache it is the cross-attention alone. A first, untimed call
    absorbs one-off costs (lazy kernels, allocator growth) that no later query pays.
    """
    side = model.image_size
    blank = Image.new("RGB", (side, side), (128, 128, 128))
    tokens = model.vision_tokens([blank])
    model.itm_scores(CALIBRATION_QUERY, vision_tokens=tokens)
    started = clock()
    if settings.vision_tokens == "files":
        candidates = model.vision_tokens([blank] * CALIBRATION_CANDIDATES)
    else:
        candidates = tokens.expand(CALIBRATION_CANDIDATES, *tokens.shape[1:])
    model.itm_scores(CALIBRATION_QUERY, vision_tokens=candidates)
    return (clock() - started) / CALIBRATION_CANDIDATES


def decide_rerank_depth(model: RetrievalModel, settings: Settings, clock: Callable[[], float]) -> RerankDepth:
    """`rerank_k` when set (no calibration), else the calibrated depth for `rerank_budget_ms`."""
    if settings.rerank_k is not None:
        return RerankDepth(settings.rerank_k, "setting")
    cost = measure_seconds_per_candidate(model, settings, clock)
    budget = rerank_budget_seconds(settings, model.device)
    depth = depth_for_budget(cost, budget, default_rerank_k(model.device))
    return RerankDepth(depth, "calibrated", cost, budget * 1000.0)
