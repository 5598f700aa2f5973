"""The rules that decide which first-stage candidates count and which come first, as plain functions.

Why: a shopper trusts results when a product's own code, title or brand brings it first and when the
list ends where relevance ends. Three rules, applied by the service before ITM re-ranking:

* **Floors.** A keyword hit enters the results only when it scores at least `keyword_floor` x the
  query's best keyword score (a match on one common word among several words does not); in hybrid
  mode a vector candidate enters only when its ITC cosine is at least `vector_floor` x the query's
  best cosine. Relative floors need no calibration per model or database: BM25 (SQLite) and
  ts_rank_cd (PostgreSQL) differ in scale, and so do the cosines of different checkpoints. When
  the best score is not positive there is nothing to be relative to, and nothing is cut.
* **Exact hits first.** Items whose SKU, title or brand equals the query (`Catalog.exact_matches`)
  lead in keyword and hybrid modes, whatever their fused rank: SKU matches, then title, then brand,
  within a kind by ITC cosine (ties by id). Re-ranking only ever orders the candidates after them.
* Vector mode is pure vector: no exact pinning and no floor (it ranks the whole index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from blipsearch.storage.match_keys import KIND_ORDER, ExactKind


def keyword_above_floor(found: Sequence[tuple[int, float]], floor: float) -> list[tuple[int, float]]:
    """Keyword hits (best first) scoring at least `floor` x the best one."""
    if not found or floor <= 0:
        return list(found)
    best = max(score for _, score in found)
    if best <= 0:
        return list(found)
    return [(item_id, score) for item_id, score in found if score >= floor * best]


def vector_above_floor(ids: Sequence[int], itc: Mapping[int, float], floor: float) -> list[int]:
    """Vector candidates (best first) whose ITC cosine is at least `floor` x the best one."""
    if not ids or floor <= 0:
        return list(ids)
    best = max(itc[item_id] for item_id in ids)
    if best <= 0:
        return list(ids)
    return [item_id for item_id in ids if itc[item_id] >= floor * best]


def exact_order(exact: Mapping[int, ExactKind], itc: Mapping[int, float]) -> list[int]:
    """Exact hits in their pinned order: SKU, title, brand; within a kind by ITC, then by id."""
    rank = {kind: position for position, kind in enumerate(KIND_ORDER)}
    lowest = float("-inf")
    return sorted(exact, key=lambda item_id: (rank[exact[item_id]], -itc.get(item_id, lowest), item_id))


def pin_first(pinned: Sequence[int], ranked: Sequence[int]) -> list[int]:
    """`pinned` then the rest of `ranked` in its order, each id once."""
    seen = set(pinned)
    return [*pinned, *(item_id for item_id in ranked if item_id not in seen)]
