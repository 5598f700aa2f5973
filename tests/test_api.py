"""The HTTP API against a real uvicorn server on loopback, with a real catalog, FAISS and tiny BLIP."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from blipsearch.search.results import SearchOptions, SearchPage
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings
from blipsearch.storage.faiss_store import GENERATION_CHECK_SECONDS

from imagesets import TEST_MAX_PIXELS, write_valid_images
from test_search_clock import ManualClock

KEY = "s3cret-key"


@pytest.fixture
def shop(tmp_path: Path, tiny_checkpoints) -> tuple[Settings, list[Path]]:
    root = tmp_path / "shop"
    paths = write_valid_images(root, 6, seed=41)
    with open(root / "products.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "sku", "title", "brand", "category", "price", "tags"])
        for index, path in enumerate(paths):
            writer.writerow(
                [
                    path.relative_to(root).as_posix(),
                    f"SH-{index}",
                    f"product {index}",
                    "Quokkaware" if index == 3 else "acme",
                    ["bags", "shoes"][index % 2],
                    index * 10,
                    "red",
                ]
            )
    settings = Settings(
        data_dir=tmp_path / "data",
        retrieval_model=str(tiny_checkpoints.retrieval),
        caption_model=str(tiny_checkpoints.caption),
        vqa_model=str(tiny_checkpoints.vqa),
        device="cpu",
        dtype="float32",
        offline=True,
        max_image_pixels=TEST_MAX_PIXELS,
        max_image_bytes=2_000_000,
        api_key=KEY,
        inference_workers=1,
        inference_queue=4,
    )
    env = {
        "BLIPSEARCH_DATA_DIR": str(settings.data_dir),
        "BLIPSEARCH_RETRIEVAL_MODEL": str(tiny_checkpoints.retrieval),
        "BLIPSEARCH_DEVICE": "cpu",
        "BLIPSEARCH_OFFLINE": "1",
        "BLIPSEARCH_MAX_IMAGE_PIXELS": str(TEST_MAX_PIXELS),
    }
    result = subprocess.run(
        [sys.executable, "-m", "blipsearch", "index", str(root / "products.csv"), "--no-progress"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return settings, paths


@pytest.fixture
def client(shop, api_server) -> httpx.Client:  # type: ignore[no-untyped-def]
    settings, _ = shop
    with httpx.Client(base_url=api_server(settings), timeout=120) as session:
        yield session


def _png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (48, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["status"] == status
    assert body["error"]["message"] and "Traceback" not in response.text
    return body["error"]


def test_health_readiness_metrics_and_docs(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["items"] == 6 and ready["model"].startswith("blip-") and ready["vqa"]
    # decided at start-up: calibrated (its value depends on the machine) within the CPU's most
    assert ready["rerank_depth_source"] == "calibrated" and 1 <= ready["rerank_depth"] <= 8
    assert ready["worker"] == {"index": 0, "pid": os.getpid(), "upkeep": True}, "one process does it all"
    searched = client.get("/v1/search", params={"q": "red bag"}).json()
    assert isinstance(searched["rerank_deadline_hit"], bool)
    assert 1 <= searched["reranked_count"] <= ready["rerank_depth"]
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'blipsearch_requests_total{method="GET",route="/v1/search",status="200"}' in text
    assert 'blipsearch_stage_seconds_count{stage="encode"}' in text
    assert 'blipsearch_index_vectors{index="images"} 6.0' in text
    schema = client.get("/openapi.json").json()
    for path in (
        "/v1/search",
        "/v1/search/image",
        "/v1/items",
        "/v1/items/{item_id}/thumbnail",
        "/v1/facets",
    ):
        assert path in schema["paths"]
    page_fields = schema["components"]["schemas"]["SearchPageOut"]["properties"]
    assert {"reranked_count", "rerank_deadline_hit", "next_offset", "hits"} <= set(page_fields)
    assert client.get("/docs").status_code == 200


def test_text_search_with_filters_pagination_and_links(client: httpx.Client) -> None:
    page = client.get(
        "/v1/search",
        params={"q": "a red bag", "k": 2, "filter": ["category=shoes", "price<=40"]},
    ).json()
    assert [hit["category"] for hit in page["hits"]] == ["shoes", "shoes"]
    assert all(float(hit["price"]) <= 40 for hit in page["hits"])
    assert "source" not in page["hits"][0], "server paths never leave the API"
    thumb = client.get(page["hits"][0]["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert "max-age" in thumb.headers["cache-control"] and thumb.headers["etag"]
    assert (
        client.get(
            page["hits"][0]["thumbnail_url"], headers={"If-None-Match": thumb.headers["etag"]}
        ).status_code
        == 304
    )
    first = client.get(
        "/v1/search", params={"q": "product", "k": 2, "rerank": False, "mode": "vector"}
    ).json()
    second = client.get(
        "/v1/search",
        params={"q": "product", "k": 2, "offset": first["next_offset"], "rerank": False, "mode": "vector"},
    ).json()
    assert not {h["item_id"] for h in first["hits"]} & {h["item_id"] for h in second["hits"]}
    keyword = client.get("/v1/search", params={"q": "quokkaware", "mode": "keyword", "k": 1}).json()
    assert keyword["hits"][0]["sku"] == "SH-3"


def test_image_searches_items_and_ask(client: httpx.Client, shop) -> None:  # type: ignore[no-untyped-def]
    _, paths = shop
    upload = {"file": (paths[1].name, paths[1].read_bytes(), "application/octet-stream")}
    page = client.post("/v1/search/image", files=upload, params={"k": 1}).json()
    item_id = page["hits"][0]["item_id"]
    item = client.get(f"/v1/items/{item_id}").json()
    assert item["sku"] == "SH-1" and item["status"] == "indexed"
    original = client.get(item["image_url"])
    assert original.status_code == 200 and original.content == paths[1].read_bytes()
    assert original.headers["content-type"].startswith("image/")
    similar = client.get(f"/v1/items/{item_id}/similar", params={"k": 3}).json()
    assert item_id not in [hit["item_id"] for hit in similar["hits"]] and len(similar["hits"]) == 3
    texts = client.post("/v1/search/texts", files=upload, params={"k": 2}).json()
    assert {"kind", "text"} <= set(texts["hits"][0])
    assert client.get(f"/v1/items/{item_id}/texts", params={"k": 1}).json()["hits"]
    answer = client.post(f"/v1/items/{item_id}/ask", json={"question": "what colour is it?"})
    assert answer.status_code == 200 and isinstance(answer.json()["answer"], str)
    facets = client.get("/v1/facets").json()
    assert facets["categories"] == ["bags", "shoes"] and facets["brands"] == ["Quokkaware", "acme"]
    assert facets["price"] == {"min": "0.00", "max": "50.00"} and facets["vqa"] and facets["items"] == 6


def test_writes_need_the_key_upload_is_searchable_delete_disappears(client: httpx.Client) -> None:
    files = {"file": ("new.png", _png((10, 200, 10)), "image/png")}
    form = {
        "sku": "NEW-77",
        "title": "green zebra lamp",
        "brand": "Lumenox",
        "price": "12.5",
        "tags": "Green, lamp",
    }
    _error(client.post("/v1/items", files=files, data=form), 401, "unauthorized")
    _error(
        client.post("/v1/items", files=files, data=form, headers={"X-API-Key": "wrong"}), 401, "unauthorized"
    )
    created = client.post("/v1/items", files=files, data=form, headers={"Authorization": f"Bearer {KEY}"})
    assert created.status_code == 201, created.text
    item = created.json()
    assert item["sku"] == "NEW-77" and item["price"] == "12.50" and item["tags"] == ["green", "lamp"]
    found = client.get("/v1/search", params={"q": "lumenox", "mode": "keyword"}).json()
    assert [hit["item_id"] for hit in found["hits"]] == [item["item_id"]]
    by_image = client.post("/v1/search/image", files=files, params={"k": 1}).json()
    assert by_image["hits"][0]["item_id"] == item["item_id"]
    _error(
        client.post("/v1/items", files=files, data={"sku": "NEW-77"}, headers={"X-API-Key": KEY}),
        409,
        "sku_conflict",
    )

    patched = client.patch(
        f"/v1/items/{item['item_id']}", json={"title": "blue lamp", "price": 9}, headers={"X-API-Key": KEY}
    )
    assert (
        patched.status_code == 200
        and patched.json()["title"] == "blue lamp"
        and patched.json()["price"] == "9.00"
    )
    _error(
        client.patch(f"/v1/items/{item['item_id']}", json={"colour": "x"}, headers={"X-API-Key": KEY}),
        422,
        "invalid_request",
    )

    _error(client.delete(f"/v1/items/{item['item_id']}"), 401, "unauthorized")
    assert client.delete(f"/v1/items/{item['item_id']}", headers={"X-API-Key": KEY}).status_code == 204
    gone = client.get("/v1/search", params={"q": "lumenox", "mode": "keyword"}).json()
    assert gone["hits"] == []
    again = client.post("/v1/search/image", files=files, params={"k": 6}).json()
    assert item["item_id"] not in [hit["item_id"] for hit in again["hits"]]
    _error(client.get(f"/v1/items/{item['item_id']}"), 404, "item_not_found")


def test_bad_input_gets_clear_errors(client: httpx.Client) -> None:
    _error(client.get("/v1/search"), 400, "query_required")  # neither a query nor a filter to browse by
    _error(client.get("/v1/search", params={"q": "x" * 1001}), 400, "query_too_long")
    _error(client.get("/v1/search", params={"q": "x", "filter": "colour=red"}), 400, "invalid_input")
    inert = client.get("/v1/search", params={"q": "x", "filter": "category=x'; DROP TABLE items;--"})
    assert inert.status_code == 200 and inert.json()["hits"] == []
    _error(client.get("/v1/search", params={"q": "x", "k": 5000}), 400, "invalid_input")
    _error(client.get("/v1/search", params={"q": "x", "mode": "fuzzy"}), 422, "invalid_request")
    bad = {"file": ("x.png", b"not an image at all", "image/png")}
    _error(client.post("/v1/search/image", files=bad), 400, "invalid_input")
    huge = {"file": ("big.png", b"\x89PNG" + b"\0" * 2_100_000, "image/png")}
    _error(client.post("/v1/search/image", files=huge), 413, "too_large")
    ppm = io.BytesIO()
    Image.new("RGB", (8, 8)).save(ppm, "PPM")
    _error(
        client.post("/v1/search/image", files={"file": ("a.ppm", ppm.getvalue(), "image/x-ppm")}),
        400,
        "invalid_input",
    )
    _error(client.get("/v1/items/999999"), 404, "item_not_found")
    _error(client.get(f"/v1/items/{2**70}"), 422, "invalid_request")
    _error(client.get("/v1/items/0/similar"), 422, "invalid_request")
    _error(client.get("/v1/items/1/thumbnail", params={"size": 13}), 422, "invalid_request")
    _error(client.get("/v1/nowhere"), 404, "not_found")
    _error(client.post("/v1/items/1/ask", json={"question": ""}), 422, "invalid_request")


def test_writes_are_refused_without_a_configured_key(shop, api_server) -> None:  # type: ignore[no-untyped-def]
    settings, _ = shop
    keyless = settings.model_copy(update={"api_key": None, "vqa_model": None})
    with httpx.Client(base_url=api_server(keyless), timeout=120) as session:
        files = {"file": ("new.png", _png(), "image/png")}
        _error(
            session.post("/v1/items", files=files, headers={"X-API-Key": "anything"}), 403, "writes_disabled"
        )
        _error(session.post("/v1/items/1/ask", json={"question": "what?"}), 404, "vqa_unavailable")
        assert session.get("/v1/facets").json()["vqa"] is False


def test_keyed_reads_and_cors(shop, api_server) -> None:  # type: ignore[no-untyped-def]
    settings, _ = shop
    locked = settings.model_copy(update={"api_keyed_reads": True, "cors_origins": ["https://shop.example"]})
    with httpx.Client(base_url=api_server(locked), timeout=120) as session:
        _error(session.get("/v1/search", params={"q": "x"}), 401, "unauthorized")
        assert session.get("/v1/search", params={"q": "x"}, headers={"X-API-Key": KEY}).status_code == 200
        preflight = session.options(
            "/v1/search",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.headers.get("access-control-allow-origin") == "https://shop.example"
        evil = session.options(
            "/v1/search", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in evil.headers


class HeldSearchService(SearchService):
    """The real service, except that a text query waits inside the inference slot until released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()

    def text_to_images(self, text: str, options: SearchOptions | None = None) -> SearchPage:
        self.entered.set()
        assert self.release.wait(120), "the test never released the held query"
        return super().text_to_images(text, options)


def test_overload_is_a_clear_503(shop, api_server) -> None:  # type: ignore[no-untyped-def]
    settings, _ = shop
    tight = settings.model_copy(update={"inference_workers": 1, "inference_queue": 0})
    held = HeldSearchService.open(tight)
    base = api_server(tight, service=held)
    statuses: list[int] = []

    def query() -> None:
        with httpx.Client(base_url=base, timeout=120) as session:
            statuses.append(session.get("/v1/search", params={"q": "a red bag", "rerank_k": 6}).status_code)

    first = threading.Thread(target=query)
    try:
        first.start()
        assert held.entered.wait(120), "the first query never reached the service"
        # The only worker is busy and nobody may wait: the next queries are refused at once.
        with httpx.Client(base_url=base, timeout=120) as session:
            for _ in range(3):
                refused = session.get("/v1/search", params={"q": "another bag"})
                _error(refused, 503, "overloaded")
                assert refused.headers.get("retry-after")
    finally:
        held.release.set()
        first.join(timeout=120)
    assert statuses == [200]
    with httpx.Client(base_url=base, timeout=120) as session:
        assert session.get("/v1/search", params={"q": "a red bag"}).status_code == 200  # free again
    held.close()


def test_a_new_index_generation_and_new_items_are_picked_up_without_restart(
    shop, api_server, tiny_checkpoints
) -> None:  # type: ignore[no-untyped-def]
    settings, _ = shop
    clock = ManualClock()
    service = SearchService.open(settings, clock=clock)
    client = httpx.Client(base_url=api_server(settings, service=service), timeout=120)
    before = client.get("/readyz").json()
    more = write_valid_images(settings.data_dir.parent / "more", 3, seed=77)
    env = {
        **os.environ,
        "BLIPSEARCH_DATA_DIR": str(settings.data_dir),
        "BLIPSEARCH_RETRIEVAL_MODEL": str(tiny_checkpoints.retrieval),
        "BLIPSEARCH_DEVICE": "cpu",
        "BLIPSEARCH_OFFLINE": "1",
        "BLIPSEARCH_MAX_IMAGE_PIXELS": str(TEST_MAX_PIXELS),
    }
    indexed = subprocess.run(
        [sys.executable, "-m", "blipsearch", "index", str(more[0].parent), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert indexed.returncode == 0, indexed.stderr
    rebuilt = subprocess.run(
        [sys.executable, "-m", "blipsearch", "index", "rebuild", "--index-kind", "hnsw"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    unchanged = client.get("/readyz").json()
    assert unchanged["items"] == before["items"] + len(more)  # new items: caught up from the catalog
    assert unchanged["generation"] == before["generation"]  # a new generation: not looked for yet
    clock.advance(GENERATION_CHECK_SECONDS)
    after = client.get("/readyz").json()
    assert after["items"] == before["items"] + len(more)
    assert after["generation"]["images"] > before["generation"].get("images", 0)
    upload = {"file": (more[0].name, more[0].read_bytes(), "application/octet-stream")}
    hit = client.post("/v1/search/image", files=upload, params={"k": 1}).json()["hits"][0]
    assert client.get(f"/v1/items/{hit['item_id']}").json()["width"]
    client.close()
    service.close()
