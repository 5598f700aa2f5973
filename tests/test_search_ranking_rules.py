"""The ranking rules as plain functions: relative floors, the exact hits' order, pinning."""

from __future__ import annotations

from blipsearch.search.ranking_rules import exact_order, keyword_above_floor, pin_first, vector_above_floor


def test_keyword_floor_is_relative_to_the_best_hit() -> None:
    found = [(1, 23.4), (2, 10.1), (3, 4.0), (4, 2e-6)]
    assert keyword_above_floor(found, 0.2) == [(1, 23.4), (2, 10.1)]
    assert keyword_above_floor(found, 0.0) == found
    assert keyword_above_floor([(5, 0.0), (6, 0.0)], 0.5) == [(5, 0.0), (6, 0.0)], "no positive best: no cut"
    assert keyword_above_floor([], 0.2) == []


def test_vector_floor_is_relative_to_the_best_cosine() -> None:
    itc = {1: 0.45, 2: 0.28, 3: 0.22, 4: -0.05}
    assert vector_above_floor([1, 2, 3, 4], itc, 0.5) == [1, 2]
    assert vector_above_floor([1, 2, 3, 4], itc, 0.0) == [1, 2, 3, 4]
    assert vector_above_floor([4], itc, 0.5) == [4], "no positive best: no cut"


def test_exact_hits_order_by_kind_then_cosine_then_id() -> None:
    exact = {7: "brand", 3: "title", 9: "sku", 5: "title", 1: "brand"}
    itc = {7: 0.9, 3: 0.1, 9: -0.5, 5: 0.4, 1: 0.9}
    assert exact_order(exact, itc) == [9, 5, 3, 1, 7]  # type: ignore[arg-type]


def test_pinned_ids_lead_and_appear_once() -> None:
    assert pin_first([4, 2], [1, 2, 3, 4, 5]) == [4, 2, 1, 3, 5]
    assert pin_first([], [1, 2]) == [1, 2]
