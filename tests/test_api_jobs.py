"""Ingest jobs over HTTP: a real uvicorn server, its job runner, a SQLite catalog and tiny BLIP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from blipsearch.settings import Settings
from blipsearch.storage.lock import WriterLock

from imagesets import TEST_MAX_PIXELS, write_valid_images

KEY = "jobs-key"
AUTH = {"X-API-Key": KEY}


@pytest.fixture
def settings(tmp_path: Path, tiny_checkpoints) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        retrieval_model=str(tiny_checkpoints.retrieval),
        caption_model=str(tiny_checkpoints.caption),
        device="cpu",
        dtype="float32",
        offline=True,
        max_image_pixels=TEST_MAX_PIXELS,
        index_chunk_items=2,
        api_key=KEY,
        ingest_roots=[tmp_path],
    )


@pytest.fixture
def client(settings: Settings, api_server) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=api_server(settings), timeout=60) as session:
        yield session


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["code"] == code and error["message"]
    return error


def _follow(
    client: httpx.Client, job_id: int, until: tuple[str, ...], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {until}")


def test_a_job_over_http(tmp_path: Path, client: httpx.Client) -> None:
    folder = tmp_path / "photos"
    write_valid_images(folder, 5, seed=31)
    body = {"path": str(folder)}

    _error(client.post("/v1/jobs", json=body), 401, "unauthorized")
    _error(client.post("/v1/jobs", json=body, headers={"X-API-Key": "wrong"}), 401, "unauthorized")
    assert client.get("/v1/jobs").json() == {"jobs": []}

    created = client.post("/v1/jobs", json={**body, "index_kind": "flat"}, headers=AUTH)
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["status"] in ("queued", "running", "succeeded") and job["path"] == str(folder)
    assert job["options"]["index_kind"] == "flat" and job["options"]["prune"] is False

    done = _follow(client, job["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", done["error"]
    assert done["counts"]["embedded"] == 5 and (done["done"], done["total"]) == (5, 5)
    assert done["finished_at"] and done["error"] is None

    second = client.post("/v1/jobs", json=body, headers=AUTH).json()
    again = _follow(client, second["id"], ("succeeded",))
    assert again["counts"]["unchanged"] == 5 and again["counts"]["embedded"] == 0
    listed = client.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert [j["id"] for j in listed] == [second["id"], job["id"]]
    assert [j["id"] for j in client.get("/v1/jobs", params={"limit": 1}).json()["jobs"]] == [second["id"]]
    _error(client.get("/v1/jobs", params={"limit": 101}), 422, "invalid_request")

    _error(client.post(f"/v1/jobs/{job['id']}/cancel"), 401, "unauthorized")
    error = _error(client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH), 409, "job_finished")
    assert "succeeded" in error["message"]
    _error(client.get("/v1/jobs/424242"), 404, "job_not_found")
    _error(client.post("/v1/jobs/424242/cancel", headers=AUTH), 404, "job_not_found")
    _error(client.get(f"/v1/jobs/{2**70}"), 422, "invalid_request")


def test_bad_requests(tmp_path: Path, client: httpx.Client) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a manifest")
    for path in (str(tmp_path / "nowhere"), "relative/photos", "", str(notes)):
        error = _error(client.post("/v1/jobs", json={"path": path}, headers=AUTH), 400, "invalid_path")
        assert str(tmp_path) not in error["message"]  # refusals never repeat server paths
    _error(
        client.post("/v1/jobs", json={"path": str(tmp_path), "index_kind": "annoy"}, headers=AUTH),
        422,
        "invalid_request",
    )
    _error(client.post("/v1/jobs", json={}, headers=AUTH), 422, "invalid_request")
    assert client.get("/v1/jobs").json() == {"jobs": []}


def test_cancelling_a_queued_job(tmp_path: Path, settings: Settings, client: httpx.Client) -> None:
    """While a CLI run holds the data directory the job waits in the queue; cancelling ends it at once."""
    folder = tmp_path / "photos"
    write_valid_images(folder, 2, seed=32)
    with WriterLock(settings.data_dir, "a CLI index run"):
        job = client.post("/v1/jobs", json={"path": str(folder)}, headers=AUTH).json()
        deadline = time.monotonic() + 60
        while not client.get(f"/v1/jobs/{job['id']}").json()["error"] and time.monotonic() < deadline:
            time.sleep(0.05)
        waiting = client.get(f"/v1/jobs/{job['id']}").json()
        assert waiting["error"].startswith("Waiting:")
        cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH)
        assert cancelled.status_code == 200, cancelled.text
        # Released between a retry's claim and its lock attempt, it may be running for a moment.
        final = _follow(client, job["id"], ("cancelled",))
        assert final["cancel_requested"] is True
    _error(client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH), 409, "job_finished")
