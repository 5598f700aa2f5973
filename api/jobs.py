"""Ingest job endpoints: index a folder or manifest on the server, follow it, cancel it.

A job is a row in SQL (`blipsearch.storage.jobs`), run by the app's `JobRunner` in the
background, so a POST answers at once (202) and the job, its progress and its outcome survive a
restart of the server.

A job reads files on the server, so it may only name a folder or manifest inside the configured
`ingest_roots` (after resolving symlinks); with none configured, server-side ingest is off. The
checks run before any filesystem call on the caller's path, and refusals never repeat it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from pydantic import BaseModel

from blipsearch.api.deps import AppState, app_state, require_read_access, require_write_key
from blipsearch.api.errors import ApiError
from blipsearch.errors import InvalidInputError
from blipsearch.paths import IngestRoots, canonical_path, check_path_text
from blipsearch.storage.jobs import JobStore

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
State = Annotated[AppState, Depends(app_state)]
Read = [Depends(require_read_access)]
Write = [Depends(require_write_key)]
JobId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
"""Bounded, so an absurd id is a 422 rather than a database overflow."""

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")


class JobRequest(BaseModel):
    path: str
    """A folder (indexed recursively) or a .csv/.jsonl manifest, as an absolute path on the server,
    inside one of its `ingest_roots`."""
    prune: bool = False
    captions: bool = False
    index_kind: Literal["auto", "flat", "hnsw", "ivf", "ivfpq"] | None = None
    retry_failed: bool = False


def _store(state: AppState) -> JobStore:
    runner = state.jobs
    return runner.store if runner is not None else JobStore(state.catalog)


def _source_path(given: str, roots: IngestRoots) -> str:
    """The path as the indexer will key its items: canonical (symlinks resolved), inside a root.

    Order matters: the text is checked before the filesystem sees it (a NUL byte or a 100k path is
    a 400, not an OS error), and the roots before existence, so nobody can probe what exists
    outside them.
    """
    try:
        check_path_text(given)
    except InvalidInputError as exc:
        raise ApiError(400, "invalid_path", str(exc)) from None
    if not given.strip() or not Path(given).is_absolute():
        raise ApiError(400, "invalid_path", "Give an absolute path on the server.")
    if not roots:
        raise ApiError(
            403,
            "ingest_disabled",
            "Server-side ingest is off: the server has no ingest_roots configured.",
        )
    path = canonical_path(given)
    if not roots.contains(path):
        raise ApiError(403, "path_not_allowed", "The path is outside the server's ingest roots.")
    if path.is_dir():
        return str(path)
    if path.is_file():
        if path.suffix.lower() not in MANIFEST_SUFFIXES:
            message = "The path is a file but not a .csv or .jsonl manifest; give a folder or one."
            raise ApiError(400, "invalid_path", message)
        return str(path)
    raise ApiError(400, "invalid_path", "The path does not exist on the server.")


@router.post("", status_code=202, dependencies=Write, summary="Index a folder or manifest in the background")
def create_job(body: JobRequest, state: State) -> dict[str, Any]:
    path = _source_path(body.path, IngestRoots(state.settings.ingest_roots))
    store = _store(state)
    if store.unfinished_count() >= state.settings.max_queued_jobs:
        raise ApiError(
            503,
            "queue_full",
            f"{state.settings.max_queued_jobs} ingest jobs are already waiting; retry later.",
        )
    job = store.create(path, body.model_dump(exclude={"path"}))
    if state.jobs is not None:
        state.jobs.wake()
    return job.as_dict()


@router.get("", dependencies=Read, summary="Ingest jobs, newest first")
def list_jobs(state: State, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    return {"jobs": [job.as_dict() for job in _store(state).list(limit)]}


@router.get("/{job_id}", dependencies=Read, summary="One job with its progress and outcome")
def get_job(job_id: JobId, state: State) -> dict[str, Any]:
    job = _store(state).get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"There is no ingest job {job_id}.")
    return job.as_dict()


@router.post("/{job_id}/cancel", dependencies=Write, summary="Cancel a queued or running job")
def cancel_job(job_id: JobId, state: State) -> dict[str, Any]:
    """A queued job ends cancelled at once; a running one stops after the chunk it is writing."""
    store = _store(state)
    job = store.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"There is no ingest job {job_id}.")
    if not job.finished:
        job = store.request_cancel(job_id) or job
        if not job.finished or job.status == "cancelled":
            return job.as_dict()
    # Finished before, or between the read and the request: either way there is nothing to stop.
    raise ApiError(409, "job_finished", f"Ingest job {job_id} is already {job.status}; nothing to cancel.")
