"""Vector index kinds at several collection sizes: build time, query latency, recall, memory.

Flat (exact) is the baseline in every row: each approximate kind is reported as its speed-up over
Flat at that size and its recall@10 against Flat's exact answers. This is the evidence behind the
automatic rule in blipsearch/storage/index_spec.py (Flat below 50,000 vectors).

Vectors are synthetic unit vectors of ITC size (256-d) with two levels of clusters, and each
query is a perturbed copy of a stored vector (a query that has a true match). This is harder than
real embedding collections, where near neighbours stand out more: read the recall figures as a
lower bound and the latencies as what they are.

    python bench/vector_index_kinds.py --sizes 10000 50000 200000     # ~3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_report

from blipsearch.storage.index_spec import choose_index_spec, estimated_bytes
from blipsearch.storage.vectors import VectorIndex

DIM = 256
QUERIES = 200
K = 10


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def clustered_unit_vectors(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(max(16, count // 500), DIM))
    groups = topics[rng.integers(0, len(topics), max(64, count // 20))]
    groups += 0.5 * rng.normal(size=groups.shape)
    return _unit(groups[rng.integers(0, len(groups), count)] + 0.4 * rng.normal(size=(count, DIM)))


def queries_near(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = vectors[rng.integers(0, len(vectors), count)]
    return _unit(picked + 0.05 * rng.normal(size=picked.shape))


def measure(kind: str, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    spec = choose_index_spec(len(ids), DIM, memory_budget_bytes=1 << 40, requested=kind)  # type: ignore[arg-type]
    started = time.perf_counter()
    index = VectorIndex.build(spec, ids, vectors)
    build = time.perf_counter() - started
    index.search(queries[:5], K)  # warm-up
    started = time.perf_counter()
    for query in queries:  # one query at a time, as a search request does
        index.search(query[None, :], K)
    per_query = (time.perf_counter() - started) / len(queries)
    _, all_found = index.search(queries, K)
    return {
        "factory": spec.factory_string(),
        "build_seconds": round(build, 3),
        "query_ms": round(per_query * 1000, 3),
        "memory_mb": round(estimated_bytes(spec.kind, len(ids), DIM) / 2**20, 1),
        "found": all_found,  # removed before the report is written
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        vectors = clustered_unit_vectors(size, seed=size)
        queries = queries_near(vectors, QUERIES, seed=99)
        ids = np.arange(size, dtype=np.int64) * 3 + 17
        results = {kind: measure(kind, ids, vectors, queries) for kind in ("flat", "hnsw", "ivf", "ivfpq")}
        exact = results["flat"].pop("found")
        for kind, result in results.items():
            found = result.pop("found", exact)
            recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found, exact, strict=True)])
            result["recall_at_10"] = round(float(recall), 4)
            result["speedup_vs_flat"] = round(results["flat"]["query_ms"] / result["query_ms"], 2)
            rows.append({"vectors": size, "kind": kind, **result})
            print(rows[-1], flush=True)
    markdown = (
        f"{DIM}-d clustered unit vectors, {QUERIES} single-vector queries, k={K}; recall@10 against "
        "Flat's exact results; memory is the estimate the automatic rule uses.\n\n"
        "| vectors | kind | FAISS | build s | query ms | x Flat | recall@10 | memory MB |\n"
        "|---|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {r['vectors']:,} | {r['kind']} | `{r['factory']}` | {r['build_seconds']} | {r['query_ms']} "
            f"| {r['speedup_vs_flat']} | {r['recall_at_10']} | {r['memory_mb']} |\n"
            for r in rows
        )
    )
    json_path, md_path = write_report("vector_index_kinds", {"dim": DIM, "k": K, "rows": rows}, markdown)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
