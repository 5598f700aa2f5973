"""`blipsearch demo` (the shipped model and catalog, indexed and served in one command) and
`blipsearch demo-assets` (the same pieces one at a time, for scripts/quickstart.sh)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from blipsearch.cli.context import session
from blipsearch.cli.serve import HostOpt, PortOpt, run_server

console = Console(stderr=True)

demo_assets_app = typer.Typer(
    help="The demo's model settings and broken files, for scripts that run the commands one by one.",
    no_args_is_help=True,
)


def demo(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo's data (catalog database, indexes) goes.")
    ] = Path(".blipsearch-demo"),
    host: HostOpt = None,
    port: PortOpt = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Index only the first N products (quicker).")
    ] = None,
    captions: Annotated[
        bool, typer.Option("--captions/--no-captions", help="Caption every product while indexing.")
    ] = True,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Build and index only, then exit.")] = False,
) -> None:
    """Index the shipped emoji catalog with the shipped demo model, offline, and serve it with the web UI.

    The demo model (demo/model, a small BLIP trained on Noto emoji; its card has the measured
    figures) is used unless BLIPSEARCH_RETRIEVAL_MODEL is set. The catalog is ~1,900 emoji as
    products with SKU, category, brand, price and tags, so filters and keyword search work too;
    three broken files show how failures are reported. The API key is `demo` unless
    BLIPSEARCH_API_KEY is set.
    """
    import os

    from blipsearch.demo import (
        DEMO_RERANKS,
        demo_assets,
        demo_rerank_itc_weight,
        limited_manifest,
        sample_image,
        write_broken_files,
    )
    from blipsearch.indexer.pipeline import Indexer, IndexOptions
    from blipsearch.indexer.progress import Progress

    overrides: dict[str, Any] = {"host": host, "port": port, "data_dir": directory / "data"}
    base = session(ctx).settings()
    assets = demo_assets(base.demo_dir)
    if not os.environ.get("BLIPSEARCH_RETRIEVAL_MODEL"):
        overrides.update(retrieval_model=str(assets.retrieval), caption_model=str(assets.caption))
        if not os.environ.get("BLIPSEARCH_CAPTION_PROMPT"):
            overrides["caption_prompt"] = "a picture of"  # what the demo captioner was trained on
        if not os.environ.get("BLIPSEARCH_CAPTION_MIN_TOKENS"):
            overrides["caption_min_tokens"] = 1  # its captions are emoji names, often two words
        if not os.environ.get("BLIPSEARCH_IMAGE_BATCH_SIZE"):
            overrides["image_batch_size"] = 64  # 64 px images: unlike BLIP-base on a CPU, batching pays
        if not os.environ.get("BLIPSEARCH_CAPTION_BATCH_SIZE"):
            # a whole indexing chunk per generate call: beam search over a small decoder is step
            # overhead at batch 8; the captions are the same (bench/results/demo-serve-*)
            overrides["caption_batch_size"] = base.index_chunk_items
        if not os.environ.get("BLIPSEARCH_RERANK_ITC_WEIGHT"):
            # its ITM head alone ranks below its ITC; both together are what its card measures
            overrides["rerank_itc_weight"] = demo_rerank_itc_weight(assets)
        if not os.environ.get("BLIPSEARCH_RERANK") and not DEMO_RERANKS:
            overrides["rerank"] = False
            console.print("(demo model: ITM re-ranking off by default, see demo/model/README.md)")
    if not os.environ.get("BLIPSEARCH_API_KEY"):
        overrides["api_key"] = "demo"
    settings = session(ctx).settings(**overrides)
    manifest = assets.manifest
    if limit is not None:
        manifest = limited_manifest(manifest, limit, directory / "catalog-first.csv")
    broken = write_broken_files(directory, sample_image(assets))
    # a bar with img/s and ETA on a terminal, a plain line every 10 s elsewhere
    indexer = Indexer(settings, progress=Progress(lines_off_terminal=True))
    try:
        report = indexer.run(manifest, IndexOptions(captions=captions))
        failed = indexer.run(broken, IndexOptions())
    finally:
        indexer.catalog.close()
    console.print(
        f"indexed {report.indexed_total} products and {failed.failed} broken files (failed with a reason) "
        f"into {settings.data_dir}",
        highlight=False,
    )
    if not no_serve:
        run_server(settings)


@demo_assets_app.command("rerank-settings")
def demo_rerank_settings(ctx: typer.Context) -> None:
    """Print how the demo model re-ranks: `true` or `false` (ITM on), then its rerank_itc_weight."""
    from blipsearch.demo import DEMO_RERANKS, demo_assets, demo_rerank_itc_weight

    weight = demo_rerank_itc_weight(demo_assets(session(ctx).settings().demo_dir))
    typer.echo(f"{str(DEMO_RERANKS).lower()} {weight}")


@demo_assets_app.command("broken-files")
def demo_broken_files(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Where the folder broken/ goes (created if missing).")],
) -> None:
    """Write files that must fail with a reason (empty, not an image, truncated) into DIRECTORY/broken."""
    from blipsearch.demo import demo_assets, sample_image, write_broken_files

    assets = demo_assets(session(ctx).settings().demo_dir)
    broken = write_broken_files(directory, sample_image(assets))
    typer.echo(f"demo catalog: {assets.manifest}; broken files: {broken}")
