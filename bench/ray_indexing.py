"""`--engine ray` against the local indexer: `python bench/ray_indexing.py [--quick]`.

For each model (the shipped demo model; BLIP-base's architecture with random weights) the same
generated photo-like JPEGs are indexed into fresh data directories, in the same run, by the local
indexer and by `--engine ray` on a private local Ray cluster the bench starts: images/s of each,
their ratio, the cluster's start-up and the time to the first committed chunk. Beside them, the
per-image costs each measured on its own (read + decode + preprocess on one thread, embedding,
and the driver's commit), from which `ray_indexing_report.py` makes a paper estimate of a GPU
cluster for 10M images. A local cluster on one machine shows Ray's overhead, not its scaling: the
same cores run the driver, the read tasks and the actors. Writes
bench/results/ray-indexing-<machine>-<date>.json and .md (`-quick` added for a quick run).

    python bench/ray_indexing.py            # demo 1024 images, BLIP-base 32: ~5 minutes on 2 cores
    python bench/ray_indexing.py --quick    # demo 64, BLIP-base 8
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from PIL import Image

from bench.common import RESULTS, machine, machine_slug, photo_like_jpegs
from bench.ray_indexing_report import markdown, paper_estimate
from bench.subjects import DEMO_MODEL, base_size_checkpoint
from bench.timing import vision_flops
from blipsearch.indexer.inspect import Action, Inspection, InspectPolicy, examine
from blipsearch.indexer.pipeline import Indexer
from blipsearch.indexer.progress import Progress
from blipsearch.indexer.ray_engine import RAY_MISSING, RayEngine
from blipsearch.indexer.sources import SourceRecord, open_source
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.item_writes import FileFacts
from blipsearch.storage.schema import Item

TITLES = {"demo": "shipped demo model", "blip-base": "BLIP-base architecture, random weights"}
COUNTS = {"demo": 1024, "blip-base": 32}
QUICK_COUNTS = {"demo": 64, "blip-base": 8}
COMMIT_FILES, QUICK_COMMIT_FILES = 4096, 512
"""The writer's cost is timed on a set of its own, many chunks and two index checkpoints long:
nothing in it is decoded or embedded, so its size costs little."""
Clock = Callable[[], float]


class FirstCommit(Progress):
    """Silent progress that notes when the first chunk was committed (the writer advances after each)."""

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        super().__init__(enabled=False, clock=clock)
        self.first: float | None = None

    def advance(self, count: int, *, embedded: int = 0, failed: int = 0) -> None:
        if self.first is None:
            self.first = self.clock()
        super().advance(count, embedded=embedded, failed=failed)


class CommitOnly:
    """A `ChunkEngine` whose chunks arrive finished (facts and vectors known), so a run through it
    times the indexer's writer alone: what the one driver of `--engine ray` does for every image."""

    name = "commit-only"

    def __init__(
        self,
        facts: dict[str, FileFacts],
        dim: int,
        chunk_items: int,
        seed: int = 0,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.facts = facts
        self.chunk_items = chunk_items
        self.clock = clock
        self.writer_seconds = 0.0
        """Time the writer held each chunk (between a yield and the next request): the per-image
        cost, without the run's fixed cost of opening and finishing the indexes."""
        rng = np.random.default_rng(seed)
        vectors = rng.standard_normal((len(facts), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = dict(zip(facts, vectors, strict=True))

    def chunks(
        self,
        records: Sequence[SourceRecord],
        existing: Callable[[list[str]], dict[str, Item]],
        policy: InspectPolicy,
    ) -> Iterator[list[Inspection]]:
        for start in range(0, len(records), self.chunk_items):
            part = records[start : start + self.chunk_items]
            known = existing([record.source for record in part])
            chunk = [
                Inspection(
                    record,
                    known.get(record.source),
                    Action.EMBED,
                    facts=self.facts[record.source],
                    vector=self.vectors[record.source],
                )
                for record in part
            ]
            handed = self.clock()
            yield chunk
            self.writer_seconds += self.clock() - handed


def settings_for(directory: Path, data_dir: Path) -> Settings:
    """What both engines run with: the CPU, the model's default dtype and quantisation."""
    return Settings(retrieval_model=str(directory), device="cpu", offline=True, data_dir=data_dir)


def commit_facts(folder: Path, count: int) -> dict[str, FileFacts]:
    """`count` small JPEGs and their facts as a read task would give them (hash, size, dimensions)."""
    if len(list(folder.glob("*.jpg"))) != count:
        photo_like_jpegs(folder, count, size=(64, 48))
    facts = {}
    for record in open_source(folder).records():
        data = record.path.read_bytes()
        with Image.open(record.path) as image:
            width, height = image.size
        stat = record.path.stat()
        facts[record.source] = FileFacts(
            hashlib.sha256(data).hexdigest(), len(data), stat.st_mtime, "JPEG", width, height
        )
    return facts


def commit_cost(
    directory: Path,
    dim: int,
    folder: Path,
    facts: dict[str, FileFacts],
    data_dir: Path,
    model: RetrievalModel,
) -> dict[str, Any]:
    """The writer alone over `folder`: per-image seconds without the run's fixed cost."""
    settings = fresh(settings_for(directory, data_dir))
    engine = CommitOnly(facts, dim, settings.index_chunk_items)
    row = index_once(settings, model, folder, engine)
    row["writer_seconds"] = round(engine.writer_seconds, 3)
    row["checkpoint_items"] = settings.index_checkpoint_items
    row["ms_per_image"] = round(1000 * engine.writer_seconds / max(1, row["embedded"]), 4)
    return row


def read_pass(
    folder: Path, model: RetrievalModel, settings: Settings, clock: Clock = time.perf_counter
) -> tuple[float, list[Inspection]]:
    """Seconds per image of `inspect.examine` (read, hash, decode, preprocess) on one thread, with
    the policy the indexer uses, and the inspections (their pixels and facts are reused)."""
    side = model.image_size
    policy = InspectPolicy(
        fingerprint=model.fingerprint,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        preprocess=model.pixel_values,
        decode_at_least=(side, side),
    )
    records = list(open_source(folder).records())
    started = clock()
    inspections = [examine(record, None, policy) for record in records]
    seconds = clock() - started
    return seconds / max(1, len(records)), inspections


def embed_seconds_per_image(
    model: RetrievalModel, pixels: torch.Tensor, clock: Clock = time.perf_counter
) -> float:
    model.embed_images(pixels[: model.image_batch_size])  # warm-up
    started = clock()
    model.embed_images(pixels)
    return (clock() - started) / len(pixels)


def index_once(
    settings: Settings,
    model: RetrievalModel,
    folder: Path,
    engine: Any = None,
    clock: Clock = time.perf_counter,
) -> dict[str, Any]:
    """One indexing run into `settings.data_dir`: what it embedded, in how long, and when its
    first chunk was committed."""
    progress = FirstCommit(clock)
    indexer = Indexer(settings, model=model, progress=progress, engine=engine)
    try:
        started = clock()
        report = indexer.run(folder)
    finally:
        indexer.catalog.close()
    first = (progress.first if progress.first is not None else clock()) - started
    return {
        "embedded": report.embedded,
        "failed": report.failed,
        "seconds": round(report.seconds, 3),
        "images_per_s": round(report.images_per_second, 3),
        "first_chunk_s": round(first, 3),
    }


def fresh(settings: Settings) -> Settings:
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    return settings


def index_twice(
    settings: Settings, model: RetrievalModel, folder: Path, engine: Any = None
) -> dict[str, Any]:
    """A run into a fresh data directory, then a re-run over the unchanged folder (nothing to embed:
    the cost of finding that out)."""
    row = index_once(fresh(settings), model, folder, engine)
    again = index_once(settings, model, folder, engine)
    row["rerun"] = {"seconds": again["seconds"], "embedded": again["embedded"]}
    return row


def ray_twice(settings: Settings, model: RetrievalModel, folder: Path) -> dict[str, Any]:
    engine = RayEngine(settings, model)
    plan = engine.start()
    try:
        row = index_twice(settings, model, folder, engine)
    finally:
        engine.close()
    seconds = row["seconds"] + engine.startup_seconds
    row.update(
        startup_s=round(engine.startup_seconds, 3),
        images_per_s_with_startup=round(row["embedded"] / seconds, 3) if seconds else 0.0,
        workers=plan.workers,
        cpus_per_worker=plan.cpus_per_worker,
    )
    return row


def measure_model(
    key: str,
    directory: Path,
    count: int,
    size: tuple[int, int],
    work: Path,
    log: Callable[[str], None],
    commit_files: tuple[Path, dict[str, FileFacts]],
) -> dict[str, Any]:
    folder = work / f"photos-{size[0]}x{size[1]}-{count}"
    photo_like_jpegs(folder, count, size=size)
    model = RetrievalModel.load(str(directory), settings_for(directory, work / key / "unused"))
    read_s, inspections = read_pass(folder, model, settings_for(directory, work / key / "unused"))
    pixels = torch.cat([i.pixels for i in inspections if i.pixels is not None])
    embed_s = embed_seconds_per_image(model, pixels)
    log(f"{key}: read+decode+preprocess {1000 * read_s:.1f} ms/image, embed {1000 * embed_s:.1f} ms/image")
    local = index_twice(settings_for(directory, work / key / "local"), model, folder)
    log(f"{key}: local {local}")
    ray = ray_twice(settings_for(directory, work / key / "ray"), model, folder)
    log(f"{key}: ray {ray}")
    committed = commit_cost(directory, model.embedding_dim, *commit_files, work / key / "commit-only", model)
    log(f"{key}: commit only {committed}")
    return {
        "title": TITLES.get(key, key),
        "directory": str(directory),
        "images": count,
        "precision": model.precision,
        "image_side": model.image_size,
        "image_batch_size": model.image_batch_size,
        "gflop_per_image": float(f"{vision_flops(model.model.config) / 1e9:.4g}"),
        "read_ms_per_image": round(1000 * read_s, 3),
        "embed_ms_per_image": round(1000 * embed_s, 3),
        "embedding_dim": model.embedding_dim,
        "commit_ms_per_image": committed["ms_per_image"],
        "commit_run": committed,
        "local": local,
        "ray": ray,
        "ray_over_local": round(ray["images_per_s"] / local["images_per_s"], 3)
        if local["images_per_s"]
        else 0,
        "ray_over_local_with_startup": round(ray["images_per_s_with_startup"] / local["images_per_s"], 3)
        if local["images_per_s"]
        else 0,
    }


def run(
    subjects: dict[str, Path],
    work: Path,
    *,
    counts: dict[str, int],
    commit_files: int = COMMIT_FILES,
    size: tuple[int, int] = (640, 480),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The Ray indexing section for each model in `subjects` (key -> checkpoint directory), with the
    paper estimate when BLIP-base is among them."""
    if importlib.util.find_spec("ray") is None:
        log(RAY_MISSING)
        return {"ray_missing": RAY_MISSING}
    defaults = Settings()
    section: dict[str, Any] = {
        "image_size": list(size),
        "cluster_cpus": float(os.cpu_count() or 1),
        "torch_threads": torch.get_num_threads(),
        "engine_settings": {
            "decode_workers": defaults.decode_workers,
            "index_chunk_items": defaults.index_chunk_items,
            "ray_cpus_per_worker": defaults.ray_cpus_per_worker,
            "ray_block_items": defaults.ray_block_items,
            "ray_shard_items": defaults.ray_shard_items,
        },
        "models": {},
    }
    load_at_start = round(os.getloadavg()[0], 2)
    commit_folder = work / f"commit-{commit_files}"
    commit_set = (commit_folder, commit_facts(commit_folder, commit_files))
    for key, directory in subjects.items():
        section["models"][key] = measure_model(key, directory, counts[key], size, work, log, commit_set)
        section["engine_settings"]["ray_workers"] = section["models"][key]["ray"]["workers"]
    section["load_average"] = {"start": load_at_start, "end": round(os.getloadavg()[0], 2)}
    if "blip-base" in section["models"]:
        section["estimate"] = paper_estimate(section["models"]["blip-base"])
    return section


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python bench/ray_indexing.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small counts (demo 64, BLIP-base 8)")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["demo", "blip-base"],
        choices=["demo", "blip-base"],
        help="what to measure",
    )
    parser.add_argument("--demo-images", type=int, default=None, help="images for the demo model")
    parser.add_argument("--base-images", type=int, default=None, help="images for BLIP-base")
    parser.add_argument("--size", default="640x480", help="photo size WxH")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and markdown go")
    parser.add_argument(
        "--rerender",
        type=Path,
        default=None,
        metavar="JSON",
        help="measure nothing: recompute a saved report's estimate and markdown (after changing the "
        "GPU assumption in ray_indexing_report.py)",
    )
    args = parser.parse_args()
    if args.rerender is not None:
        saved: dict[str, Any] = json.loads(args.rerender.read_text())
        section = saved["ray_indexing"]
        if "blip-base" in section.get("models", {}):
            section["estimate"] = paper_estimate(section["models"]["blip-base"])
        write(saved, args.rerender)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ray-indexing-"))
    counts = dict(QUICK_COUNTS if args.quick else COUNTS)
    counts["demo"] = args.demo_images or counts["demo"]
    counts["blip-base"] = args.base_images or counts["blip-base"]
    width, height = (int(part) for part in args.size.lower().split("x"))
    started = time.time()
    paths = {"demo": DEMO_MODEL}
    if "blip-base" in args.models:
        paths["blip-base"] = base_size_checkpoint(work / "blip-base-random-bert-vocab")
    report: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    report["ray_indexing"] = run(
        {key: paths[key] for key in args.models},
        work,
        counts=counts,
        commit_files=QUICK_COMMIT_FILES if args.quick else COMMIT_FILES,
        size=(width, height),
        log=lambda message: print(f"[{time.time() - started:.0f} s] {message}", flush=True),
    )
    report["seconds"] = round(time.time() - started, 1)
    report["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stem = f"ray-indexing-{machine_slug(report['machine'])}-{time.strftime('%Y-%m-%d')}"
    stem += "-quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    write(report, args.out / f"{stem}.json")


def write(report: dict[str, Any], json_path: Path) -> None:
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    json_path.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {json_path} and {json_path.with_suffix('.md').name}")


if __name__ == "__main__":
    main()
