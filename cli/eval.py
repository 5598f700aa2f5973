"""`blipsearch eval`: Recall@K of a retrieval checkpoint on an image-caption set (BLIP's protocol)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from blipsearch.cli.context import session
from blipsearch.cli.options import DeviceOpt, DTypeOpt, JsonOpt, RetrievalModelOpt, print_json
from blipsearch.cli.progress import stage_bars

console = Console()
err_console = Console(stderr=True)


def parse_rerank_depths(values: list[str] | None) -> list[int]:
    """`--rerank-k 16 --rerank-k 128` and `--rerank-k 16,128` both mean depths 16 and 128."""
    from blipsearch.errors import InvalidInputError

    depths: set[int] = set()
    for value in values or []:
        for part in value.split(","):
            if not part.strip():
                continue
            try:
                depth = int(part)
            except ValueError:
                raise InvalidInputError(f"--rerank-k takes whole numbers, not {part.strip()!r}.") from None
            if depth < 1:
                raise InvalidInputError(f"--rerank-k must be at least 1, not {depth}.")
            depths.add(depth)
    return sorted(depths)


def eval_command(
    ctx: typer.Context,
    annotations: Annotated[
        Path,
        typer.Argument(
            help="Karpathy/BLIP JSON ([{'image', 'caption': [...]}] or dataset_*.json) or a TSV of "
            "image<TAB>caption lines.",
            metavar="ANNOTATIONS",
            show_default=False,
        ),
    ],
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Folder the image paths are relative to (default: the file's folder)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, karpathy or tsv.")] = "auto",
    split: Annotated[
        str, typer.Option("--split", help="Split of a Karpathy dataset_*.json: test, val, train, restval.")
    ] = "test",
    model: RetrievalModelOpt = None,
    rerank_k: Annotated[
        list[str] | None,
        typer.Option(
            "--rerank-k",
            metavar="K[,K...]",
            help="Also re-rank each query's ITC top-k with ITM (BLIP: 256 for COCO, 128 for Flickr30k). "
            "Repeatable or comma-separated: --rerank-k 16,128.",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N images (with all their captions).")
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images decoded and encoded per step.")] = 32,
    device: DeviceOpt = None,
    dtype: DTypeOpt = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure Recall@1/5/10 and mean/median rank of a checkpoint on an image-caption set.

    Image->text: each image queries all captions; its rank is that of its best own caption.
    Text->image: each caption queries all images. ITC scores every pair; with --rerank-k, each
    query's ITC top-k is re-ordered by ITM probability (with BLIPSEARCH_RERANK_ITC_WEIGHT, by ITM
    log-odds plus that weight x the cosine), the same rule `blipsearch search` applies.
    """
    from blipsearch.models.retrieval import RetrievalModel
    from blipsearch.search.caption_sets import load_caption_set
    from blipsearch.search.evaluation import evaluate

    depths = parse_rerank_depths(rerank_k)
    dataset = load_caption_set(annotations, images_root=images, fmt=fmt, split=split)
    if limit is not None:
        dataset = dataset.first_images(limit)
    settings = session(ctx).settings(retrieval_model=model, device=device, dtype=dtype)
    retrieval = RetrievalModel.load(settings.retrieval_model, settings)
    with stage_bars(err_console, enabled=not (no_progress or as_json)) as progress:
        result = evaluate(
            retrieval,
            dataset,
            rerank_k=depths or None,
            image_batch=batch,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            progress=progress,
            itc_weight=settings.rerank_itc_weight,
        )
    if as_json:
        print_json({**result.as_dict(), "model": settings.retrieval_model})
        return
    _print_table(result.as_dict(), settings.retrieval_model)


def _print_table(data: dict[str, Any], model: str) -> None:
    table = Table(
        title=f"{data['annotations']}: {data['images']} images, {data['texts']} texts\n"
        f"{model} ({data['fingerprint']})"
    )
    table.add_column("direction")
    table.add_column("mode")
    for heading in ("R@1", "R@5", "R@10", "mean rank", "median rank"):
        table.add_column(heading, justify="right")
    for direction, label in (("image_to_text", "image->text"), ("text_to_image", "text->image")):
        for mode in data["results"]:
            metrics = mode[direction]
            table.add_row(
                label,
                mode["mode"],
                *(f"{metrics[key]:.2f}" for key in ("r1", "r5", "r10")),
                f"{metrics['mean_rank']:.2f}",
                f"{metrics['median_rank']:g}",
            )
    console.print(table)
    means = ", ".join(f"{mode['mode']} {mode['recall_mean']:.2f}" for mode in data["results"])
    console.print(f"mean of the six recalls: {means}  ({data['seconds']:.1f} s)", highlight=False)
