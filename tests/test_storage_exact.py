"""Exact search on a torch device agrees with FAISS Flat, and VectorIndex routes flat searches to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blipsearch.errors import ConfigError
from blipsearch.settings import load_settings
from blipsearch.storage import exact
from blipsearch.storage.exact import TorchExactSearch, resolve_search_device
from blipsearch.storage.index_spec import IndexSpec, choose_index_spec
from blipsearch.storage.vectors import VectorIndex, faiss_has_gpu

DIM = 32
CPU = torch.device("cpu")


def _unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _flat(count: int = 300, seed: int = 0) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    # Sparse keys added in shuffled order, so storage order is neither id order nor positions.
    ids = np.random.default_rng(seed + 1).permutation(count).astype(np.int64) * 7 + 1000
    vectors = _unit(count, seed)
    return VectorIndex.build(IndexSpec("flat", DIM), ids, vectors), ids, vectors


def _assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64
    assert got[0].shape == want[0].shape and got[1].shape == want[1].shape
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)


ALLOWED_CASES = ["none", "few", "most", "absent"]


def _allowed(case: str, ids: np.ndarray) -> np.ndarray | None:
    rng = np.random.default_rng(7)
    if case == "none":
        return None
    if case == "few":  # a gathered subset, with unknown and negative ids mixed in
        return np.concatenate([rng.choice(ids, 25, replace=False), [-5, 3, 999_999]])
    if case == "most":  # a masked search over most rows
        return rng.choice(ids, int(len(ids) * 0.8), replace=False)
    return np.array([-1, 5, 999_999])


@pytest.mark.parametrize("case", ALLOWED_CASES)
@pytest.mark.parametrize("k", [1, 10, 299, 300, 450])
def test_float32_matches_faiss_flat(k: int, case: str) -> None:
    index, ids, _ = _flat()
    queries = _unit(40, seed=3)
    search = TorchExactSearch.from_index(index, CPU)
    assert search.dtype == torch.float32 and len(search) == len(ids)
    allowed = _allowed(case, ids)
    got = search.search(queries, k, allowed_ids=allowed)
    _assert_same(got, index.search(queries, k, allowed_ids=allowed))
    if case == "absent":
        assert (got[1] == -1).all() and np.isneginf(got[0]).all()
    admitted = len(ids) if allowed is None else len(np.intersect1d(allowed, ids))
    assert ((got[1] >= 0).sum(axis=1) == min(k, admitted)).all()  # padded past what exists


def test_float32_matches_faiss_flat_after_removals_and_upserts() -> None:
    index, ids, _ = _flat()
    removed = ids[::3]
    assert index.remove(removed) == len(removed)
    index.add(np.array([ids[1], 5]), _unit(2, seed=9))  # replace one vector, add a new id
    queries = _unit(30, seed=4)
    search = TorchExactSearch.from_index(index, CPU)
    assert np.array_equal(np.sort(search.ids), index.ids())
    for k in (5, 250):
        for allowed in (None, np.concatenate([removed[:10], ids[1:40]])):
            got = search.search(queries, k, allowed_ids=allowed)
            _assert_same(got, index.search(queries, k, allowed_ids=allowed))
            assert not np.isin(got[1], removed).any()


def test_from_vectors_equals_from_index_and_score_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    index, ids, vectors = _flat()
    queries = _unit(23, seed=5)
    want = TorchExactSearch.from_index(index, CPU).search(queries, 12)
    # Scored a few queries at a time, the answer is the same.
    monkeypatch.setattr(exact, "SCORE_BLOCK_BYTES", 4 * len(ids) * 5)
    _assert_same(TorchExactSearch.from_vectors(ids, vectors, CPU, torch.float32).search(queries, 12), want)
    with pytest.raises(ValueError, match="more than once"):
        TorchExactSearch.from_vectors(np.array([1, 1]), _unit(2, 0), CPU)
    with pytest.raises(ValueError, match="k must be"):
        TorchExactSearch.from_vectors(ids, vectors, CPU).search(queries, 0)
    empty = TorchExactSearch.from_vectors(np.zeros(0, np.int64), np.zeros((0, DIM), np.float32), CPU)
    scores, labels = empty.search(queries, 3)
    assert (labels == -1).all() and np.isneginf(scores).all()


def test_ties_go_to_the_smaller_id_like_the_exact_path() -> None:
    # Small multiples of 1/8: every dot product is exact, so ties are real, many and everywhere.
    rng = np.random.default_rng(6)
    vectors = (rng.integers(-1, 2, size=(200, DIM)) * 0.125).astype(np.float32)
    ids = rng.permutation(200).astype(np.int64) * 3 + 11
    queries = (rng.integers(-1, 2, size=(30, DIM)) * 0.125).astype(np.float32)
    index = VectorIndex.build(IndexSpec("flat", DIM), ids, vectors)
    search = TorchExactSearch.from_vectors(ids, vectors, CPU, torch.float32)
    similarity = queries @ vectors.T
    order = np.lexsort((np.broadcast_to(ids, similarity.shape), -similarity), axis=1)
    for k in (1, 7, 50, 200):
        scores, labels = search.search(queries, k)
        assert np.array_equal(labels, ids[order[:, :k]])
        np.testing.assert_array_equal(scores, np.take_along_axis(similarity, order[:, :k], axis=1))
    for allowed in (ids[::2], ids[:180]):  # gathered and masked rows; FAISS answers these exactly
        _assert_same(search.search(queries, 9, allowed), index.search(queries, 9, allowed_ids=allowed))


def test_float16_agrees_on_the_top_ten() -> None:
    try:
        torch.ones(2, 2, dtype=torch.float16) @ torch.ones(2, 2, dtype=torch.float16)
    except RuntimeError:
        pytest.skip("this torch build has no float16 matmul on CPU")
    index, ids, _ = _flat(count=2000)
    queries = _unit(100, seed=10)
    half = TorchExactSearch.from_index(index, CPU, torch.float16)
    assert half.dtype == torch.float16
    scores, labels = half.search(queries, 10)
    assert scores.dtype == np.float32
    _, want = index.search(queries, 10)
    agree = np.mean([set(a) == set(b) for a, b in zip(labels.tolist(), want.tolist(), strict=True)])
    assert agree >= 0.9, agree
    allowed = ids[:500]
    _, filtered = half.search(queries, 10, allowed_ids=allowed)
    assert np.isin(filtered, allowed).all()


def test_vector_index_routes_flat_searches_to_torch_and_drops_the_copy_on_change() -> None:
    index, ids, _ = _flat()
    plain, _, _ = _flat()
    queries = _unit(25, seed=11)
    index.use_device(CPU, backend="torch")
    assert index.accelerator == "torch" and index.search_device == CPU
    for k in (1, 10, 400):
        for allowed in (None, ids[:50], ids[:290]):
            _assert_same(
                index.search(queries, k, allowed_ids=allowed), plain.search(queries, k, allowed_ids=allowed)
            )
    assert index._device_copy is not None
    built = index._device_copy
    index.search(queries, 5)
    assert index._device_copy is built  # reused while nothing changes
    assert index.remove(np.array([123_456])) == 0
    assert index._device_copy is built  # a no-op remove keeps it
    new = _unit(3, seed=12)
    for changed in (index, plain):
        changed.remove(ids[:100])
        changed.add(np.array([1, 2, ids[150]]), new)
    assert index._device_copy is None
    _assert_same(index.search(queries, 20), plain.search(queries, 20))
    _assert_same(index.search(new, 3), plain.search(new, 3))
    assert set(index.search(new, 1)[1][:, 0].tolist()) == {1, 2, int(ids[150])}
    assert not np.isin(index.search(queries, 300)[1], ids[:100]).any()
    # Bytes on disk do not depend on the accelerator.
    assert index.to_bytes() == plain.to_bytes()


def test_use_device_leaves_cpu_and_approximate_kinds_to_faiss() -> None:
    index, _, _ = _flat()
    index.use_device(CPU)
    assert index.accelerator is None and index.search_device is None
    index.use_device(CPU, backend="torch")
    index.use_device(None)
    assert index.accelerator is None
    hnsw = VectorIndex.build(
        choose_index_spec(50, DIM, memory_budget_bytes=1 << 30, requested="hnsw"), np.arange(50), _unit(50, 1)
    )
    hnsw.use_device(CPU, backend="torch")
    assert hnsw.accelerator is None
    if not faiss_has_gpu():
        with pytest.raises(ValueError, match="FAISS GPU"):
            index.use_device(CPU, backend="faiss")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
def test_live_vectors_reads_every_kind(kind: str) -> None:
    ids = np.arange(300, dtype=np.int64) * 5 + 2
    vectors = _unit(300, seed=13)
    spec = choose_index_spec(300, DIM, memory_budget_bytes=1 << 30, requested=kind)  # type: ignore[arg-type]
    index = VectorIndex.build(spec, ids, vectors)
    index.remove(ids[:10])
    got_ids, got_vectors = index.live_vectors()
    order = np.argsort(got_ids)
    assert np.array_equal(got_ids[order], ids[10:]) and got_vectors.dtype == np.float32
    if kind != "ivfpq":  # PQ codes are lossy
        np.testing.assert_array_equal(got_vectors[order], vectors[10:])


def test_search_device_setting() -> None:
    assert load_settings().vector_search_device == "auto"
    assert load_settings(vector_search_device="cpu").vector_search_device == "cpu"
    with pytest.raises(ConfigError, match="vector_search_device"):
        load_settings(vector_search_device="tpu")
    assert resolve_search_device("cpu") == CPU
    with pytest.raises(ConfigError):
        resolve_search_device("tpu")
    if torch.cuda.is_available():
        assert resolve_search_device("auto").type == "cuda"
    else:
        assert resolve_search_device("auto") == CPU
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_search_device("cuda")
