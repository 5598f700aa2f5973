"""What every route shares: the loaded engine, the API-key check, and the inference gate."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Path, Request

from blipsearch.api.admission import InferenceGate
from blipsearch.api.errors import ApiError
from blipsearch.models.vqa import VisualQA
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog

T = TypeVar("T")
ItemId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A catalog item id.")]
"""Bounded, so an absurd id is a 422 rather than a database overflow."""


@dataclass
class AppState:
    settings: Settings
    service: SearchService
    gate: InferenceGate
    vqa: VisualQA | None = None
    jobs: Any = None
    started: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def catalog(self) -> Catalog:
        return self.service.catalog


def app_state(request: Request) -> AppState:
    return request.app.state.blip


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _check_key(request: Request) -> None:
    configured = app_state(request).settings.api_key
    if configured is None:
        raise ApiError(
            403, "writes_disabled", "This server has no API key configured, so it accepts no writes."
        )
    presented = _presented_key(request)
    if presented is None:
        raise ApiError(
            401, "unauthorized", "Send the API key as an X-API-Key header or Authorization: Bearer."
        )
    if not hmac.compare_digest(presented.encode(), configured.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "The API key is not valid.")


def require_write_key(request: Request) -> None:
    """Every write endpoint depends on this; with no key configured, writes are refused."""
    _check_key(request)


def require_read_access(request: Request) -> None:
    """Reads are open unless `api_keyed_reads` is set."""
    if app_state(request).settings.api_keyed_reads:
        _check_key(request)
