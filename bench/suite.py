"""The speed suite: `python -m bench` (from the repository root).

Measures, in one run and on one machine, for the real BLIP-base architecture (random weights: the
hub is unreachable here, and cost depends on shapes) and for the shipped demo model:
image embedding (tensors; files to index rows), text-query encoding, ITM re-ranking, vector
search at 100k and 1M vectors, the vector stores (FAISS flat and HNSW against pgvector through
`PgvectorStore`, 1M vectors: `bench/vector_stores.py`), end-to-end text search through the
service and over HTTP, and `index --engine ray` on a local Ray cluster against the local indexer
on the same images, with a paper estimate of a GPU cluster for 10M images (`bench/ray_indexing.py`),
and on the CPU BLIP's graphs exported to ONNX Runtime and OpenVINO against torch (`bench/runtimes.py`).
Every figure stands beside its baseline from the same run (stock transformers, the naive loop)
as a ratio, and beside the machine's measured fp32 GEMM throughput as a percentage. Writes
bench/results/<machine>-<date>.json and .md; `--update-readme` copies the summary into README.md.
Runs on CUDA when present (bf16 variants, deeper ITM shortlists), else on the CPU.

    python -m bench                  # ~20 minutes on 2 CPU cores
    python -m bench --quick          # a smoke run: small counts, 100k vectors only
    python -m bench load --help      # the HTTP load bench (bench/load.py), a run of its own
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import model_bench, ray_indexing, runtimes, system_bench, vector_stores
from bench.common import RESULTS, machine, machine_slug, run_to_results
from bench.subjects import DEMO_MODEL, base_size_checkpoint, default_variant, demo_pairs, load_subject
from bench.timing import gemm_gflops, int8_gemm_gflops

README = Path(__file__).resolve().parent.parent / "README.md"
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"
log = logging.getLogger("bench")
OWN_HNSW_LIMIT = 200_000
"""Above this, the vector-store section leaves out blipsearch's own HNSW spec (M=32,
ef_construction=200): at 1M vectors its build alone takes about 20 minutes on 2 cores."""


def run(args: argparse.Namespace, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    torch.manual_seed(0)
    info = machine()
    report: dict[str, Any] = {"machine": info, "device": device.type, "quick": args.quick}
    report["gemm_fp32_gflops"] = round(gemm_gflops(device), 1)
    if device.type == "cpu":
        report["gemm_int8_dynamic_gflops"] = round(int8_gemm_gflops(), 1)
    else:
        report["gemm_bf16_gflops"] = round(gemm_gflops(device, torch.bfloat16, 8192), 1)
    gemm = report["gemm_fp32_gflops"]
    log.info("fp32 GEMM %.1f GFLOP/s", gemm)
    work = args.work
    quick = args.quick
    ks = [4, 8, 16, 32] + ([64, 128, 256] if device.type == "cuda" else [])

    subjects = {
        "blip-base": (
            "BLIP-base architecture, random weights",
            base_size_checkpoint(work / "blip-base-random-bert-vocab"),
        ),
        "demo": ("shipped demo model", DEMO_MODEL),
    }
    report["models"] = {}
    for key in args.models:
        title, directory = subjects[key]
        subject = load_subject(title, directory, device)
        big = key == "blip-base"
        section: dict[str, Any] = {
            "title": title,
            "directory": str(directory),
            "default_variant": default_variant(subject),
        }
        section["image_embedding"] = model_bench.image_embedding(
            subject, (4 if quick else 8) if big and device.type == "cpu" else 256, gemm
        )
        section["text_encoding"] = model_bench.text_encoding(subject, 10 if quick else 40, gemm)
        section["itm"] = model_bench.itm_reranking(subject, ks, 2 if big else 10, gemm)
        files = 4 if quick else (8 if big and device.type == "cpu" else 256)
        sets = {
            f"jpeg {w}x{h}": system_bench.photo_files(work / f"photos-{w}x{h}-{files}", files, (w, h), seed=w)
            for w, h in ((500, 375), (1920, 1080))
        }
        naive_count = files if big else 64
        section["indexing"] = system_bench.indexing(subject, work / key, sets, naive_count)
        search_dir = work / key / "search-data"
        if key == "demo":
            catalog = DEMO_MODEL.parent.parent / "catalog" / "catalog.csv"
            model = subject.fast[default_variant(subject)]
            settings = system_bench.settings_for(directory, device, data_dir=search_dir)
            seconds, indexed = system_bench.pipeline_indexing(model, settings, catalog)
            section["indexing"]["demo catalog (64 px PNG + metadata)"] = {
                "files": indexed,
                "indexed": indexed,
                "pipeline_images_per_s": round(indexed / seconds, 2),
            }
            _, names = demo_pairs()
            queries = names[:: max(1, len(names) // (20 if quick else 200))]
            section["search"] = system_bench.search_end_to_end(subject, search_dir, queries, len(queries))
            section["int8_quality"] = system_bench.int8_quality(subject, 200 if quick else None)
        else:
            model = subject.fast[default_variant(subject)]
            settings = system_bench.settings_for(directory, device, data_dir=search_dir)
            system_bench.pipeline_indexing(model, settings, next(iter(sets.values()))[0].parent)
            queries = [model_bench.text_of_length(subject, 8) + f" {n}" for n in range(3 if quick else 8)]
            section["search"] = system_bench.search_end_to_end(subject, search_dir, queries, len(queries))
        report["models"][key] = section
        save(report)
        del subject
    if not args.skip_ray_indexing:
        report["ray_indexing"] = ray_indexing.run(
            {key: subjects[key][1] for key in args.models},
            work / "ray-indexing",
            counts=ray_indexing.QUICK_COUNTS if quick else ray_indexing.COUNTS,
            commit_files=ray_indexing.QUICK_COMMIT_FILES if quick else ray_indexing.COMMIT_FILES,
            log=log.info,
        )
        save(report)
    if device.type == "cpu" and not args.skip_runtimes:
        report["runtimes"] = runtimes.run(quick, work / "runtimes", args.models)
        save(report)
    if not args.skip_vectors:
        sizes = [100_000] if quick else [100_000, 1_000_000]
        report["vector_search"] = system_bench.vector_search(sizes, device)
    if not args.skip_vector_stores:
        count = min(args.vector_stores, 20_000) if quick else args.vector_stores
        report["vector_stores"] = vector_stores.run(
            count,
            queries=50 if quick else 200,
            filtered_queries=25 if quick else 100,
            own_hnsw=count <= OWN_HNSW_LIMIT,
            log=log.info,
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run, minutes)")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is present")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["blip-base", "demo"],
        choices=["blip-base", "demo"],
        help="what to measure",
    )
    parser.add_argument("--skip-vectors", action="store_true", help="skip the 100k/1M vector-search section")
    parser.add_argument(
        "--skip-runtimes",
        action="store_true",
        help="skip ONNX Runtime and OpenVINO against torch (CPU only; alone: python -m bench.runtimes)",
    )
    parser.add_argument(
        "--vector-stores",
        type=int,
        default=1_000_000,
        metavar="N",
        help="vectors in the FAISS-vs-pgvector section (default 1M; --quick: at most 20k)",
    )
    parser.add_argument(
        "--skip-vector-stores", action="store_true", help="skip the FAISS-vs-pgvector section"
    )
    parser.add_argument(
        "--skip-ray-indexing",
        action="store_true",
        help="skip the `--engine ray` against local indexing section (and its 10M-image GPU estimate)",
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and markdown go")
    parser.add_argument("--update-readme", action="store_true", help="copy the summary table into README.md")
    args = parser.parse_args()
    args.work = args.work or Path(tempfile.mkdtemp(prefix="blipsearch-bench-"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stem = f"{machine_slug(machine())}-{time.strftime('%Y-%m-%d')}" + ("-quick" if args.quick else "")
    from bench.report import markdown, summary

    report = run_to_results(args.out, stem, lambda save: run(args, save), markdown)
    if args.update_readme:
        text = README.read_text()
        start, end = text.index(README_START), text.index(README_END)
        block = f"{README_START}\n{summary(report, f'bench/results/{stem}.md')}\n{README_END}"
        README.write_text(text[:start] + block + text[end + len(README_END) :])
        print("README.md updated")
