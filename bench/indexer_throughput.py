"""Indexing throughput: the pipeline against the naive loop, in the same run, same files, same model.

Naive: for each file, open and decode it, embed it alone, write its row in its own transaction.
Pipeline (`blipsearch index`): threads read, hash, decode and preprocess while the model embeds
whole batches, and rows are written one transaction per batch. The ratio is what the design buys;
a re-run of the unchanged folder measures the cost of finding out that nothing changed.

    python bench/indexer_throughput.py --images 48         # ~5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import base_size_retrieval, naive_row, photo_like_jpegs, write_report

from blipsearch.images import open_image
from blipsearch.indexer.pipeline import Indexer
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog


def naive(paths: list[Path], model: RetrievalModel, settings: Settings) -> float:

    catalog = Catalog.open(settings)
    started = time.perf_counter()
    for path in paths:
        data = path.read_bytes()
        image = open_image(path, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        vector = model.embed_images([image]).vectors[0]
        catalog.write([naive_row(path, data, vector, model.fingerprint)])
    seconds = time.perf_counter() - started
    catalog.close()
    return seconds


def batch_sweep(model: RetrievalModel, sizes: list[int]) -> dict[int, float]:
    """Seconds per image of the vision encoder alone, at each batch size (same 16 inputs)."""
    import torch

    size = model.image_processor.size
    pixels = torch.randn(16, 3, size["height"], size["width"])
    original = model.image_batch_size
    result = {}
    for batch in sizes:
        model.image_batch_size = batch
        started = time.perf_counter()
        model.embed_images(pixels)
        result[batch] = round((time.perf_counter() - started) / len(pixels), 4)
    model.image_batch_size = original
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=48, help="collection size")
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="image batch size of the pipeline (default: the automatic one)",
    )
    parser.add_argument(
        "--sweep",
        type=int,
        nargs="*",
        default=[1, 2, 4, 8, 16],
        help="batch sizes for the per-image cost sweep",
    )
    parser.add_argument("--size", default="640x480", help="photo size WxH (camera photos: 4000x3000)")
    parser.add_argument("--report", default="indexer_throughput", help="report name under bench/reports")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-indexer-"))
    model_dir = base_size_retrieval(work / "blip-base-random")
    width, height = (int(part) for part in args.size.lower().split("x"))
    photos = photo_like_jpegs(work / "photos", args.images, size=(width, height))
    common = dict(retrieval_model=str(model_dir), device="cpu", dtype="float32", offline=True)
    model = RetrievalModel.load(str(model_dir), Settings(**common, image_batch_size=args.batch))
    model.embed_images([open_image(photos[0], max_bytes=1 << 30, max_pixels=1 << 30)])  # warm-up
    sweep = batch_sweep(model, args.sweep)

    naive_dir = work / "naive"
    shutil.rmtree(naive_dir, ignore_errors=True)
    naive_seconds = naive(photos, model, Settings(**common, data_dir=naive_dir))

    pipe_dir = work / "pipeline"
    shutil.rmtree(pipe_dir, ignore_errors=True)
    settings = Settings(**common, data_dir=pipe_dir, image_batch_size=args.batch)
    indexer = Indexer(settings, model=model)
    first = indexer.run(work / "photos")
    again = indexer.run(work / "photos")
    indexer.catalog.close()

    n = len(photos)
    result = {
        "images": n,
        "image_size": [width, height],
        "model": "BLIP-base architecture (ViT-B/16 384px + BERT-base), random weights, fp32",
        "batch_size": model.image_batch_size,
        "seconds_per_image_by_batch_size": sweep,
        "decode_workers": settings.decode_workers,
        "naive": {"seconds": round(naive_seconds, 2), "images_per_second": round(n / naive_seconds, 3)},
        "pipeline": {
            "seconds": round(first.seconds, 2),
            "images_per_second": round(n / first.seconds, 3),
            "embed_seconds": round(first.embed_seconds, 2),
        },
        "speedup": round(naive_seconds / first.seconds, 3),
        "unchanged_rerun": {"seconds": round(again.seconds, 3), "embedded": again.embedded},
    }
    markdown = (
        f"{n} JPEGs of {width}x{height}, {result['model']}.\n\n"
        "| path | seconds | images/s |\n|---|---|---|\n"
        f"| naive loop (decode, embed 1, commit 1) | {naive_seconds:.1f} | {n / naive_seconds:.2f} |\n"
        f"| pipeline (threads decode, batch {model.image_batch_size}, batched commits) "
        f"| {first.seconds:.1f} | {n / first.seconds:.2f} |\n\n"
        f"Speed-up: **{result['speedup']}x**. Model time inside the pipeline: {first.embed_seconds:.1f} s "
        f"({100 * first.embed_seconds / first.seconds:.0f}% of the run).\n\n"
        f"Re-run on the unchanged folder: {again.seconds:.2f} s, {again.embedded} images embedded.\n"
    )
    if sweep:
        markdown += (
            "\nVision encoder alone, seconds per image by batch size (this is why the CPU default is "
            f"{model.image_batch_size}):\n\n| batch | s/image |\n|---|---|\n"
            + "".join(f"| {batch} | {seconds} |\n" for batch, seconds in sweep.items())
        )
    json_path, md_path = write_report(args.report, result, markdown)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
