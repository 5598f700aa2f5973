"""Combining ranked lists (keyword hits, vector hits) into one ranking."""

from __future__ import annotations

import math
from collections.abc import Sequence


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
