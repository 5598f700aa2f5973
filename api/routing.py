"""The app's API routes as one flat list, whichever way FastAPI nests included routers.

Newer FastAPI keeps an included router as one entry of `app.routes` that wraps the original;
older versions copy every route up. Middleware that must know a route before routing (its body
limit, the methods a path allows) reads this list instead of `app.routes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.routing import APIRoute


def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
            continue
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner is None:
            inner = getattr(route, "routes", None)
        if inner:
            yield from api_routes(inner)
