"""`blipsearch serve`: the HTTP API and the web UI for a data directory."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

from blipsearch.cli.context import session
from blipsearch.cli.options import DataDirOpt
from blipsearch.settings import Settings

console = Console(stderr=True)

HostOpt = Annotated[
    str | None, typer.Option("--host", help="Address to listen on (default: setting, 127.0.0.1).")
]
PortOpt = Annotated[int | None, typer.Option("--port", help="Port to listen on (default: setting, 8080).")]


def run_server(settings: Settings) -> None:
    """Serve until interrupted; `blipsearch demo` ends here too once its catalog is indexed."""
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


def serve(
    ctx: typer.Context, host: HostOpt = None, port: PortOpt = None, data_dir: DataDirOpt = None
) -> None:
    """Serve the HTTP API (/v1, docs at /docs) and the web UI (/) for a data directory."""
    run_server(session(ctx).settings(host=host, port=port, data_dir=data_dir))
