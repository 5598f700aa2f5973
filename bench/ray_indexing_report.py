"""The Ray indexing section's markdown, and a paper estimate of a GPU cluster for 10M images.

The estimate is arithmetic on this run's per-image costs and one stated assumption, not a
measurement: the GPU's throughput comes from the ViT's FLOPs per image (computed from its shapes,
`bench.timing.vision_flops`) and an assumed sustained share of the card's dense bf16 peak, because
no GPU was measured here. The CPU cost of read + decode + preprocess is measured (one thread), and
so is the driver's commit cost, since `--engine ray` still writes every chunk from one process.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

ESTIMATE_IMAGES = 10_000_000
GPU_COUNTS = (1, 8, 32)


@dataclass(frozen=True)
class GpuAssumption:
    name: str
    peak_bf16_tflops: float
    """Dense (no sparsity) bf16 tensor-core peak from the vendor's data sheet."""
    sustained_share: float
    """Share of that peak a batched ViT-B/16 forward pass is assumed to sustain."""


SUSTAINED_SHARE = 0.4
GPUS = (
    GpuAssumption("H100 SXM", 989.0, SUSTAINED_SHARE),
    GpuAssumption("A100 SXM", 312.0, SUSTAINED_SHARE),
)
ASSUMPTION = (
    f"Assumed, not measured: a GPU sustains {SUSTAINED_SHARE:.0%} of its dense bf16 peak (H100 SXM "
    "989 TFLOP/s, A100 312 TFLOP/s, vendor data sheets) on ViT-B/16 at 384 px, batch >= 64, fused "
    "attention. The ViT's big GEMMs (577 tokens x batch rows, width 768 and 3072) run at 60-70% of "
    "peak, but at width 768 the layer norms, GELU, softmax and the host-to-device copy of the pixels "
    "are a large share of the time; 40% is the middle of that range, and on an H100 it is the "
    "suite's own GPU target for BLIP-base image embedding (>= 3500 images/s bf16, bench/report.py). "
    "Replace it with a measured images/s per GPU when one is available."
)


def _cores(images_per_s: float, seconds_per_image: float) -> int:
    """Whole cores to sustain a rate; rounded first, so 5000/s x 2 ms is 10 cores, not 11."""
    return math.ceil(round(images_per_s * seconds_per_image, 6))


def gpu_images_per_s(gpu: GpuAssumption, gflop_per_image: float) -> float:
    return gpu.peak_bf16_tflops * 1e3 * gpu.sustained_share / gflop_per_image


def estimate(
    *,
    images: int,
    gflop_per_image: float,
    read_ms_per_image: float,
    commit_ms_per_image: float,
    startup_s: float,
    gpu: GpuAssumption,
    gpu_counts: tuple[int, ...] = GPU_COUNTS,
) -> list[dict[str, Any]]:
    """One row per GPU count: what feeds the GPUs, what bounds the run, and its hours.

    R_gpu = peak x share / FLOP per image; a GPU needs ceil(R_gpu x t_read) decode cores; the run
    goes at R = min(G x R_gpu, 1 / t_commit) (one driver commits every chunk); hours = (start-up +
    N / R) / 3600.
    """
    per_gpu = gpu_images_per_s(gpu, gflop_per_image)
    read_s, commit_s = read_ms_per_image / 1000, commit_ms_per_image / 1000
    driver_cap = 1 / commit_s if commit_s > 0 else math.inf
    rows = []
    for gpus in gpu_counts:
        rate = min(gpus * per_gpu, driver_cap)
        rows.append(
            {
                "gpu": gpu.name,
                "gpus": gpus,
                "gpu_images_per_s": round(per_gpu, 1),
                "decode_cores_per_gpu": _cores(per_gpu, read_s),
                "decode_cores_total": _cores(rate, read_s),
                "cluster_images_per_s": round(rate, 1),
                "bound": "GPUs" if gpus * per_gpu <= driver_cap else "driver commit",
                "gpu_busy": round(rate / (gpus * per_gpu), 3),
                "hours": round((startup_s + images / rate) / 3600, 2),
                "hours_if_driver_kept_up": round((startup_s + images / (gpus * per_gpu)) / 3600, 2),
            }
        )
    return rows


def checkpoint_bytes(images: int, checkpoint_items: int, bytes_per_vector: float) -> float:
    """Bytes a run of `images` writes in index checkpoints: each one writes the whole index so far
    (`snapshots.commit`), every `checkpoint_items` images, so the total grows with N squared."""
    checkpoints = images // checkpoint_items
    return checkpoint_items * bytes_per_vector * checkpoints * (checkpoints + 1) / 2


def paper_estimate(base: dict[str, Any], images: int = ESTIMATE_IMAGES) -> dict[str, Any]:
    """The estimate's inputs (from the BLIP-base section of this run) and its rows per GPU kind."""
    inputs = {
        "images": images,
        "gflop_per_image": base["gflop_per_image"],
        "read_ms_per_image": base["read_ms_per_image"],
        "commit_ms_per_image": base["commit_ms_per_image"],
        "startup_s": round(base["ray"]["startup_s"] + base["ray"]["first_chunk_s"], 2),
    }
    per_vector = 4 * base["embedding_dim"]
    checkpoint_items = base["commit_run"]["checkpoint_items"]
    return {
        "inputs": inputs,
        "checkpoints": {
            "bytes_per_vector": per_vector,
            "checkpoint_items": checkpoint_items,
            "bytes_written": checkpoint_bytes(images, checkpoint_items, per_vector),
            "bytes_written_at_500k": checkpoint_bytes(images, 500_000, per_vector),
        },
        "assumption": ASSUMPTION,
        "gpus": [asdict(gpu) for gpu in GPUS],
        "rows": [row for gpu in GPUS for row in estimate(**inputs, gpu=gpu)],
    }


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _rerun(row: dict[str, Any]) -> str:
    rerun = row.get("rerun")
    if not rerun:
        return ""
    return f"{rerun['seconds']:.2f}" + (f" ({rerun['embedded']} embedded)" if rerun["embedded"] else "")


def _commit_set(section: dict[str, Any]) -> str:
    run = next(iter(section["models"].values()))["commit_run"]
    return (
        f"{run['embedded']:,} files in chunks of {section['engine_settings']['index_chunk_items']}, "
        f"a checkpoint every {run['checkpoint_items']:,};"
    )


def table(section: dict[str, Any]) -> list[str]:
    """The measured table: both engines on the same files, in the same run, and the per-image costs."""
    settings = section["engine_settings"]
    width, height = section["image_size"]
    out = [
        f"Generated photo-like {width}x{height} JPEGs, each model's own set indexed into fresh data "
        f"directories by the local indexer ({settings['decode_workers']} decode threads, torch on "
        f"{section['torch_threads']} threads) and by `--engine ray` on a private local cluster the bench "
        f"starts ({section['cluster_cpus']:g} CPUs: {settings['ray_workers']} embedding actor(s) of "
        f"{settings['ray_cpus_per_worker']:g} CPU, which Ray runs with OMP_NUM_THREADS=1; read tasks of "
        f"{settings['ray_block_items']} files). Same model settings in both (device cpu, default dtype "
        "and quantisation). images/s = embedded / the run's seconds; 'with start-up' adds the "
        "cluster's start. First chunk: seconds from the run's start to its first committed chunk "
        f"({settings['index_chunk_items']} files). Unchanged re-run: the same engine (and cluster) "
        "over the same folder again, nothing to embed. Load average (1 min) at start and end: "
        f"{section['load_average']['start']} and {section['load_average']['end']}; other work "
        "shared these cores, so compare the rows of one run, not runs.",
        "",
        "| Model | Images | Engine | images/s | with start-up | ray / local | start-up s | first chunk s "
        "| unchanged re-run s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in section["models"].items():
        local, ray = row["local"], row["ray"]
        out.append(
            f"| {row['title']} (`{key}`, {row['precision']}) | {local['embedded']} | local "
            f"| {_rate(local['images_per_s'])} | {_rate(local['images_per_s'])} | 1.00x | 0 "
            f"| {local['first_chunk_s']:.2f} | {_rerun(local)} |"
        )
        out.append(
            f"| | {ray['embedded']} | ray | {_rate(ray['images_per_s'])} "
            f"| {_rate(ray['images_per_s_with_startup'])} | {row['ray_over_local']:.2f}x "
            f"({row['ray_over_local_with_startup']:.2f}x with start-up) | {ray['startup_s']:.2f} "
            f"| {ray['first_chunk_s']:.2f} | {_rerun(ray)} |"
        )
    out += [
        "",
        "Per-image costs, each measured on its own: read + hash + decode + preprocess (`inspect.examine`, "
        "one thread, the files above); embed (`embed_images` on those pixels, batched, torch on "
        f"{section['torch_threads']} threads, after a warm-up); commit (the indexer's writer alone, "
        "SQLite and FAISS, on a set of its own: "
        + _commit_set(section)
        + " an engine hands it finished chunks, vectors included, and the time it holds each chunk "
        "is summed: SQL rows committed, the vector index refreshed and checkpointed, as the driver of "
        "`--engine ray` does; the run's fixed cost of opening and finishing the indexes is left out).",
        "",
        "| Model | GFLOP/image (ViT) | read+decode+preprocess ms/image | embed ms/image | commit ms/image |",
        "|---|---|---|---|---|",
    ]
    for key, row in section["models"].items():
        out.append(
            f"| `{key}` ({row['image_side']} px) | {row['gflop_per_image']} | {row['read_ms_per_image']} "
            f"| {row['embed_ms_per_image']} | {row['commit_ms_per_image']} |"
        )
    return out


def estimate_lines(paper: dict[str, Any], heading: str = "##") -> list[str]:
    inputs = paper["inputs"]
    out = [
        f"{heading} Paper estimate: {inputs['images']:,} images on a GPU cluster (arithmetic, not measured)",
        "",
        f"Inputs from this run's BLIP-base section: F = {inputs['gflop_per_image']} GFLOP per image "
        f"(ViT-B/16 at 384 px, from its shapes); t_read = {inputs['read_ms_per_image']} ms of one CPU "
        f"core per image (read + decode + preprocess, measured above); t_commit = "
        f"{inputs['commit_ms_per_image']} ms per image on the driver (measured above, SQLite, this "
        f"machine); T_start = {inputs['startup_s']} s (cluster start-up + time to the first committed "
        "chunk, measured on the local cluster; a real cluster's node start is not in it).",
        "",
        paper["assumption"],
        "",
        "Formula, to redo with real figures: R_gpu = P x u / F (P: peak FLOP/s, u: sustained share); "
        "decode cores per GPU = ceil(R_gpu x t_read); cluster rate R = min(G x R_gpu, 1 / t_commit) "
        "(one driver commits every chunk); hours = (T_start + N / R) / 3600; decode cores in all = "
        "ceil(R x t_read). The last column is N / (G x R_gpu): what the GPUs and decode cores alone "
        "would take, if commits were spread over several writers (not what `--engine ray` does today).",
        "",
        "| GPU | GPUs | images/s per GPU | decode cores per GPU | cluster images/s | bound by "
        "| GPU busy | decode cores in all | hours | hours if the driver kept up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {r['gpu']} | {r['gpus']} | {r['gpu_images_per_s']:,.0f} | {r['decode_cores_per_gpu']} "
        f"| {r['cluster_images_per_s']:,.0f} | {r['bound']} | {r['gpu_busy']:.0%} "
        f"| {r['decode_cores_total']:,} | {r['hours']} | {r['hours_if_driver_kept_up']} |"
        for r in paper["rows"]
    ]
    checkpoints = paper.get("checkpoints")
    if checkpoints:
        out += [
            "",
            "Not in the hours: index checkpoints. Each writes the whole FAISS index so far, every "
            f"{checkpoints['checkpoint_items']:,} images (`BLIPSEARCH_INDEX_CHECKPOINT_ITEMS`), so a run "
            "writes C x b x K(K+1)/2 bytes (K = N / C checkpoints, b bytes per vector): at "
            f"{checkpoints['bytes_per_vector']:,} bytes per vector (flat fp32) that is "
            f"{checkpoints['bytes_written'] / 1e12:,.1f} TB for {inputs['images']:,} images, against "
            f"{checkpoints['bytes_written_at_500k'] / 1e9:,.0f} GB with a checkpoint every 500,000. "
            "Raise it for a run of this size.",
        ]
    return out


def section_lines(section: dict[str, Any], heading: str = "##") -> list[str]:
    if "ray_missing" in section:
        return [f"No Ray rows: {section['ray_missing']}"]
    out = table(section)
    if section.get("estimate"):
        out += ["", *estimate_lines(section["estimate"], heading)]
    else:
        out += ["", "No paper estimate: it is computed from the BLIP-base section, which this run left out."]
    return out


def markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    return (
        "\n".join(
            [
                f"# Ray indexing: `--engine ray` against the local indexer on {info['cpu']}, "
                f"{info['cores']} cores, {report['when']}",
                "",
                *section_lines(report["ray_indexing"]),
            ]
        )
        + "\n"
    )
