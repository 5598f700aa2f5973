"""What the OpenAPI document promises about errors, derived from each route's own shape.

A route declares the errors only it can give (`responses=errors(409)`); the ones that follow from
its shape are added here for every route alike, so a new route cannot forget them: any route can
fail (500), every /v1 route can find the catalog or the model slots busy (503), a route with
input can refuse it (400, 422), a route with a path id can miss (404), a route with a body can
be sent too much (413), and a keyed route can be refused (401, 403) or conflict (409).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from blipsearch.api.deps import require_read_access, require_write_key
from blipsearch.api.errors import errors
from blipsearch.api.routing import api_routes


def declare_error_responses(app: FastAPI, *, keyed_reads: bool) -> None:
    for route in api_routes(app.routes):
        declared = route.responses
        for status, response in errors(*_statuses(route, keyed_reads=keyed_reads)).items():
            declared.setdefault(status, response)


def _statuses(route: APIRoute, *, keyed_reads: bool) -> list[int]:
    dependant = route.dependant
    statuses = [500]
    if route.path.startswith("/v1/"):
        statuses.append(503)
    has_input = bool(_all(dependant, "query_params") or _all(dependant, "path_params") or route.body_field)
    if has_input:
        statuses += [400, 422]
    if _all(dependant, "path_params"):
        statuses.append(404)
    if route.body_field is not None:
        statuses.append(413)
    calls = _calls(dependant)
    if require_write_key in calls:
        statuses += [401, 403, 409]
    elif require_read_access in calls and keyed_reads:
        statuses += [401, 403]
    return statuses


def _all(dependant: Dependant, kind: str) -> list[object]:
    found = list(getattr(dependant, kind))
    for sub in dependant.dependencies:
        found += _all(sub, kind)
    return found


def _calls(dependant: Dependant) -> set[object]:
    found: set[object] = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found
