"""Whole-system sections: vector search at scale, indexing from files, end-to-end text search
through the query service and the HTTP API, and what the int8 path does to retrieval quality."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.common import naive_row
from bench.subjects import Subject, default_variant, demo_pairs, settings_for
from bench.timing import latency, samples
from blipsearch.indexer.pipeline import Indexer
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.results import SearchOptions
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.exact import TorchExactSearch
from blipsearch.storage.index_spec import IndexSpec, choose_index_spec
from blipsearch.storage.vectors import VectorIndex

log = logging.getLogger("bench")


def unit_vectors(count: int, dim: int, seed: int, clusters: int = 2000) -> np.ndarray:
    """Clustered unit vectors (like embeddings of a catalog: many near-duplicates and themes);
    uniform random vectors in 256-d would be a worst case no real collection has."""
    centres = np.random.default_rng(0).standard_normal((clusters, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    vectors = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):
        stop = min(count, start + 100_000)
        picks = rng.integers(0, clusters, stop - start)
        vectors[start:stop] = centres[picks] + 0.6 * rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def vector_search(sizes: list[int], device: torch.device, queries: int = 200, k: int = 10) -> dict[str, Any]:
    """Batch-1 query latency of exact and approximate indexes, recall@k against exact."""
    dim = 256
    probes = unit_vectors(queries, dim, seed=1)
    result: dict[str, Any] = {}
    for size in sizes:
        vectors = unit_vectors(size, dim, seed=0)
        ids = np.arange(size, dtype=np.int64)
        rows: dict[str, Any] = {}
        flat = VectorIndex.build(IndexSpec(kind="flat", dim=dim), ids, vectors)
        exact = np.stack([flat.search(probe, k)[1][0] for probe in probes])
        rows["faiss flat (exact)"] = latency(_query_times(partial(flat.search, k=k), probes))
        torch_exact = TorchExactSearch.from_vectors(ids, vectors, device)
        label = f"torch exact ({device.type}, {str(torch_exact.dtype).removeprefix('torch.')})"
        rows[label] = latency(_query_times(partial(torch_exact.search, k=k), probes))
        rows[label]["recall_at_10"] = _recall(exact, partial(torch_exact.search, k=k), probes)
        for kind in ("hnsw", "ivf"):
            started = time.perf_counter()
            spec = choose_index_spec(size, dim, memory_budget_bytes=1 << 40, requested=kind)
            index = VectorIndex.build(spec, ids, vectors)
            build = time.perf_counter() - started
            name = f"faiss {spec.factory_string()}"
            rows[name] = latency(_query_times(partial(index.search, k=k), probes))
            rows[name]["recall_at_10"] = _recall(exact, partial(index.search, k=k), probes)
            rows[name]["build_s"] = round(build, 1)
            del index
            log.info("vector search, %d vectors, %s: %s", size, name, rows[name])
        result[str(size)] = rows
        del flat, torch_exact, vectors
    return result


def _query_times(search: Any, probes: np.ndarray) -> list[float]:
    for probe in probes[:5]:
        search(probe)
    times = []
    for probe in probes:
        started = time.perf_counter()
        search(probe)
        times.append(time.perf_counter() - started)
    return times


def _recall(exact: np.ndarray, search: Any, probes: np.ndarray) -> float:
    found = np.stack([search(probe)[1][0] for probe in probes])
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, found, strict=True))
    return round(hits / exact.size, 4)


def photo_files(directory: Path, count: int, size: tuple[int, int], seed: int) -> list[Path]:
    """Photo-like JPEGs (smooth structure plus sensor noise: decode cost like a camera's)."""
    from bench.common import photo_like_jpegs

    if directory.exists() and len(list(directory.glob("*.jpg"))) == count:
        return sorted(directory.glob("*.jpg"))
    shutil.rmtree(directory, ignore_errors=True)
    return photo_like_jpegs(directory, count, size=size, seed=seed)


def naive_indexing(subject: Subject, paths: list[Path], data_dir: Path) -> float:
    """The naive loop: full decode, processor, stock model call and one SQL transaction per image."""
    shutil.rmtree(data_dir, ignore_errors=True)
    catalog = Catalog.open(settings_for(subject.directory, subject.device, data_dir=data_dir))
    fingerprint = "naive"
    started = time.perf_counter()
    for path in paths:
        data = path.read_bytes()
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        pixels = subject.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            hidden = subject.stock.vision_model(pixel_values=pixels.to(subject.device)).last_hidden_state
            vector = F.normalize(subject.stock.vision_proj(hidden[:, 0, :]), dim=-1)[0].float().cpu().numpy()
        catalog.write([naive_row(path, data, vector, fingerprint)])
    seconds = time.perf_counter() - started
    catalog.close()
    return seconds


def pipeline_indexing(model: RetrievalModel, settings: Settings, folder: Path) -> tuple[float, int]:
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    indexer = Indexer(settings, model=model)
    started = time.perf_counter()
    report = indexer.run(folder)
    seconds = time.perf_counter() - started
    indexer.catalog.close()
    return seconds, int(report.embedded)


def indexing(subject: Subject, work: Path, sets: dict[str, list[Path]], naive_count: int) -> dict[str, Any]:
    """Files to vectors in the index and rows in SQL: `blipsearch index` against the naive loop."""
    model = subject.fast[default_variant(subject)]
    result: dict[str, Any] = {"model_variant": default_variant(subject)}
    for name, paths in sets.items():
        folder = paths[0].parent
        settings = settings_for(subject.directory, subject.device, data_dir=work / f"index-{name}")
        pipeline_seconds, indexed = pipeline_indexing(model, settings, folder)
        naive_paths = paths[:naive_count]
        naive_seconds = naive_indexing(subject, naive_paths, work / f"naive-{name}")
        pipe_rate, naive_rate = indexed / pipeline_seconds, len(naive_paths) / naive_seconds
        result[name] = {
            "files": len(paths),
            "indexed": indexed,
            "pipeline_images_per_s": round(pipe_rate, 2),
            "naive_images_per_s": round(naive_rate, 2),
            "naive_files": len(naive_paths),
            "ratio": round(pipe_rate / naive_rate, 2),
        }
        log.info("indexing, %s, %s: %s", subject.name, name, result[name])
    return result


STOCK_SERVICE = {
    "attention": "eager",
    "quantize": "none",
    "query_cache_entries": 0,
    "rerank_budget_ms": 600_000.0,
    "vision_tokens": "files",
}
"""The service as it ran before the fast paths: eager fp32, no query cache, the whole shortlist
re-ranked with vision tokens re-encoded from the files."""


def search_end_to_end(
    subject: Subject, data_dir: Path, queries: list[str], http_queries: int
) -> dict[str, Any]:
    """Text search at the default re-rank setting (ITM on, default shortlist and budget), each
    query new to the process; through the service in process and through HTTP on loopback."""
    result: dict[str, Any] = {}
    for label, changes in (("stock service", STOCK_SERVICE), ("blipsearch default", {})):
        settings = settings_for(subject.directory, subject.device, data_dir=data_dir, rerank=True, **changes)
        service = SearchService.open(settings)
        try:
            service.text_to_images("warm up the model", SearchOptions(k=10))
            times, depth = [], []
            for query in queries:
                started = time.perf_counter()
                page = service.text_to_images(query, SearchOptions(k=10))
                times.append(time.perf_counter() - started)
                depth.append(page.reranked_count)
            row = latency(times)
            row["mean_reranked"] = round(float(np.mean(depth)), 2)
            repeats = max(3, min(20, len(queries)))
            repeat = samples(
                partial(service.text_to_images, queries[0], SearchOptions(k=10)), repeats=repeats
            )
            row["repeated_query_p50_ms"] = latency(repeat)["p50_ms"]
            result[f"service: {label}"] = row
        finally:
            service.close()
        result[f"http: {label}"] = _http_latency(settings, queries[:http_queries])
        log.info("search, %s, %s: %s", subject.name, label, result[f"http: {label}"])
    return result


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _http_latency(settings: Settings, queries: list[str]) -> dict[str, Any]:
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLIPSEARCH_")}
    for key, value in settings.model_dump(mode="json").items():
        if value is None or key in {"config_file", "api_key", "cors_origins"}:
            continue
        env[f"BLIPSEARCH_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    env["BLIPSEARCH_PORT"] = str(port)
    env["BLIPSEARCH_LOG_LEVEL"] = "WARNING"
    server = subprocess.Popen(
        [sys.executable, "-m", "blipsearch", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the API server did not become ready")
                time.sleep(0.2)
            client.get("/v1/search", params={"q": "warm up the model"}).raise_for_status()
            times, depth = [], []
            for query in queries:
                started = time.perf_counter()
                response = client.get("/v1/search", params={"q": query})
                times.append(time.perf_counter() - started)
                response.raise_for_status()
                depth.append(response.json()["reranked_count"])
            row = latency(times)
            row["mean_reranked"] = round(float(np.mean(depth)), 2)
            return row
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def int8_quality(subject: Subject, limit: int | None) -> dict[str, Any]:
    """Text-to-image over the demo catalog (query: each emoji's name): fp32 against int8."""
    paths, names = demo_pairs(limit)
    images = []
    for path in paths:
        with Image.open(path) as opened:
            images.append(opened.convert("RGB"))
    directory = subject.directory
    fp32 = subject.fast.get("fast fp32") or RetrievalModel.load(
        str(directory), settings_for(directory, subject.device, quantize="none")
    )
    variants = {"fp32": fp32}
    for label, name, changes in (
        ("int8 vision", "fast int8-vision", {"quantize": "vision", "dtype": "float32"}),
        ("int8 all", "fast int8 (all)", {"quantize": "all", "dtype": "float32"}),
        ("bf16", "fast bf16", {"quantize": "none", "dtype": "bfloat16"}),
    ):
        variants[label] = subject.fast.get(name) or RetrievalModel.load(
            str(directory), settings_for(directory, torch.device("cpu"), **changes)
        )
    rankings = {}
    for label, model in variants.items():
        similarity = model.embed_texts(names) @ model.embed_images(images).vectors.T
        rankings[label] = np.argsort(-similarity, axis=1, kind="stable")[:, :10]
    truth = np.arange(len(names))[:, None]
    agreement = {
        label: round(
            float(np.mean([_overlap(a, b) for a, b in zip(rankings["fp32"], ranking, strict=True)])), 4
        )
        for label, ranking in rankings.items()
        if label != "fp32"
    }
    recall = {
        label: {
            f"R@{k}": round(100 * float((ranking[:, :k] == truth).any(axis=1).mean()), 2) for k in (1, 5, 10)
        }
        for label, ranking in rankings.items()
    }
    return {"pairs": len(names), "top10_agreement": agreement, "text_to_image_recall": recall}


def _overlap(first: np.ndarray, second: np.ndarray) -> float:
    return len(set(first.tolist()) & set(second.tolist())) / len(first)
