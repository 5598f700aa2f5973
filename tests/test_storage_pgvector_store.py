"""pgvector search against brute force, model isolation, deletes, and the advisory writer lock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import create_catalog_engine, ensure_schema, session_factory
from blipsearch.storage.item_writes import ItemWrite
from blipsearch.storage.pgvector_store import (
    PgvectorStore,
    pgvector_available,
)
from blipsearch.storage.schema import ItemStatus

FP = "blip-" + "c" * 32
OTHER_FP = "blip-" + "d" * 32
DIM = 16
N = 3000
K = 10
SELECTIVITIES = (0.001, 0.01, 0.1, 1.0)
EXACT_LIMIT = 20
"""Low, so that 0.1% (3 ids) takes the exact path and 1% and more the iterative HNSW scan."""


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _write(source: str, vector: np.ndarray, fingerprint: str = FP, **kwargs: object) -> ItemWrite:
    return ItemWrite(
        source=source,
        origin="/p",
        status=ItemStatus.INDEXED,
        embedding=vector,
        model_fingerprint=fingerprint,
        **kwargs,  # type: ignore[arg-type]
    )


@dataclass
class Loaded:
    engine: Engine
    catalog: Catalog
    ids: np.ndarray
    vectors: np.ndarray
    other_ids: list[int]
    url: str


@pytest.fixture(scope="module")
def loaded(postgres_admin_url: str) -> Iterator[Loaded]:
    """A database of its own: N unit vectors of FP, plus near-copies under another model, which
    no FP query may ever return."""
    name = f"blipsearch_pgv_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create_catalog_engine(url)
    ensure_schema(engine)
    catalog = Catalog(engine)
    vectors = _unit(np.random.default_rng(1), N)
    ids = np.asarray(catalog.write([_write(f"/p/{n}.png", v) for n, v in enumerate(vectors)]), dtype=np.int64)
    # Another model's vectors equal to FP's first 200 (so they would win every tie), and another
    # dimension: neither may ever come back.
    other = catalog.write(
        [_write(f"/o/{n}.png", vectors[n], OTHER_FP) for n in range(200)]
        + [_write(f"/w/{n}.png", _unit(np.random.default_rng(n), 1, 8)[0], "blip-wide") for n in range(20)]
    )
    try:
        yield Loaded(engine, catalog, ids, vectors, other, url)
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def store(loaded: Loaded) -> PgvectorStore:
    store = PgvectorStore(
        loaded.engine, FP, DIM, ef_search=100, max_scan_tuples=20_000, exact_limit=EXACT_LIMIT
    )
    with store.writer_lock("test"):
        store.finish_run()  # builds the HNSW indexes
    return store


def _assert_like_brute_force(
    scores: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray,
    loaded: Loaded,
    admitted: np.ndarray | None,
    *,
    same_top: bool = True,
) -> None:
    """Exactly min(K, admitted) rows, each with its true score, and the same top-K scores as numpy
    over the same vectors (so equal ids except where scores tie)."""
    pool = np.arange(N) if admitted is None else np.searchsorted(loaded.ids, admitted)
    for row, query in enumerate(queries):
        truth = loaded.vectors[pool] @ query
        expected = np.sort(truth)[::-1][:K]
        returned = ids[row][ids[row] >= 0]
        assert len(returned) == min(K, len(pool))
        assert (ids[row][len(returned) :] == -1).all()
        assert np.isneginf(scores[row][len(returned) :]).all()
        assert set(returned.tolist()) <= set(loaded.ids[pool].tolist())
        true_scores = loaded.vectors[np.searchsorted(loaded.ids, returned)] @ query
        np.testing.assert_allclose(scores[row][: len(returned)], true_scores, atol=1e-5)
        assert (np.diff(scores[row][: len(returned)]) <= 0).all()
        if same_top:
            np.testing.assert_allclose(np.sort(true_scores)[::-1], expected, atol=1e-5)


@pytest.mark.parametrize(("selectivity", "as_filter"), [(s, True) for s in SELECTIVITIES] + [(1.0, False)])
def test_search_equals_brute_force(
    loaded: Loaded, store: PgvectorStore, selectivity: float, as_filter: bool
) -> None:
    rng = np.random.default_rng(int(selectivity * 1000) + as_filter)
    queries = _unit(rng, 20)
    admitted = None
    if as_filter:
        admitted = np.sort(rng.choice(loaded.ids, size=max(1, int(N * selectivity)), replace=False))
    before = store.images.paths.copy()
    scores, ids = store.images.search(queries, K, allowed_ids=admitted)
    _assert_like_brute_force(scores, ids, queries, loaded, admitted)
    taken = store.images.paths - before
    if admitted is not None and len(admitted) <= EXACT_LIMIT:
        assert taken == {"exact": len(queries)}
    else:
        assert taken["approximate"] > 0


def test_tight_scan_budget_falls_back_to_exact(loaded: Loaded) -> None:
    """With a tiny hnsw.max_scan_tuples, a 1% filter leaves the graph scan short; the store must
    notice and answer exactly instead of returning fewer rows. (Where the short budget still finds
    K rows they are only approximately the best: that is what the budget trades.)"""
    store = PgvectorStore(loaded.engine, FP, DIM, ef_search=10, max_scan_tuples=1, exact_limit=0)
    with store.writer_lock("test"):
        store.ensure_indexes()
    rng = np.random.default_rng(7)
    queries = _unit(rng, 10)
    admitted = np.sort(rng.choice(loaded.ids, size=30, replace=False))
    scores, ids = store.images.search(queries, K, allowed_ids=admitted)
    _assert_like_brute_force(scores, ids, queries, loaded, admitted, same_top=False)
    assert store.images.paths["fallback"] > 0


def test_query_never_returns_another_models_rows(loaded: Loaded, store: PgvectorStore) -> None:
    queries = loaded.vectors[:50]  # each equal to an OTHER_FP vector too
    _scores, ids = store.images.search(queries, K)
    assert not set(ids.reshape(-1).tolist()) & set(loaded.other_ids)
    assert (ids[:, 0] == loaded.ids[:50]).all()
    other = PgvectorStore(loaded.engine, OTHER_FP, DIM)
    _, other_ids = other.images.search(queries, K, allowed_ids=loaded.ids[:100])
    assert (other_ids == -1).all()  # FP's ids admitted, but none is OTHER_FP's
    assert len(other.images) == 200
    assert len(store.images) == N


def test_vector_reads_one_row(loaded: Loaded, store: PgvectorStore) -> None:
    assert np.array_equal(store.images.vector(int(loaded.ids[5])), loaded.vectors[5])
    with pytest.raises(KeyError):
        store.images.vector(loaded.other_ids[0])
    assert store.refresh() == 0 and store.pending_changes == 0 and store.checkpoint() is False


def test_availability_and_state(loaded: Loaded, store: PgvectorStore, tmp_path: Path) -> None:
    assert pgvector_available(loaded.engine)
    sqlite = create_catalog_engine(f"sqlite:///{tmp_path}/c.sqlite3")
    assert not pgvector_available(sqlite)
    sqlite.dispose()
    state = store.state()
    assert state["backend"] == "pgvector" and state["items"] == N
    assert all(index["valid"] for index in state["indexes"].values()) and len(state["indexes"]) == 2


def test_rebuild_drops_indexes_of_models_no_longer_used(postgres_url: str) -> None:
    engine = _fresh(postgres_url)
    catalog = Catalog(engine)
    vectors = _unit(np.random.default_rng(4), 5)
    catalog.write([_write(f"/p/{n}.png", v, OTHER_FP) for n, v in enumerate(vectors)])
    old = PgvectorStore(engine, OTHER_FP, DIM)
    old.ensure_indexes()
    catalog.write([_write(f"/p/{n}.png", v, FP) for n, v in enumerate(vectors)])  # re-embedded
    new = PgvectorStore(engine, FP, DIM)
    with new.writer_lock("rebuild"):
        report = new.rebuild()
    assert sorted(report["indexes_dropped"]) == sorted([old.images.index_name, old.texts.index_name])
    assert set(new.state()["indexes"]) == {new.images.index_name, new.texts.index_name}
    assert set(old.state()["indexes"]) == set()
    engine.dispose()


def test_deletes_and_model_changes_disappear_at_once(postgres_url: str) -> None:
    engine = _fresh(postgres_url)
    catalog = Catalog(engine)
    vectors = _unit(np.random.default_rng(5), 40)
    ids = catalog.write([_write(f"/p/{n}.png", v) for n, v in enumerate(vectors)])
    now = [0.0]
    store = PgvectorStore(engine, FP, DIM, clock=lambda: now[0])
    store.finish_run()
    assert store.images.search(vectors[:1], 1)[1][0, 0] == ids[0]
    assert len(store.images) == 40
    catalog.delete_items([ids[0]])
    assert ids[0] not in store.images.search(vectors[:1], 40)[1]
    catalog.write([_write("/p/1.png", vectors[1], OTHER_FP)])
    assert ids[1] not in store.images.search(vectors[1:2], 40)[1]
    now[0] += 60
    assert len(store.images) == 38
    engine.dispose()


def test_search_without_an_index_is_exact(postgres_url: str) -> None:
    engine = _fresh(postgres_url)
    catalog = Catalog(engine)
    vectors = _unit(np.random.default_rng(6), 200)
    ids = np.asarray(catalog.write([_write(f"/p/{n}.png", v) for n, v in enumerate(vectors)]))
    store = PgvectorStore(engine, FP, DIM)
    queries = _unit(np.random.default_rng(60), 5)
    _scores, found = store.images.search(queries, 7)
    expected = ids[np.argsort(-(vectors @ queries.T), axis=0, kind="stable")[:7].T]
    assert (found == expected).all()
    assert store.images.paths == {"exact": 5}
    assert store.state()["indexes"] == {}
    writer = PgvectorStore(engine, FP, DIM, writer=True)  # a writer builds what is missing
    assert sorted(writer.state()["indexes"]) == sorted([store.images.index_name, store.texts.index_name])
    assert all(index["valid"] for index in store.state()["indexes"].values())
    store.images.search(queries, 7)
    assert store.images.paths["approximate"] == 5
    engine.dispose()


def _fresh(url: str) -> Engine:
    engine = create_catalog_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    ensure_schema(engine)
    return engine


def test_searches_read_through_the_sessions_given(loaded: Loaded, tmp_path: Path) -> None:
    """A catalog with a read replica hands its `reading()` sessions over; searches use them."""
    factory = session_factory(loaded.engine)
    opened: list[int] = []

    @contextmanager
    def reading() -> Iterator[Session]:
        opened.append(1)
        with factory() as session:
            yield session

    store = PgvectorStore(loaded.engine, FP, DIM, reading=reading)
    _, ids = store.images.search(loaded.vectors[:2], 3)
    assert (ids[:, 0] == loaded.ids[:2]).all()
    assert np.array_equal(store.images.vector(int(loaded.ids[0])), loaded.vectors[0])
    assert len(opened) == 2

    settings = Settings(
        data_dir=tmp_path, database_url=loaded.url, pgvector_ef_search=55, pgvector_exact_limit=7
    )
    tuned = PgvectorStore.open(settings, loaded.catalog, fingerprint=FP, dim=DIM, writer=False)
    assert (tuned.ef_search, tuned.exact_limit) == (55, 7)
    with tuned.searching():
        assert tuned.images.search(loaded.vectors[:1], 1)[1][0, 0] == loaded.ids[0]
