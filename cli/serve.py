"""`blipsearch serve`: the HTTP API and the web UI for a data directory."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

from blipsearch.cli.context import session
from blipsearch.cli.options import DataDirOpt
from blipsearch.process_memory import limit_malloc_arenas
from blipsearch.settings import Settings

console = Console(stderr=True)

HostOpt = Annotated[
    str | None, typer.Option("--host", help="Address to listen on (default: setting, 127.0.0.1).")
]
PortOpt = Annotated[int | None, typer.Option("--port", help="Port to listen on (default: setting, 8080).")]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        max=64,
        help="Serving processes, each with its own model (default: setting, 1); the first one also "
        "commits checkpoints, cleans the image store and runs ingest jobs.",
    ),
]


def run_server(settings: Settings) -> None:
    """Serve until interrupted; `blipsearch demo` ends here too once its catalog is indexed.

    With `workers` above 1 a parent process supervises that many (cli/serve_workers.py).
    """
    if settings.workers > 1:
        _run_workers(settings)
        return
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
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    limit_malloc_arenas()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(settings.log_level, settings.log_format),
        log_level=settings.log_level.lower(),
        **server_protocol_options(),
    )


def _run_workers(settings: Settings) -> None:
    from blipsearch.cli.serve_workers import serve_workers

    address = f"http://{settings.host}:{settings.port}/"
    if settings.log_format == "json":
        logging.getLogger("blipsearch.serve").info(
            "serving",
            extra={"url": address, "data_dir": str(settings.data_dir), "workers": settings.workers},
        )
    else:
        console.print(
            f"blipsearch serving {settings.data_dir} on {address} with {settings.workers} workers",
            highlight=False,
        )
    status = serve_workers(settings, settings.workers)
    if status:
        raise typer.Exit(status)


def serve(
    ctx: typer.Context,
    host: HostOpt = None,
    port: PortOpt = None,
    workers: WorkersOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve the HTTP API (/v1, docs at /docs) and the web UI (/) for a data directory."""
    run_server(session(ctx).settings(host=host, port=port, workers=workers, data_dir=data_dir))
