"""The real app under uvicorn on a free loopback port, in a thread: what API and browser tests call.

The server gets the protocol limits `blipsearch serve` runs with (header sizes, keep-alive), so a
test meets what a client of a deployment meets.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from blipsearch.api.limits import server_protocol_options

START_TIMEOUT_S = 120.0


@contextmanager
def serving(app: Any, *, log_level: str = "warning") -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", **server_protocol_options()
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
