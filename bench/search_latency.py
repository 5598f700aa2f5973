"""Query latency by stage, and what ITM re-ranking costs per shortlist size and token source.

Baseline in the same run: ITC only (`--no-rerank`). Then ITM over the top k candidates with the
vision tokens recomputed from the image files (the default, no storage) and from a warm float16
cache. This is the measurement behind the `rerank_k` default.

    python bench/search_latency.py --images 64 --k 4 8 16 32      # ~6 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import base_size_retrieval, photo_like_jpegs, write_report

from blipsearch.indexer.pipeline import Indexer
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.results import SearchOptions
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings

QUERIES = ["a red dress on a hanger", "two dogs playing in the snow", "a white sneaker", "a city street"]


def timed(service: SearchService, options: SearchOptions, repeats: int) -> float:
    samples = []
    for index in range(repeats):
        started = time.perf_counter()
        service.text_to_images(QUERIES[index % len(QUERIES)], options)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64, help="collection size")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8, 16, 32], help="shortlist sizes")
    parser.add_argument("--repeats", type=int, default=3, help="queries per measurement (median)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-search-"))
    model_dir = base_size_retrieval(work / "blip-base-random")
    photo_like_jpegs(work / "photos", args.images)
    base = dict(
        retrieval_model=str(model_dir), device="cpu", dtype="float32", offline=True, data_dir=work / "data"
    )
    settings = Settings(**base)
    model = RetrievalModel.load(str(model_dir), settings)
    indexer = Indexer(settings, model=model)
    indexer.run(work / "photos")
    indexer.catalog.close()

    files = SearchService.open(Settings(**base, vision_tokens="files"))
    itc_only = timed(files, SearchOptions(rerank=False, mode="vector"), args.repeats * 3)
    stages = files.text_to_images(QUERIES[0], SearchOptions(rerank=False, mode="vector")).timings
    cached = SearchService(Settings(**base, vision_tokens="cache"), files.model, files.catalog)
    rows = []
    for k in args.k:
        options = SearchOptions(rerank_k=k, mode="vector")
        from_files = timed(files, options, args.repeats)
        timed(cached, options, 1)  # fill the cache
        from_cache = timed(cached, options, args.repeats)
        rows.append(
            {
                "rerank_k": k,
                "files_seconds": round(from_files, 3),
                "cache_seconds": round(from_cache, 3),
                "files_ms_per_candidate": round(1000 * (from_files - itc_only) / k, 1),
                "cache_ms_per_candidate": round(1000 * (from_cache - itc_only) / k, 1),
            }
        )
        print(rows[-1], flush=True)
    files.close()
    result = {
        "images": args.images,
        "model": "BLIP-base architecture (ViT-B/16 384px + BERT-base), random weights, fp32",
        "itc_only_seconds": round(itc_only, 4),
        "itc_stages_ms": {key: round(value * 1000, 2) for key, value in stages.items()},
        "rerank": rows,
    }
    markdown = (
        f"{args.images} indexed JPEGs, {result['model']}; medians over {args.repeats} queries.\n\n"
        f"ITC only (baseline): **{itc_only * 1000:.0f} ms** per query "
        f"(stages: {', '.join(f'{k} {v} ms' for k, v in result['itc_stages_ms'].items())}).\n\n"
        "| rerank_k | tokens from files: s | per candidate ms | warm cache: s | per candidate ms |\n"
        "|---|---|---|---|---|\n"
        + "".join(
            f"| {r['rerank_k']} | {r['files_seconds']} | {r['files_ms_per_candidate']} "
            f"| {r['cache_seconds']} | {r['cache_ms_per_candidate']} |\n"
            for r in rows
        )
    )
    json_path, md_path = write_report("search_latency", result, markdown)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
