"""CPU inference runtimes side by side: `python -m bench.runtimes` (also a section of `python -m bench`).

BLIP's three graphs (text ITC, ViT, ITM on cached vision tokens) exported to ONNX
(blipsearch/models/onnx_graphs.py) and run by ONNX Runtime (fp32, int8 dynamic quantisation) and
OpenVINO (fp32), against torch's own paths as blipsearch runs them (fp32 with SDPA, int8 dynamic,
bf16 where the CPU has it natively), for the shipped demo model and BLIP-base's architecture:
batch-1 latency, batch throughput (8 texts, 8 images, 32 ITM pairs), each as a ratio to torch fp32
and to the path blipsearch's defaults run on this CPU, from the same run; and agreement with torch
fp32 on the demo catalog (its emoji names as queries): text-to-image top-10 overlap with each
runtime's text and image vectors, and the ITM re-ranked order of fp32's top 10. Exports go to a
temp dir. Writes bench/results/runtimes-<machine>-<date>.json and .md.

    python -m bench.runtimes           # ~30 minutes on 2 CPU cores
    python -m bench.runtimes --quick   # small counts
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import RESULTS, machine, machine_slug, run_to_results
from bench.model_bench import text_of_length
from bench.subjects import DEMO_MODEL, base_size_checkpoint, demo_pairs, settings_for
from bench.timing import latency, samples
from blipsearch.machine import cpu_has_native_bf16
from blipsearch.models import onnx_graphs
from blipsearch.models.fast import resolve_quantize
from blipsearch.models.onnx_backend import GraphBackend, Runtime
from blipsearch.models.onnx_graphs import ItmGraph, TextGraph, VisionGraph
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.models.runtime import resolve_dtype

log = logging.getLogger("bench")
BATCH = {"text": 8, "vision": 8, "itm": 32}
"""Throughput batch per graph: texts, images, query-candidate pairs (one query, 32 candidates)."""
ADOPT_SPEEDUP, ADOPT_AGREEMENT = 1.3, 0.98
"""The issue's rule: a runtime is adopted for a graph only at >= 1.3x the default torch path's
speed with >= 0.98 agreement with torch fp32."""


@dataclass
class Runner:
    """One runtime's three graphs, numpy in and out (what a backend would hand the model layer)."""

    name: str
    text: Callable[[np.ndarray, np.ndarray], np.ndarray]
    vision: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    itm: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def torch_runner(name: str, model: RetrievalModel) -> Runner:
    dtype = model.dtype
    text, vision, itm = TextGraph(model.model), VisionGraph(model.model), ItmGraph(model.model)

    @torch.inference_mode()
    def run_text(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return text(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()

    @torch.inference_mode()
    def run_vision(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vectors, tokens = vision(torch.from_numpy(pixels).to(dtype))
        return vectors.float().numpy(), tokens.float().numpy()

    @torch.inference_mode()
    def run_itm(ids: np.ndarray, mask: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        states = torch.from_numpy(tokens).to(dtype)
        return itm(torch.from_numpy(ids), torch.from_numpy(mask), states).float().numpy()

    return Runner(name, run_text, run_vision, run_itm)


def backend_runner(name: str, runtime: Runtime, paths: dict[str, Path], threads: int) -> Runner:
    """The backend blipsearch would run (`inference_runtime`), on these ONNX files."""
    backend = GraphBackend(runtime, paths, threads)
    return Runner(name, backend.text, backend.vision, backend.itm)


def quantize_onnx(paths: dict[str, Path], directory: Path) -> dict[str, Path]:
    """ONNX Runtime's dynamic int8 quantisation (weights int8, activations quantised per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = {}
    for graph, path in paths.items():
        out[graph] = directory / f"{graph}-int8.onnx"
        quantize_dynamic(path, out[graph], weight_type=QuantType.QInt8, per_channel=True)
    return out


def default_paths(model: RetrievalModel) -> dict[str, str]:
    """Which torch row each graph runs under blipsearch's defaults on this CPU (dtype and
    quantize `auto`): bf16 everywhere on a CPU with native bf16, else int8 for a wide enough ViT
    and fp32 for the text side (so for ITM, which runs on cached vision tokens)."""
    if resolve_dtype("auto", torch.device("cpu"), role="retrieval") != torch.float32:
        return dict.fromkeys(onnx_graphs.GRAPHS, "torch bf16")
    part = resolve_quantize("auto", model.model, torch.device("cpu"), torch.float32)
    return {"text": "torch fp32", "vision": "torch int8" if part else "torch fp32", "itm": "torch fp32"}


@dataclass
class Inputs:
    """The same tensors for every runtime: an 8-token query, images, cached vision tokens."""

    one_text: tuple[np.ndarray, np.ndarray]
    texts: tuple[np.ndarray, np.ndarray]
    one_image: np.ndarray
    images: np.ndarray
    itm_one: tuple[np.ndarray, np.ndarray, np.ndarray]
    itm_batch: tuple[np.ndarray, np.ndarray, np.ndarray]


def make_inputs(model: RetrievalModel, query: str) -> Inputs:
    size = model.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH["vision"], 3, size, size, generator=generator)
    one = model.tokenize([query])
    many = model.tokenize([f"{query} {n}" for n in range(BATCH["text"])])
    with torch.inference_mode():
        tokens = model.vision_tokens(images[:4]).float()
    pairs = BATCH["itm"]
    batch_tokens = tokens.repeat((pairs + 3) // 4, 1, 1)[:pairs].contiguous().numpy()
    ids, mask = one["input_ids"].numpy(), one["attention_mask"].numpy()
    return Inputs(
        one_text=(ids, mask),
        texts=(many["input_ids"].numpy(), many["attention_mask"].numpy()),
        one_image=images[:1].numpy(),
        images=images.numpy(),
        itm_one=(ids, mask, batch_tokens[:1]),
        itm_batch=(np.repeat(ids, pairs, 0), np.repeat(mask, pairs, 0), batch_tokens),
    )


def speed(runners: dict[str, Runner], inputs: Inputs, rounds: int, per_round: int) -> dict[str, Any]:
    """Per runtime and graph: batch-1 latency (p50 over `rounds` x `per_round` calls) and items per
    second at the throughput batch (best of `rounds`). The runtimes take turns round by round, so a
    change in the machine's load (it is shared) falls on all of them alike; each turn starts with an
    untimed call, so thread pools left spinning by the previous runtime settle first."""
    calls: dict[str, Callable[[Runner], tuple[Callable[[], Any], Callable[[], Any]]]] = {
        "text": lambda r: (lambda: r.text(*inputs.one_text), lambda: r.text(*inputs.texts)),
        "vision": lambda r: (lambda: r.vision(inputs.one_image), lambda: r.vision(inputs.images)),
        "itm": lambda r: (lambda: r.itm(*inputs.itm_one), lambda: r.itm(*inputs.itm_batch)),
    }
    rows: dict[str, dict[str, Any]] = {name: {} for name in runners}
    for graph, make in calls.items():
        one_times: dict[str, list[float]] = {name: [] for name in runners}
        batch_times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, runner in runners.items():
                one, batch = make(runner)
                one_times[name] += samples(one, repeats=per_round, warmup=1)
                batch_times[name] += samples(batch, repeats=1, warmup=1)
        for name in runners:
            row = latency(one_times[name])
            row["items_per_s"] = round(BATCH[graph] / min(batch_times[name]), 2)
            rows[name][graph] = row
        log.info("%s: %s", graph, {name: rows[name][graph]["p50_ms"] for name in runners})
    return rows


def _top(similarity: np.ndarray, k: int = 10) -> np.ndarray:
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def _overlap(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(first, second, strict=True)]))


@dataclass
class Catalog:
    """The demo catalog's images (preprocessed for the subject) and emoji names as queries."""

    pixels: np.ndarray
    queries: list[tuple[np.ndarray, np.ndarray]]
    itm_queries: list[int]


def load_catalog(model: RetrievalModel, limit: int | None, itm_queries: int) -> Catalog:
    paths, names = demo_pairs(limit)
    images = []
    for path in paths:
        with Image.open(path) as opened:
            images.append(opened.convert("RGB"))
    pixels = model.pixel_values(images).numpy()
    queries = []
    for start in range(0, len(names), 64):
        encoded = model.tokenize(names[start : start + 64])
        queries.append((encoded["input_ids"].numpy(), encoded["attention_mask"].numpy()))
    step = max(1, len(names) // itm_queries)
    return Catalog(pixels, queries, list(range(0, len(names), step))[:itm_queries])


def vectors(
    runner: Runner, catalog: Catalog, image_batch: int, keep_tokens: bool = False
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Every query's and image's vector; with `keep_tokens`, the vision tokens too (float16)."""
    texts = np.concatenate([runner.text(ids, mask) for ids, mask in catalog.queries])
    images, tokens = [], []
    for start in range(0, len(catalog.pixels), image_batch):
        found, states = runner.vision(catalog.pixels[start : start + image_batch])
        images.append(found)
        if keep_tokens:
            tokens += list(states.astype(np.float16))
    return texts, np.concatenate(images), tokens


@dataclass
class Reference:
    """torch fp32 on the catalog: vectors, top-10 per query, and each ITM query's candidates'
    vision tokens with fp32's ITM probabilities."""

    texts: np.ndarray
    images: np.ndarray
    top10: np.ndarray
    itm: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def reference(runner: Runner, catalog: Catalog, image_batch: int) -> Reference:
    texts, images, states = vectors(runner, catalog, image_batch, keep_tokens=True)
    top10 = _top(texts @ images.T)
    rows = np.concatenate([np.arange(len(ids)) for ids, _ in catalog.queries])
    batches = np.concatenate([np.full(len(ids), n) for n, (ids, _) in enumerate(catalog.queries)])
    itm = []
    for query in catalog.itm_queries:
        ids, mask = catalog.queries[batches[query]]
        row = rows[query]
        length = int(mask[row].sum())
        one_ids, one_mask = ids[row : row + 1, :length], mask[row : row + 1, :length]
        tokens = np.stack([states[image] for image in top10[query]]).astype(np.float32)
        count = len(tokens)
        pair = (np.repeat(one_ids, count, 0), np.repeat(one_mask, count, 0), tokens)
        itm.append((*pair, runner.itm(*pair)))
    return Reference(texts, images, top10, itm)


def agreement(runner: Runner, ref: Reference, catalog: Catalog, image_batch: int) -> dict[str, float]:
    """Top-10 overlap with fp32 using this runtime's text vectors, image vectors, and both; the
    ITM re-ranked order of fp32's top 10 (share of positions holding fp32's candidate)."""
    texts, images, _ = vectors(runner, catalog, image_batch)
    positions, worst = [], 0.0
    for ids, mask, tokens, expected in ref.itm:
        scores = runner.itm(ids, mask, tokens)
        worst = max(worst, float(np.abs(scores - expected).max()))
        positions.append(float(np.mean(_top(scores[None], 10)[0] == _top(expected[None], 10)[0])))
    return {
        "text": round(_overlap(ref.top10, _top(texts @ ref.images.T)), 4),
        "vision": round(_overlap(ref.top10, _top(ref.texts @ images.T)), 4),
        "text+vision": round(_overlap(ref.top10, _top(texts @ images.T)), 4),
        "itm": round(float(np.mean(positions)), 4),
        "itm_max_abs_diff": round(worst, 6),
    }


def torch_models(directory: Path) -> dict[str, RetrievalModel]:
    cpu = torch.device("cpu")
    variants: dict[str, dict[str, object]] = {
        "torch fp32": {"dtype": "float32", "quantize": "none"},
        "torch int8": {"dtype": "float32", "quantize": "all"},
    }
    if cpu_has_native_bf16():
        variants["torch bf16"] = {"dtype": "bfloat16", "quantize": "none"}
    return {
        name: RetrievalModel.load(str(directory), settings_for(directory, cpu, **changes))
        for name, changes in variants.items()
    }


@dataclass(frozen=True)
class Counts:
    """How much to measure: catalog images (None: all), ITM queries, timing rounds, batch-1 calls a
    round. BLIP-base gets fewer, since one of its images costs what a few hundred of the demo's do
    (ViT-B/16 at 384 px on a 2-core CPU: about a second in fp32)."""

    catalog: int | None
    itm_queries: int
    rounds: int
    per_round: int


COUNTS = {
    ("demo", False): Counts(None, 20, 4, 5),
    ("demo", True): Counts(200, 10, 2, 3),
    ("blip-base", False): Counts(24, 5, 2, 3),
    ("blip-base", True): Counts(8, 2, 1, 2),
}


def subject(title: str, directory: Path, work: Path, counts: Counts) -> dict[str, Any]:
    threads = torch.get_num_threads()
    models = torch_models(directory)
    fp32 = models["torch fp32"]
    log.info("runtimes, %s: exporting", title)
    started = time.perf_counter()
    paths = {
        graph: onnx_graphs.export(fp32.model, graph, work / f"{graph}.onnx") for graph in onnx_graphs.GRAPHS
    }
    export_s = time.perf_counter() - started
    started = time.perf_counter()
    int8_paths = quantize_onnx(paths, work)
    quantize_s = time.perf_counter() - started
    query = text_of_length_for(fp32, 8)
    inputs = make_inputs(fp32, query)
    image_batch = BATCH["vision"]
    catalog = load_catalog(fp32, counts.catalog, counts.itm_queries)
    makers: dict[str, Callable[[], Runner]] = {
        name: (lambda n=name: torch_runner(n, models[n])) for name in models
    }
    makers["onnxruntime fp32"] = lambda: backend_runner("onnxruntime fp32", "onnxruntime", paths, threads)
    makers["onnxruntime int8"] = lambda: backend_runner(
        "onnxruntime int8", "onnxruntime", int8_paths, threads
    )
    makers["openvino fp32"] = lambda: backend_runner("openvino fp32", "openvino", paths, threads)
    runners = {name: make() for name, make in makers.items()}
    ref = reference(runners["torch fp32"], catalog, image_batch)
    agreements = {name: agreement(runner, ref, catalog, image_batch) for name, runner in runners.items()}
    log.info("runtimes, %s, agreement: %s", title, agreements)
    speeds = speed(runners, inputs, counts.rounds, counts.per_round)
    rows = {name: {"speed": speeds[name], "agreement": agreements[name]} for name in runners}
    del runners
    gc.collect()
    return {
        "title": title,
        "query_tokens": int(inputs.one_text[0].shape[1]),
        "catalog_images": len(catalog.pixels),
        "itm_queries": len(catalog.itm_queries),
        "export_s": round(export_s, 1),
        "onnx_int8_quantize_s": round(quantize_s, 1),
        "onnx_mb": {graph: round(path.stat().st_size / 1e6, 1) for graph, path in paths.items()},
        "default_torch": default_paths(fp32),
        "runtimes": rows,
        "decision": decide(rows, default_paths(fp32)),
    }


def text_of_length_for(model: RetrievalModel, tokens: int) -> str:
    return text_of_length(SimpleNamespace(processor=model.processor), tokens)  # type: ignore[arg-type]


def decide(rows: dict[str, Any], defaults: dict[str, str]) -> dict[str, Any]:
    """Per graph, the non-torch runtimes meeting the rule on both latency and throughput."""
    out: dict[str, Any] = {}
    for graph, default in defaults.items():
        base = rows[default]["speed"][graph]
        winners = []
        for name, row in rows.items():
            if name.startswith("torch"):
                continue
            speed_row = row["speed"][graph]
            latency_x = base["p50_ms"] / speed_row["p50_ms"]
            throughput_x = speed_row["items_per_s"] / base["items_per_s"]
            agree = row["agreement"][graph]
            if min(latency_x, throughput_x) >= ADOPT_SPEEDUP and agree >= ADOPT_AGREEMENT:
                winners.append(name)
        out[graph] = {"default": default, "qualifying": winners}
    return out


def run(
    quick: bool, work: Path, models: list[str], save: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Both subjects in turn; `save` gets the report after each (a long run keeps what it has)."""
    import onnx
    import onnxruntime
    import openvino

    report: dict[str, Any] = {
        "machine": machine(),
        "quick": quick,
        "native_bf16": cpu_has_native_bf16(),
        "versions": {
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__.split("-")[0],
            "torch": torch.__version__,
        },
        "batches": BATCH,
        "rule": {"speedup": ADOPT_SPEEDUP, "agreement": ADOPT_AGREEMENT},
        "subjects": {},
    }
    subjects = {
        "demo": ("shipped demo model", lambda: DEMO_MODEL),
        "blip-base": (
            "BLIP-base architecture, random weights",
            lambda: base_size_checkpoint(work / "blip-base-random-bert-vocab"),
        ),
    }
    for key in models:
        title, directory = subjects[key]
        load = os.getloadavg()[0]
        report["subjects"][key] = subject(title, directory(), work / f"onnx-{key}", COUNTS[key, quick])
        report["subjects"][key]["load_average_1min"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        shutil.rmtree(work / f"onnx-{key}", ignore_errors=True)
        if save is not None:
            save(report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.runtimes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--models", nargs="+", default=["demo", "blip-base"], choices=["demo", "blip-base"])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and markdown go")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    work = args.work or Path(tempfile.mkdtemp(prefix="blipsearch-bench-runtimes-"))
    stem = f"runtimes-{machine_slug(machine())}-{time.strftime('%Y-%m-%d')}" + (
        "-quick" if args.quick else ""
    )
    from bench.runtimes_report import markdown

    run_to_results(args.out, stem, lambda save: run(args.quick, work, args.models, save), markdown)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
