"""Two real servers on one PostgreSQL + pgvector, each with its own data directory: stateless replicas.

Writes go through one replica and reads through the other, and the other way round; at every
step both answer the same. The vectors live in PostgreSQL and the uploaded bytes in a shared
image store, so neither data directory holds an index file or an upload.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from blipsearch.settings import Settings

from imagesets import TEST_MAX_PIXELS, noise_png

KEY = "replica-test-key"
WRITE = {"X-API-Key": KEY}


def _settings(tmp_path: Path, name: str, tiny_checkpoints, url: str) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        data_dir=tmp_path / name,
        database_url=url,
        image_store=str(tmp_path / "shared-images"),
        retrieval_model=str(tiny_checkpoints.retrieval),
        device="cpu",
        dtype="float32",
        offline=True,
        max_image_pixels=TEST_MAX_PIXELS,
        api_key=KEY,
        rerank=False,
    )


def _top_hit(client: httpx.Client, seed: int) -> int | None:
    found = client.post(
        "/v1/search/image", params={"k": 1}, files={"file": ("q.png", noise_png(seed), "image/png")}
    )
    assert found.status_code == 200, found.text
    hits = found.json()["hits"]
    return hits[0]["item_id"] if hits else None


def _same_view(a: httpx.Client, b: httpx.Client, live: dict[int, int], gone: set[int]) -> None:
    """Both replicas list exactly the live items, find each by its own image, and know no deleted one."""
    for client in (a, b):
        listed = client.get("/v1/search", params={"filter": "tag=replica", "k": 50}).json()
        assert sorted(hit["item_id"] for hit in listed["hits"]) == sorted(live)
        for item_id, seed in live.items():
            assert _top_hit(client, seed) == item_id
            assert client.get(f"/v1/items/{item_id}/thumbnail").status_code == 200
        for item_id in gone:
            assert client.get(f"/v1/items/{item_id}").status_code == 404


def test_writes_through_one_replica_are_read_through_the_other(
    tmp_path: Path, tiny_checkpoints, empty_postgres_url: str, api_server: Callable[..., str]
) -> None:
    a_url = api_server(_settings(tmp_path, "replica-a", tiny_checkpoints, empty_postgres_url))
    b_url = api_server(_settings(tmp_path, "replica-b", tiny_checkpoints, empty_postgres_url))
    live: dict[int, int] = {}
    gone: set[int] = set()
    with httpx.Client(base_url=a_url, timeout=60) as a, httpx.Client(base_url=b_url, timeout=60) as b:
        for client in (a, b):
            ready = client.get("/readyz").json()
            assert ready["vector_store"] == "pgvector", ready
        for step, (writer, seed) in enumerate([(a, 1), (b, 2), (a, 3), (b, 4), (a, 5)]):
            created = writer.post(
                "/v1/items",
                files={"file": (f"{seed}.png", noise_png(seed), "image/png")},
                data={"title": f"replica item {seed}", "tags": "replica"},
                headers=WRITE,
            )
            assert created.status_code == 201, created.text
            live[created.json()["item_id"]] = seed
            if step in (2, 4):  # delete through the replica that did not write it
                victim = min(live)
                deleter = b if writer is a else a
                assert deleter.delete(f"/v1/items/{victim}", headers=WRITE).status_code == 204
                live.pop(victim)
                gone.add(victim)
            _same_view(a, b, live, gone)
        edited = a.patch(f"/v1/items/{max(live)}", json={"title": "renamed on a"}, headers=WRITE)
        assert edited.status_code == 200, edited.text
        assert b.get(f"/v1/items/{max(live)}").json()["title"] == "renamed on a"
    for name in ("replica-a", "replica-b"):
        local = tmp_path / name
        assert not (local / "indexes").exists(), "pgvector replicas keep no index files"
        assert not any((local / "uploads").rglob("*.png")), "uploads go to the shared store"
    assert len(list((tmp_path / "shared-images").rglob("*.png"))) == len(live)
