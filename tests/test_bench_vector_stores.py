"""The vector-store bench at a tiny scale: every engine and filter is reported, the exact baseline is
exact, blipsearch's paths return k rows where the naive one may not, the rows it loads are the
catalog's, and the markdown renders. Timings are not asserted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from bench import vector_stores, vector_stores_pg
from bench.vector_stores_report import estimate, markdown
from blipsearch.storage.pgvector_store import PgvectorStore

COUNT = 10_000
"""The smallest count at which 0.1% admits k ids, so every filter can fill k rows."""
K = vector_stores.K


@pytest.fixture(scope="module")
def section(postgres_admin_url: str) -> dict[str, Any]:
    return vector_stores.run(
        COUNT,
        queries=12,
        filtered_queries=6,
        own_hnsw=False,
        postgres_url=postgres_admin_url,
        log=lambda _: None,
    )


def test_every_engine_and_selectivity_is_reported(section: dict[str, Any]) -> None:
    engines = section["engines"]
    assert set(engines) == {
        vector_stores.FLAT,
        "FAISS HNSW m=16, ef_construction=64, ef_search 40",
        "FAISS HNSW m=16, ef_construction=64, ef_search 100",
        vector_stores.NAIVE,
        vector_stores.STORE,
        vector_stores.ITERATIVE,
    }
    assert section["admitted"] == {"0.1%": 10, "1%": 100, "10%": 1000}
    for name, row in engines.items():
        assert set(row["filtered"]) == {"0.1%", "1%", "10%"}, name
        assert row["bytes"] > COUNT * 256 * 2, f"{name}: at least the vectors as halfvec"
        assert 0 <= row["recall_at_10"] <= 1
    assert engines[vector_stores.STORE]["hnsw_index_bytes"] > 0
    assert section["postgres"]["pgvector"].startswith("0.")


def test_the_exact_baseline_is_exact(section: dict[str, Any]) -> None:
    flat = section["engines"][vector_stores.FLAT]
    assert flat["recall_at_10"] == 1.0
    assert all(cell["recall_at_10"] == 1.0 for cell in flat["filtered"].values())


def test_blipsearch_paths_return_k_rows_at_every_selectivity(section: dict[str, Any]) -> None:
    for name in (vector_stores.STORE, vector_stores.ITERATIVE):
        row = section["engines"][name]
        assert row["rows_min"] == K, name
        for label, cell in row["filtered"].items():
            assert cell["rows_min"] == K, (name, label)
    store = section["engines"][vector_stores.STORE]["filtered"]
    assert all(set(cell["paths"]) == {"exact"} for cell in store.values()), "below exact_limit: exact"
    iterative = section["engines"][vector_stores.ITERATIVE]["filtered"]
    assert all(cell["paths"].get("exact", 0) == 0 for cell in iterative.values()), "exact_limit=0: graph"
    assert sum(cell["paths"].get("approximate", 0) for cell in iterative.values()) > 0


def test_exact_top_k_orders_by_score_then_id() -> None:
    vectors = np.asarray([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    ids = np.asarray([7, 3, 5, 9], dtype=np.int64)
    query = np.asarray([[1, 0]], dtype=np.float32)
    assert vector_stores.exact_top_k(ids, vectors, query, 3).tolist() == [[5, 7, 9]]
    assert vector_stores.exact_top_k(ids[:1], vectors[:1], query, 3).tolist() == [[7, -1, -1]]


def test_loaded_rows_are_the_vectors_given(postgres_admin_url: str) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, 256)).astype(np.float32)
    ids = np.arange(1, 51, dtype=np.int64) * 3
    with vector_stores_pg.bench_database(postgres_admin_url) as url:
        engine = vector_stores_pg.catalog_engine(url, [])
        try:
            vector_stores_pg.load(engine, ids, vectors, vector_stores.FINGERPRINT)
            store = PgvectorStore(engine, vector_stores.FINGERPRINT, 256)
            assert len(store.images) == 50
            np.testing.assert_array_equal(store.images.vector(int(ids[7])), vectors[7])
            with pytest.raises(KeyError):
                store.images.vector(2)
            with engine.connect() as connection:
                statuses = connection.execute(text("SELECT DISTINCT status FROM items")).scalars().all()
            assert statuses == ["indexed"]
        finally:
            engine.dispose()


def test_markdown_has_every_row_and_the_paper_estimate(section: dict[str, Any]) -> None:
    report = {
        "machine": {"cpu": "Test CPU", "cores": 2},
        "when": "2026-12-07T00:00:00Z",
        "vector_stores": section,
    }
    text_md = markdown(report)
    measured, estimated = text_md.split("## Paper estimate")
    assert "10,000 vectors on Test CPU, 2 cores" in measured
    for name in section["engines"]:
        assert measured.count(f"| {name} |") == 1 + 3, name
    assert "| 1.0x | 1.0 |" in text_md, "the baseline row stands beside itself"
    assert "| pgvector halfvec HNSW m=16, ef_construction=64 | 100,000,000 |" in estimated


def test_paper_estimate_scales_bytes_linearly_and_hnsw_builds_by_n_log_n() -> None:
    section = {
        "vectors": 1_000_000,
        "engines": {
            "FAISS flat (exact baseline)": {
                "kind": "faiss",
                "index": "IDMap2,Flat",
                "build_s": 10.0,
                "bytes": 10**9,
            },
            "pgvector a": {
                "kind": "pgvector",
                "index": "halfvec HNSW",
                "build_s": 3600.0,
                "load_s": 0.0,
                "bytes": 2 * 10**9,
            },
            "pgvector b": {
                "kind": "pgvector",
                "index": "halfvec HNSW",
                "build_s": 3600.0,
                "load_s": 0.0,
                "bytes": 2 * 10**9,
            },
        },
    }
    rows = estimate(section, counts=(100_000_000,))
    assert [r["engine"] for r in rows] == ["FAISS flat (exact baseline)", "pgvector halfvec HNSW"]
    flat, hnsw = rows
    assert flat["memory_gib"] == round(100 * 10**9 / 2**30, 1) and flat["build_hours"] == round(
        1000 / 3600, 2
    )
    assert hnsw["build_hours"] == round(100 * 8 / 6, 2), "100x the vectors, log 1e8 / log 1e6 = 8/6"
    assert hnsw["machines_at_ram"] == 4, "186 GiB over 48 GiB usable per 64 GiB machine"
