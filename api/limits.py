"""Request size limits enforced before the body is read, at the ASGI level.

A route's form parser spools an upload to a temporary file as it arrives, so a limit checked by
the route comes after the bytes are on disk. This middleware sees the request first: a declared
`Content-Length` over the limit is answered 413 without reading a byte, and a body that arrives
without one (chunked) is cut off the moment it passes the limit, so at most the limit is ever
buffered. Upload routes (those taking multipart files) may carry an image of `max_image_bytes`
plus the form around it; every other body is small JSON.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.params import File
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blipsearch.api.errors import error_body
from blipsearch.api.routing import api_routes

UPLOAD_FORM_OVERHEAD = 256 * 1024
"""Multipart framing plus the largest text fields an upload form accepts (about 30k characters)."""
MAX_JSON_BODY = 1024 * 1024
"""Every non-upload body: the largest item edit (fields, tags, attributes) is far below this."""
MAX_REQUEST_HEAD = 1024 * 1024
"""Request line and headers the HTTP parser buffers, so that an over-long query still reaches the
app and is answered in the error shape; beyond this the protocol layer answers on its own."""


def server_protocol_options() -> dict[str, Any]:
    """uvicorn options every way of serving the app uses (the CLI and the tests).

    h11 because its buffer limit is configurable (httptools refuses a request head over 80 KiB
    with a plain-text 400 the app never sees).
    """
    return {"http": "h11", "h11_max_incomplete_event_size": MAX_REQUEST_HEAD}


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes its limit.

    An HTTPException, because FastAPI turns any other exception met while parsing a body into a
    400; this one reaches the error handlers as what it is, and the connection then closes.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"The request body is over the {limit}-byte limit.", headers={"Connection": "close"}
        )


def _has_file_parameter(dependant: Dependant) -> bool:
    if any(isinstance(param.field_info, File) for param in dependant.body_params):
        return True
    return any(_has_file_parameter(sub) for sub in dependant.dependencies)


class BodyLimit:
    """Pure ASGI (no buffering wrapper): refuses over-limit bodies with 413 in the error shape."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI, max_upload_bytes: int) -> None:
        self.app = app
        self.fastapi = fastapi
        self.upload_limit = max_upload_bytes + UPLOAD_FORM_OVERHEAD
        self._upload_routes: list[APIRoute] | None = None

    def limit_for(self, scope: Scope) -> int:
        if self._upload_routes is None:  # routes are all registered by the first request
            self._upload_routes = [
                route for route in api_routes(self.fastapi.routes) if _has_file_parameter(route.dependant)
            ]
        for route in self._upload_routes:
            if route.matches(scope)[0] is Match.FULL:
                return self.upload_limit
        return MAX_JSON_BODY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit)
            return
        received = 0
        exceeded = started = replaced = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app makes of the cut-off body (a parser may call it malformed), the
            # answer is the 413, and the connection closes so the rest is never read.
            nonlocal started, replaced
            if replaced:
                return
            if exceeded and not started:
                started = replaced = True
                await _refuse(send, limit)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
            await _refuse(send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: int) -> None:
    """413, and the connection closes: the unread rest of the body is never taken in."""
    message = f"The request body is over the {limit}-byte limit."
    body = json.dumps(error_body(413, "too_large", message), separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
