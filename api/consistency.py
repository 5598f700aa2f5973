"""Read-your-writes across servers: the `Blipsearch-Consistency` header.

A successful write (upload, edit, delete, job) answers with a token naming the primary's position
after it. A read that sends the token back, to this server or any other on the same database, is
served by the hot standby only once the standby has replayed that far, else by the primary
(`blipsearch.storage.read_routing`). Reads without a token may use the standby as it is; a
server always sees its own writes either way.

Pure ASGI, so that the read scope (a context variable) holds in the route and in the threads it
hands catalog work to.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blipsearch.api.errors import error_body
from blipsearch.errors import InvalidInputError
from blipsearch.storage.read_routing import CONSISTENCY_HEADER, parse_token, replica_reads

log = logging.getLogger(__name__)

_HEADER = CONSISTENCY_HEADER.lower().encode()
_READ_METHODS = {"GET", "HEAD"}
_READ_POSTS = ("/v1/search",)
"""POST routes that only read: searches with an uploaded query image or a JSON query."""


def _is_read(method: str, path: str) -> bool:
    return method in _READ_METHODS or (method == "POST" and path.startswith(_READ_POSTS))


class ConsistentReads:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if _is_read(method, path):
            token = next(
                (value.decode("latin-1") for name, value in scope["headers"] if name == _HEADER), None
            )
            if token is not None:
                try:
                    parse_token(token)
                except InvalidInputError as exc:
                    response = JSONResponse(error_body(400, "invalid_input", str(exc)), status_code=400)
                    await response(scope, receive, send)
                    return
            with replica_reads(token):
                await self.app(scope, receive, send)
            return

        async def send_with_token(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                token = await _write_token(scope)
                if token is not None:
                    message = {**message, "headers": [*message.get("headers", []), (_HEADER, token.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_token)


async def _write_token(scope: Scope) -> str | None:
    """The token of this process's writes so far; none where it can't be had (the write stands)."""
    state: Any = getattr(scope["app"].state, "blip", None)
    if state is None:
        return None
    try:
        token: str | None = await anyio.to_thread.run_sync(state.catalog.consistency_token)
    except Exception:
        log.warning("no consistency token for a write's response", exc_info=True)
        return None
    return token
