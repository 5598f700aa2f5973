"""`blipsearch serve` (the HTTP API and web UI) and `blipsearch demo` (everything, in one command)."""

from __future__ import annotations

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

    console.print(
        f"blipsearch serving {settings.data_dir} on http://{settings.host}:{settings.port}/", highlight=False
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


def serve(host: HostOpt = None, port: PortOpt = None, data_dir: DataDirOpt = None) -> None:
    """Serve the HTTP API (/v1, docs at /docs) and the web UI (/) for a data directory."""
    _run(_settings_factory[0](host=host, port=port, data_dir=data_dir))


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo's models, photos and data go.")
    ] = Path(".blipsearch-demo"),
    host: HostOpt = None,
    port: PortOpt = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Build and index only, then exit.")] = False,
) -> None:
    """Build a sample collection offline, index it, and serve it with the web UI.

    Uses the configured models when set (BLIPSEARCH_RETRIEVAL_MODEL ...), otherwise writes tiny
    random BLIP checkpoints: the plumbing is real, the rankings are noise. The demo's API key is
    `demo` unless BLIPSEARCH_API_KEY is set.
    """
    import os

    from blipsearch.demo import write_demo_collection
    from blipsearch.indexer.pipeline import Indexer, IndexOptions
    from blipsearch.indexer.progress import Progress

    overrides: dict[str, Any] = {"host": host, "port": port, "data_dir": directory / "data"}
    if not os.environ.get("BLIPSEARCH_RETRIEVAL_MODEL"):
        from blipsearch.models.tiny import make_tiny

        models = directory / "models"
        if not (models / "retrieval").is_dir():
            make_tiny(models, seed=0)
        overrides.update(
            retrieval_model=str(models / "retrieval"),
            caption_model=str(models / "caption"),
            vqa_model=str(models / "vqa"),
        )
        console.print("(tiny random checkpoints: the plumbing is real, the rankings are noise)")
    if not os.environ.get("BLIPSEARCH_API_KEY"):
        overrides["api_key"] = "demo"
    settings = _settings_factory[0](**overrides)
    manifest = write_demo_collection(directory / "photos")
    indexer = Indexer(settings, progress=Progress(enabled=False))
    try:
        report = indexer.run(manifest, IndexOptions(captions=True))
    finally:
        indexer.catalog.close()
    console.print(f"indexed {report.indexed_total} items ({report.failed} failed) into {settings.data_dir}")
    if not no_serve:
        _run(settings)
