"""Every index kind against brute force: ids are catalog keys, upserts, deletes, filters, bytes."""

from __future__ import annotations

import numpy as np
import pytest

from blipsearch.storage.index_spec import IndexSpec, choose_index_spec
from blipsearch.storage.vectors import VectorIndex

DIM = 32
KINDS = ["flat", "hnsw", "ivf", "ivfpq"]


def _unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _build(kind: str, count: int = 400, seed: int = 0) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    ids = np.arange(count, dtype=np.int64) * 7 + 1000  # sparse keys, far from positions
    vectors = _unit(count, seed)
    spec = choose_index_spec(count, DIM, memory_budget_bytes=1 << 30, requested=kind)  # type: ignore[arg-type]
    return VectorIndex.build(spec, ids, vectors), ids, vectors


def _brute(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]
    return ids[order]


@pytest.mark.parametrize("kind", KINDS)
def test_search_returns_catalog_ids_and_agrees_with_brute_force(kind: str) -> None:
    index, ids, vectors = _build(kind)
    assert index.spec.kind == kind and len(index) == len(ids)
    assert np.array_equal(index.ids(), ids)
    queries = vectors[:20]
    scores, found = index.search(queries, 10)
    assert set(found.ravel().tolist()) <= set(ids.tolist())
    if kind == "ivfpq":
        # Lossy codes: the query's own vector must still be in the shortlist.
        assert np.mean([ids[i] in found[i] for i in range(20)]) >= 0.9
    else:
        recall = np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(found, _brute(queries, ids, vectors, 10), strict=True)]
        )
        assert recall >= (1.0 if kind == "flat" else 0.9)
        assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores come best first"


@pytest.mark.parametrize("kind", KINDS)
def test_upsert_replaces_and_delete_removes(kind: str) -> None:
    index, ids, vectors = _build(kind)
    replacement = _unit(1, seed=99)
    index.add(ids[:1], replacement)
    assert index.id_occurrences()[int(ids[0])] == 1 and len(index) == len(ids)
    if kind != "ivfpq":
        assert np.allclose(index.reconstruct(int(ids[0])), replacement[0], atol=1e-6)
    removed = index.remove(np.concatenate([ids[:50], [123456789]]))
    assert removed == 50 and len(index) == len(ids) - 50
    assert np.array_equal(index.ids(), ids[50:])
    _, found = index.search(vectors[:50], 5)
    assert not set(found.ravel().tolist()) & set(ids[:50].tolist()), "deleted ids never come back"
    with pytest.raises(KeyError):
        index.reconstruct(int(ids[0]))
    # Re-adding a deleted id makes it live again, once.
    index.add(ids[:1], vectors[:1])
    assert index.id_occurrences()[int(ids[0])] == 1


def test_hnsw_deletes_are_tombstones_that_ask_for_compaction() -> None:
    index, ids, _ = _build("hnsw", count=100)
    index.remove(ids[:10])
    assert index.tombstone_count == 10 and not index.needs_compaction
    index.remove(ids[10:30])
    assert index.tombstone_count == 30 and index.needs_compaction
    restored = VectorIndex.from_bytes(index.spec, index.to_bytes())
    assert restored.tombstone_count == 30 and np.array_equal(restored.ids(), ids[30:])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("allowed_count", [3, 250])
def test_filtered_search_returns_the_true_top_k_of_the_allowed_ids(kind: str, allowed_count: int) -> None:
    index, ids, vectors = _build(kind)
    rng = np.random.default_rng(5)
    allowed = np.sort(rng.choice(ids, size=allowed_count, replace=False))
    queries = _unit(8, seed=6)
    k = 5
    scores, found = index.search(queries, k, allowed_ids=allowed)
    assert set(found[found >= 0].tolist()) <= set(allowed.tolist())
    assert ((found >= 0).sum(axis=1) == min(k, allowed_count)).all(), "a filter never shortens results"
    if allowed_count < k:
        assert np.isneginf(scores[:, allowed_count:]).all() and (found[:, allowed_count:] == -1).all()
    if kind != "ivfpq":
        subset = np.isin(ids, allowed)
        expected = _brute(queries, ids[subset], vectors[subset], k)
        hits = [len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, expected, strict=True)]
        assert np.mean(hits) == 1.0, "small and selective filters are answered exactly"


@pytest.mark.parametrize("kind", KINDS)
def test_bytes_round_trip_keeps_ids_vectors_and_results(kind: str) -> None:
    index, _, vectors = _build(kind)
    restored = VectorIndex.from_bytes(IndexSpec.from_dict(index.spec.to_dict()), index.to_bytes())
    assert np.array_equal(restored.ids(), index.ids())
    assert np.array_equal(restored.search(vectors[:5], 4)[1], index.search(vectors[:5], 4)[1])


def test_bad_input_is_refused() -> None:
    index, _, _ = _build("flat", count=10)
    with pytest.raises(ValueError, match="non-negative"):
        index.add(np.array([-5]), _unit(1, 1))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.array([5]), np.full((1, DIM), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="2 ids for 1 vectors"):
        index.add(np.array([5, 6]), _unit(1, 1))
    with pytest.raises(ValueError, match="more than once"):
        VectorIndex.build(index.spec, np.array([1, 1]), _unit(2, 1))
    with pytest.raises(ValueError, match="k must be"):
        index.search(_unit(1, 1), 0)
    empty = VectorIndex.build(IndexSpec("flat", DIM), np.zeros(0, np.int64), np.zeros((0, DIM), np.float32))
    scores, found = empty.search(_unit(2, 1), 3)
    assert (found == -1).all() and np.isneginf(scores).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq"])
def test_selector_path_falls_back_to_exact_when_the_graph_runs_dry(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blipsearch.storage.vectors as vectors_module

    monkeypatch.setattr(vectors_module, "BRUTE_FORCE_LIMIT", 0)
    index, ids, _ = _build(kind)
    allowed = ids[[3, 170, 399]]
    _, found = index.search(_unit(16, seed=8), 5, allowed_ids=allowed, nprobe=1, ef_search=4)
    assert ((found >= 0).sum(axis=1) == 3).all()
    assert set(found[found >= 0].tolist()) == set(allowed.tolist())
