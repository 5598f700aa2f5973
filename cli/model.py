"""`blipsearch model`: inspect, create and try BLIP checkpoints without an index."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from blipsearch.cli.context import session
from blipsearch.cli.options import DeviceOpt, DTypeOpt, JsonOpt, print_json
from blipsearch.cli.output import stdout_is_terminal, write_lines
from blipsearch.errors import BlipsearchError
from blipsearch.settings import Settings

console = Console()

model_app = typer.Typer(help="Inspect, create and try BLIP checkpoints.", no_args_is_help=True)

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint: hub id or local directory.")]
OfflineOpt = Annotated[
    bool | None, typer.Option("--offline/--online", help="Never contact the model hub (HF_HUB_OFFLINE).")
]


@model_app.command("make-tiny")
def model_make_tiny(
    directory: Annotated[Path, typer.Argument(help="Where to write retrieval/, caption/ and vqa/.")],
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same weights.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing tiny checkpoints.")] = False,
) -> None:
    """Write tiny random BLIP checkpoints (retrieval, caption, VQA) for tests and offline smoke runs."""
    from blipsearch.models.tiny import make_tiny

    written = make_tiny(directory, seed=seed, overwrite=force)
    for role in ("retrieval", "caption", "vqa"):
        console.print(f"{role:9s} {getattr(written, role)}")


@model_app.command("info")
def model_info(
    ctx: typer.Context,
    source: Annotated[
        str | None, typer.Argument(help="Hub id or directory (default: retrieval model).")
    ] = None,
    offline: OfflineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a checkpoint's architecture, parameter counts, embedding size, image size and fingerprint."""
    from blipsearch.models.info import checkpoint_info

    settings = session(ctx).settings(offline=offline)
    info = checkpoint_info(source or settings.retrieval_model, settings)
    if as_json:
        print_json(info)
        return
    table = Table(title=f"{info['architecture']}  ({info['source']})", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    params = info["parameters"]
    rows: list[tuple[str, object]] = [
        ("role", info["role"]),
        ("fingerprint", info["fingerprint"]),
        ("embedding size", info["embedding_dim"] if info["embedding_dim"] is not None else "n/a"),
        (
            "image size",
            f"{info['image_size']} px, patch {info['patch_size']}, {info['vision_tokens']} tokens",
        ),
        ("vision encoder", "{layers} layers x {hidden} wide, {heads} heads".format(**info["vision"])),
        (
            "text side",
            "{layers} layers x {hidden} wide, {heads} heads, vocab {vocab_size}".format(**info["text"]),
        ),
        (
            "tokenizer",
            "{class}, {vocab_size} tokens, max {max_text_tokens} per text".format(**info["tokenizer"]),
        ),
        ("parameters", ", ".join(f"{k} {v:,}" for k, v in params.items())),
        ("stored dtype", info["stored_dtype"]),
    ]
    for key, value in rows:
        table.add_row(str(key), str(value))
    console.print(table)


def _open_images(paths: list[Path], settings: Settings) -> list[Any]:
    from blipsearch.images import open_image

    return [
        open_image(p, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels) for p in paths
    ]


@model_app.command("embed")
def model_embed(
    ctx: typer.Context,
    text: Annotated[
        list[str] | None, typer.Option("--text", "-t", help="Text to embed (repeatable).")
    ] = None,
    image: Annotated[
        list[Path] | None, typer.Option("--image", "-i", help="Image to embed (repeatable).")
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DTypeOpt = None,
    offline: OfflineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """ITC-embed texts and/or images and show their cosine similarities."""
    from blipsearch.models.retrieval import RetrievalModel

    if not text and not image:
        raise BlipsearchError("Give at least one --text or --image to embed.")
    settings = session(ctx).settings(retrieval_model=model, device=device, dtype=dtype, offline=offline)
    retrieval = RetrievalModel.load(settings.retrieval_model, settings)
    labels: list[str] = []
    vectors = []
    if text:
        vectors.append(retrieval.embed_texts(text))
        labels += [f"text: {t}" for t in text]
    if image:
        vectors.append(retrieval.embed_images(_open_images(image, settings)).vectors)
        labels += [f"image: {p}" for p in image]
    import numpy as np

    matrix = np.concatenate(vectors)
    similarity = matrix @ matrix.T
    if as_json:
        print_json(
            {
                "fingerprint": retrieval.fingerprint,
                "labels": labels,
                "vectors": matrix.round(6).tolist(),
                "cosine": similarity.round(6).tolist(),
            }
        )
        return
    table = Table(title=f"ITC cosine similarity ({retrieval.embedding_dim}-d, {retrieval.fingerprint})")
    table.add_column("")
    for index_ in range(len(labels)):
        table.add_column(str(index_), justify="right")
    for row, label in enumerate(labels):
        table.add_row(f"{row} {label}", *[f"{v:.3f}" for v in similarity[row]])
    console.print(table)


@model_app.command("match")
def model_match(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="Image file.")],
    texts: Annotated[list[str], typer.Argument(help="Candidate texts.")],
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DTypeOpt = None,
    offline: OfflineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score texts against an image and rank them as the search service re-ranks: best first.

    The ranking score is the service's re-rank key (setting rerank_itc_weight): the ITM match
    probability when the weight is 0, else ITM log-odds + weight x ITC cosine; both parts are shown.
    """
    from blipsearch.models.retrieval import RetrievalModel
    from blipsearch.search.fusion import rerank_scores

    settings = session(ctx).settings(retrieval_model=model, device=device, dtype=dtype, offline=offline)
    retrieval = RetrievalModel.load(settings.retrieval_model, settings)
    pictures = _open_images([image], settings)
    embedded = retrieval.embed_images(pictures, return_vision_tokens=True)
    assert embedded.vision_tokens is not None
    itc = retrieval.embed_texts(texts) @ embedded.vectors[0]
    itm = retrieval.itm_scores(texts, vision_tokens=embedded.vision_tokens.expand(len(texts), -1, -1))
    weight = settings.rerank_itc_weight
    score = rerank_scores(itm, itc, weight)
    order = sorted(range(len(texts)), key=lambda i: -float(score[i]))
    results = [
        {"text": texts[i], "score": float(score[i]), "itm": float(itm[i]), "itc": float(itc[i])}
        for i in order
    ]
    rule = "ITM p(match)" if weight == 0 else f"ITM log-odds + {weight:g} x ITC cosine"
    if as_json:
        print_json(
            {
                "image": str(image),
                "fingerprint": retrieval.fingerprint,
                "rerank_itc_weight": weight,
                "score": rule,
                "results": results,
            }
        )
        return
    rows = [
        [rank, row["text"], f"{row['score']:.4f}", f"{row['itm']:.4f}", f"{row['itc']:.4f}"]
        for rank, row in enumerate(results, start=1)
    ]
    if not stdout_is_terminal():
        write_lines(["rank", "text", "score", "itm", "itc"], rows)
        sys.stderr.write(f"score = {rule}\n")
        return
    table = Table(title=f"{image} ({retrieval.fingerprint})", caption=f"ranked by score = {rule}")
    table.add_column("#", no_wrap=True)
    table.add_column("text", overflow="fold")
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("ITM p(match)", justify="right", no_wrap=True)
    table.add_column("ITC cosine", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)


@model_app.command("caption")
def model_caption(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    prompt: Annotated[str | None, typer.Option(help='Text to continue, e.g. "a picture of".')] = None,
    strategy: Annotated[str, typer.Option(help="greedy, beam or nucleus.")] = "beam",
    max_new_tokens: Annotated[int, typer.Option(min=1, max=100)] = 20,
    seed: Annotated[int, typer.Option(help="Seed for nucleus sampling.")] = 0,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DTypeOpt = None,
    offline: OfflineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Caption images with the caption model."""
    from blipsearch.models.captioner import Captioner, CaptionOptions

    if strategy not in ("greedy", "beam", "nucleus"):
        raise BlipsearchError(f"Unknown caption strategy '{strategy}'; use greedy, beam or nucleus.")
    settings = session(ctx).settings(caption_model=model, device=device, dtype=dtype, offline=offline)
    captioner = Captioner.load(settings.caption_model, settings)
    options = CaptionOptions(
        strategy=strategy,  # type: ignore[arg-type]
        max_new_tokens=max_new_tokens,
        min_new_tokens=min(settings.caption_min_tokens, max_new_tokens),
        seed=seed,
    )
    captions = captioner.caption(_open_images(images, settings), prompt=prompt, options=options)
    if as_json:
        print_json([{"image": str(p), "caption": c} for p, c in zip(images, captions, strict=True)])
        return
    for path, caption in zip(images, captions, strict=True):
        console.print(f"{path}: {caption}")


@model_app.command("ask")
def model_ask(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="Image file.")],
    question: Annotated[str, typer.Argument(help='Question, e.g. "what colour is the strap?"')],
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DTypeOpt = None,
    offline: OfflineOpt = None,
) -> None:
    """Answer a question about an image (needs a VQA model: --model or BLIPSEARCH_VQA_MODEL)."""
    from blipsearch.models.registry import ModelSet

    settings = session(ctx).settings(vqa_model=model, device=device, dtype=dtype, offline=offline)
    answer = ModelSet(settings).vqa.answer(_open_images([image], settings)[0], question)
    console.print(answer)
