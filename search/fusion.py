"""Combining rankings: keyword and vector hits into one list, ITM and ITC scores into one order."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009).

    score(d) = sum over the rankings r that contain d of 1 / (k + rank_r(d)), rank starting at 1.

    Only ranks count, so lists whose scores are not comparable (BM25 against cosine) combine
    without calibration; k = 60 (the paper's value) damps the weight of the very top ranks. An id
    repeated within one ranking counts at its best rank only. Returns (id, score) best first,
    equal scores by ascending id, so the result is deterministic.
    """
    if k < 0:
        raise ValueError(f"k must not be negative, not {k}")
    contributions: dict[int, list[float]] = {}
    for ranking in rankings:
        seen: set[int] = set()
        for rank, item_id in enumerate(ranking, start=1):
            if item_id in seen:
                continue
            seen.add(item_id)
            contributions.setdefault(int(item_id), []).append(1.0 / (k + rank))
    # fsum is exactly rounded, so equal rank patterns give equal scores whatever the list order.
    scores = {item_id: math.fsum(parts) for item_id, parts in contributions.items()}
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


ITM_PROBABILITY_FLOOR = 1e-7
"""Clip for the log-odds, so a probability of exactly 0 or 1 (float32 saturates) stays finite."""


def rerank_scores(itm_probability: np.ndarray, itc_similarity: np.ndarray, itc_weight: float) -> np.ndarray:
    """The key a re-ranked shortlist is ordered by (higher first): ITM alone, or ITM and ITC together.

    With `itc_weight` 0 it is the ITM match probability itself, BLIP's service rule. Otherwise it is
    the ITM log-odds plus `itc_weight` x the ITC cosine: the sum of the two heads' log-scores when
    `itc_weight` is 1 / the ITC temperature, so each head counts by its own confidence. BLIP's own
    retrieval evaluation also adds the two (the ITM logit plus the cosine). A weak ITM head then
    refines the contrastive order instead of overriding it.
    """
    probability = np.asarray(itm_probability, dtype=np.float64)
    if itc_weight == 0:
        return probability
    if itc_weight < 0 or not math.isfinite(itc_weight):
        raise ValueError(f"itc_weight must be finite and not negative, not {itc_weight}")
    p = np.clip(probability, ITM_PROBABILITY_FLOOR, 1.0 - ITM_PROBABILITY_FLOOR)
    return np.log(p) - np.log1p(-p) + itc_weight * np.asarray(itc_similarity, dtype=np.float64)
