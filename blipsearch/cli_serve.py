"""`blipsearch serve` (the HTTP API and web UI) and `blipsearch demo` (everything, in one command)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(stderr=True)
_settings_factory: list[Callable[..., Any]] = []


def bind_settings(factory: Callable[..., Any]) -> None:
    _settings_factory[:] = [factory]


HostOpt = Annotated[
    str | None, typer.Option("--host", help="Address to listen on (default: setting, 127.0.0.1).")
]
PortOpt = Annotated[int | None, typer.Option("--port", help="Port to listen on (default: setting, 8080).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (catalog, indexes).")]


def _run(settings: Any) -> None:
    import uvicorn

    from blipsearch.api.app import create_app
    from blipsearch.api.limits import server_protocol_options
    from blipsearch.logs import uvicorn_log_config

    address = f"http://{settings.host}:{settings.port}/"
    if settings.log_format == "json":  # a log pipeline reads stderr: nothing there but JSON lines
        logging.getLogger("blipsearch.serve").info(
            "serving", extra={"url": address, "data_dir": str(settings.data_dir)}
        )
    else:
        console.print(f"blipsearch serving {settings.data_dir} on {address}", highlight=False)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(settings.log_level, settings.log_format),
        log_level=settings.log_level.lower(),
        **server_protocol_options(),
    )


def serve(host: HostOpt = None, port: PortOpt = None, data_dir: DataDirOpt = None) -> None:
    """Serve the HTTP API (/v1, docs at /docs) and the web UI (/) for a data directory."""
    _run(_settings_factory[0](host=host, port=port, data_dir=data_dir))


def demo(
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
        write_broken_files,
    )
    from blipsearch.indexer.pipeline import Indexer, IndexOptions
    from blipsearch.indexer.progress import Progress

    overrides: dict[str, Any] = {"host": host, "port": port, "data_dir": directory / "data"}
    base = _settings_factory[0]()
    assets = demo_assets(base.demo_dir)
    if not os.environ.get("BLIPSEARCH_RETRIEVAL_MODEL"):
        overrides.update(retrieval_model=str(assets.retrieval), caption_model=str(assets.caption))
        if not os.environ.get("BLIPSEARCH_CAPTION_PROMPT"):
            overrides["caption_prompt"] = "a picture of"  # what the demo captioner was trained on
        if not os.environ.get("BLIPSEARCH_CAPTION_MIN_TOKENS"):
            overrides["caption_min_tokens"] = 1  # its captions are emoji names, often two words
        if not os.environ.get("BLIPSEARCH_IMAGE_BATCH_SIZE"):
            overrides["image_batch_size"] = 64  # 64 px images: unlike BLIP-base on a CPU, batching pays
        if not os.environ.get("BLIPSEARCH_RERANK_ITC_WEIGHT"):
            # its ITM head alone ranks below its ITC; both together are what its card measures
            overrides["rerank_itc_weight"] = demo_rerank_itc_weight(assets)
        if not os.environ.get("BLIPSEARCH_RERANK") and not DEMO_RERANKS:
            overrides["rerank"] = False
            console.print("(demo model: ITM re-ranking off by default, see demo/model/README.md)")
    if not os.environ.get("BLIPSEARCH_API_KEY"):
        overrides["api_key"] = "demo"
    settings = _settings_factory[0](**overrides)
    manifest = assets.manifest
    if limit is not None:
        manifest = limited_manifest(manifest, limit, directory / "catalog-first.csv")
    sample = next((assets.manifest.parent / "images").rglob("*.png"))
    broken = write_broken_files(directory, sample)
    indexer = Indexer(settings, progress=Progress(enabled=False))
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
        _run(settings)
