"""One JSON error shape for every failure: `{"error": {"code", "message", "status"}}`.

Clients branch on `code` (stable), show `message` (a sentence for people) and never see a stack
trace. Only input errors repeat their own message, because it describes what the caller sent;
a failure of the server itself (a model that did not load, a corrupt index, a configuration
problem, a bug) answers with a generic sentence and a request id, and the server log, keyed by
that id, has the details, which can name server paths.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blipsearch.api.routing import api_routes
from blipsearch.errors import (
    BlipsearchError,
    CatalogError,
    ConfigError,
    ConflictError,
    FeatureUnavailableError,
    IndexCorruptError,
    IndexLockedError,
    InvalidInputError,
    ModelLoadError,
    ModelMismatchError,
    TooLargeError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status and stable code, raised anywhere in a request."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, for programs to branch on.")
    message: str = Field(description="A sentence for people; never holds server paths.")
    status: int = Field(description="The HTTP status, repeated.")


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "The input is not valid",
    401: "The API key is missing or wrong",
    403: "Writes are disabled on this server (no API key configured)",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflicts with the catalog's state",
    413: "The body or image is over a size limit",
    415: "The body's media type is not accepted",
    422: "The request does not match the schema",
    429: "Too many requests",
    500: "Internal error (the body carries a request id)",
    503: "Temporarily unavailable (see Retry-After)",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` declarations for a route: each status with the one error schema.

    422 and 500 are added to every route by `declare_common_errors`; list what else can happen.
    """
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]} for status in statuses}


def error_body(status: int, code: str, message: str) -> dict[str, dict[str, object]]:
    return {"error": {"code": code, "message": message, "status": status}}


def _response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


def request_id() -> str:
    return uuid.uuid4().hex[:12]


def internal_error_body(identifier: str) -> dict[str, dict[str, object]]:
    return error_body(500, "internal", f"Internal error (request {identifier}); the server log has details.")


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}

_SERVER_FAILURES: tuple[tuple[type[BlipsearchError], int, str, str], ...] = (
    (CatalogError, 503, "catalog_unavailable", "The catalog database is unavailable; try again shortly."),
    (IndexLockedError, 503, "index_locked", "The index is locked by another process; try again shortly."),
    (IndexCorruptError, 503, "index_unavailable", "The vector index is being repaired; try again shortly."),
    (ModelLoadError, 503, "model_unavailable", "A model this request needs could not be loaded."),
    (ModelMismatchError, 503, "model_mismatch", "The index was built with another model than the server's."),
    (FeatureUnavailableError, 503, "feature_unavailable", "This server is not configured for that request."),
    (ConfigError, 500, "misconfigured", "The server's configuration does not allow this request."),
)
"""Failures of the server, not of the request: status, code and the generic sentence shown."""


def _server_failure(exc: BlipsearchError) -> tuple[int, str, str]:
    for kind, status, code, message in _SERVER_FAILURES:
        if isinstance(exc, kind):
            return status, code, message
    return 500, "internal", "Internal error."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return _response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return _response(409, "sku_conflict", str(exc))

    @app.exception_handler(TooLargeError)
    async def _too_large(request: Request, exc: TooLargeError) -> JSONResponse:
        return _response(413, "too_large", str(exc))

    @app.exception_handler(InvalidInputError)
    async def _invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
        return _response(400, "invalid_input", str(exc))

    @app.exception_handler(BlipsearchError)
    async def _server(request: Request, exc: BlipsearchError) -> JSONResponse:
        status, code, message = _server_failure(exc)
        identifier = request_id()
        log.error(
            "server failure",
            extra={"request_id": identifier, "path": request.url.path, "kind": type(exc).__name__},
            exc_info=exc,
        )
        headers = {"Retry-After": "5"} if status == 503 else None
        return _response(status, code, f"{message} (request {identifier})", headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query"))
            problems.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
        return _response(422, "invalid_request", "; ".join(problems) or "The request is not valid.")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """Last resort, for errors outside `UnexpectedErrors` (in the outer middleware)."""
        identifier = request_id()
        log.error("unhandled error", extra={"request_id": identifier, "path": request.url.path}, exc_info=exc)
        return JSONResponse(internal_error_body(identifier), status_code=500, headers={"Connection": "close"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else "The request failed."
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and message == "Not Found":
            message = f"No such endpoint: {request.method} {request.url.path}."
        if exc.status_code == 405:
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed here; use {' or '.join(allowed)}."
        return _response(exc.status_code, code, message, headers or None)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in api_routes(request.app.routes):
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods.update(route.methods)
    return sorted(methods)


class UnexpectedErrors:
    """Pure ASGI: a bug answers 500 in the error shape, logged under a request id, and the
    connection closes cleanly (`Connection: close`) instead of being dropped under the client.

    Starlette's own last-resort handler re-raises after answering, and the server then cuts the
    keep-alive connection without saying so: the client's next pooled request fails. Here the
    exception stops, so the server finishes the response it announced.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:
            identifier = request_id()
            log.exception("unhandled error", extra={"request_id": identifier, "path": scope.get("path")})
            if started:
                raise  # half a response is out: only the server can end the connection now
            response = JSONResponse(
                internal_error_body(identifier), status_code=500, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
