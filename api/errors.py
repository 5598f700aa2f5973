"""One JSON error shape for every failure: `{"error": {"code", "message", "status"}}`.

Clients branch on `code` (stable), show `message` (a sentence for people) and never see a stack
trace: unexpected exceptions are logged server-side with a request id that the body repeats.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from blipsearch.errors import (
    BlipsearchError,
    CatalogError,
    ConflictError,
    IndexLockedError,
    InvalidInputError,
    ModelMismatchError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status and stable code, raised anywhere in a request."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(status: int, code: str, message: str) -> dict[str, dict[str, object]]:
    return {"error": {"code": code, "message": message, "status": status}}


def _response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return _response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return _response(409, "sku_conflict", str(exc))

    @app.exception_handler(InvalidInputError)
    async def _invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
        return _response(400, "invalid_input", str(exc))

    @app.exception_handler(ModelMismatchError)
    async def _mismatch(request: Request, exc: ModelMismatchError) -> JSONResponse:
        return _response(409, "model_mismatch", str(exc))

    @app.exception_handler(IndexLockedError)
    async def _locked(request: Request, exc: IndexLockedError) -> JSONResponse:
        return _response(409, "index_locked", str(exc))

    @app.exception_handler(CatalogError)
    async def _catalog(request: Request, exc: CatalogError) -> JSONResponse:
        log.error("catalog error", extra={"path": request.url.path, "reason": str(exc)})
        return _response(
            503, "catalog_unavailable", "The catalog database is unavailable; try again shortly."
        )

    @app.exception_handler(BlipsearchError)
    async def _blipsearch(request: Request, exc: BlipsearchError) -> JSONResponse:
        return _response(400, "invalid_input", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query"))
            problems.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
        return _response(422, "invalid_request", "; ".join(problems) or "The request is not valid.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else "The request failed."
        if exc.status_code == 404 and message == "Not Found":
            message = f"No such endpoint: {request.method} {request.url.path}."
        return _response(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error", extra={"request_id": request_id, "path": request.url.path})
        return _response(
            500, "internal", f"Internal error (request {request_id}); the server log has details."
        )
