"""Admission over real HTTP: depth is shed before requests are, deadlines and disconnects free places.

The service's text batcher is paused to hold requests in progress for as long as a test needs, so
every assertion is about what the server did, never about how fast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from test_api import _error, shop  # noqa: F401  (the fixture)

from blipsearch.api.admission import rerank_scale
from blipsearch.api.app import create_app
from blipsearch.api.deps import AppState
from blipsearch.search.batching import MicroBatcher
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings

from live_server import serving

WAIT_S = 120.0


@pytest.mark.parametrize(
    ("load", "shed_from", "scale"),
    [(0.25, 0.5, 1.0), (0.5, 0.5, 1.0), (0.75, 0.5, 0.5), (1.0, 0.5, 0.0), (0.9, 1.0, 1.0), (0.5, 0.0, 0.5)],
)
def test_depth_shrinks_linearly_from_the_threshold_to_none_at_capacity(
    load: float, shed_from: float, scale: float
) -> None:
    assert rerank_scale(load, shed_from) == pytest.approx(scale)


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


@contextmanager
def _server(settings: Settings) -> Iterator[tuple[str, AppState, MicroBatcher[Any, Any]]]:
    service = SearchService.open(settings)
    app = create_app(settings, service=service)
    try:
        with serving(app) as base:
            state: AppState = app.state.blip
            texts = service.work.texts
            assert isinstance(texts, MicroBatcher)
            yield base, state, texts
    finally:
        service.close()


class Query(threading.Thread):
    def __init__(self, base: str, params: dict[str, Any], timeout: float = WAIT_S) -> None:
        super().__init__(daemon=True)
        self.base, self.params, self.timeout = base, params, timeout
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base, timeout=self.timeout) as client:
                self.response = client.get("/v1/search", params=self.params)
        except BaseException as exc:
            self.error = exc


def test_overload_sheds_rerank_depth_first_then_answers_503(shop) -> None:  # noqa: F811
    settings, _ = shop
    settings = settings.model_copy(
        update={"inference_workers": 4, "inference_queue": 0, "rerank_shed_from": 0.5, "rerank_k": 4}
    )
    with _server(settings) as (base, state, texts):
        queries = [Query(base, {"q": f"bag {n}", "mode": "vector"}) for n in range(4)]
        with texts.paused():
            for query in queries:
                query.start()
            _wait_until(lambda: texts.queued() == 4)
            assert state.gate.admitted == 4
            with httpx.Client(base_url=base, timeout=WAIT_S) as client:
                refused = client.get("/v1/search", params={"q": "one too many"})
            _error(refused, 503, "overloaded")
            assert refused.headers["retry-after"]
        for query in queries:
            query.join(WAIT_S)
        with httpx.Client(base_url=base, timeout=WAIT_S) as client:
            metrics = client.get("/metrics").text
    assert "blipsearch_rerank_shed_total 2.0" in metrics
    assert "blipsearch_overload_refused_total 1.0" in metrics
    assert 'blipsearch_batch_items_count{kind="texts"} 1.0' in metrics  # the four encodes shared one forward
    pages = [query.response.json() for query in queries if query.response is not None]
    assert [query.response.status_code for query in queries if query.response] == [200] * 4
    # admitted at loads 1/4 and 2/4 (full depth), 3/4 (half) and 4/4 (none): shed, never refused
    assert sorted(page["reranked_count"] for page in pages) == [0, 2, 4, 4]
    assert sorted(page["rerank_shed"] for page in pages) == [False, False, True, True]
    assert [page["reranked"] for page in pages if page["reranked_count"] == 0] == [False]
    assert all(len(page["hits"]) == 6 for page in pages)  # a shed page still answers in full


def test_a_request_past_its_deadline_is_a_503_and_gives_its_place_back(shop) -> None:  # noqa: F811
    settings, _ = shop
    settings = settings.model_copy(
        update={"inference_workers": 1, "inference_queue": 0, "request_deadline_ms": 300.0}
    )
    with _server(settings) as (base, state, texts):
        with texts.paused(), httpx.Client(base_url=base, timeout=WAIT_S) as client:
            late = client.get("/v1/search", params={"q": "a red bag"})
            _error(late, 503, "deadline_exceeded")
            assert late.headers["retry-after"]
            _wait_until(lambda: state.gate.admitted == 0 and texts.queued() == 0)
        assert texts.calls == 0  # its encode never ran
        with httpx.Client(base_url=base, timeout=WAIT_S) as client:
            assert client.get("/v1/search", params={"q": "a red bag"}).status_code == 200


def test_a_client_that_disconnects_frees_its_place_and_its_work_is_dropped(shop) -> None:  # noqa: F811
    settings, _ = shop
    settings = settings.model_copy(update={"inference_workers": 1, "inference_queue": 0})
    with _server(settings) as (base, state, texts):
        with texts.paused():
            leaving = Query(base, {"q": "a bag nobody waits for"}, timeout=1.0)
            leaving.start()
            leaving.join(WAIT_S)
            assert isinstance(leaving.error, httpx.TimeoutException)  # the client hung up
            _wait_until(lambda: state.gate.admitted == 0 and texts.queued() == 0)
        assert texts.calls == 0
        with httpx.Client(base_url=base, timeout=WAIT_S) as client:
            page = client.get("/v1/search", params={"q": "a red bag"})
        assert page.status_code == 200 and texts.calls == 1


def test_writes_have_no_deadline_so_a_503_never_hides_a_write(shop) -> None:  # noqa: F811
    settings, _ = shop
    settings = settings.model_copy(update={"request_deadline_ms": 1.0})
    key = {"X-API-Key": "s3cret-key"}
    with _server(settings) as (base, state, _texts), httpx.Client(base_url=base, timeout=WAIT_S) as client:
        before = client.get("/readyz").json()["items"]
        item_id = state.catalog.items_by_ids([1])[0].id
        deleted = client.delete(f"/v1/items/{item_id}", headers=key)
        assert deleted.status_code in (200, 204), deleted.text
        assert client.get(f"/v1/items/{item_id}").status_code == 404
        assert client.get("/readyz").json()["items"] == before - 1
