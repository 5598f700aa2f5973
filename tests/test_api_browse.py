"""Browse, sort, totals and structured filters over HTTP: a real uvicorn server on loopback.

The shop (tests/shop_catalog.py) plants prices, dates and ITC similarities; re-ranking is off so
the relevance order is the planted one, and every expected order is the rule written out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog

from imagesets import TEST_MAX_PIXELS
from shop_catalog import COMMA_BRAND, HOURS, OPERATOR_BRAND, QUERY, Shop, expected_order, write_shop


@pytest.fixture
def served(
    tmp_path: Path, tiny_checkpoints, retrieval: RetrievalModel, api_server: Callable[..., str]
) -> Iterator[tuple[httpx.Client, Shop]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        retrieval_model=str(tiny_checkpoints.retrieval),
        device="cpu",
        dtype="float32",
        offline=True,
        max_image_pixels=TEST_MAX_PIXELS,
        rerank=False,
        max_query_chars=100,
    )
    catalog = Catalog.open(settings)
    shop = write_shop(catalog, retrieval, tmp_path / "photos")
    catalog.close()
    with httpx.Client(base_url=api_server(settings), timeout=120) as client:
        yield client, shop


def _ids(page: dict[str, Any]) -> list[int]:
    return [hit["item_id"] for hit in page["hits"]]


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["status"] == status
    assert "Traceback" not in response.text and "/" not in body["error"]["message"].replace("/v1/", "")
    return str(body["error"]["message"])


def test_filters_without_a_query_browse_newest_first_with_an_exact_total(
    served: tuple[httpx.Client, Shop],
) -> None:
    client, shop = served
    shoes = shop.category("shoes")
    for params in (
        {"filter": "category=shoes"},
        {"filter": "category=shoes", "q": ""},
        {"filter": "category=shoes", "q": "  "},
    ):
        page = _ok(client.get("/v1/search", params={**params, "k": 3}))
        assert page["browse"] is True and page["mode"] == "browse" and page["sort"] == "relevance"
        assert page["total"] == {"value": len(shoes), "exact": True}
        assert _ids(page) == sorted(shoes, key=lambda item_id: -HOURS[shop.index_of(item_id)])[:3]
        assert page["next_offset"] == 3
    hit = page["hits"][0]
    assert hit["created_at"].startswith("2026-01-02T") and hit["thumbnail_url"].endswith("/thumbnail")
    last = _ok(client.get("/v1/search", params={"filter": "category=shoes", "k": 3, "offset": 3}))
    assert len(last["hits"]) == 2 and last["next_offset"] is None


def test_browse_sorted_by_price_puts_items_without_a_price_last(served: tuple[httpx.Client, Shop]) -> None:
    client, shop = served
    bags = sorted(shop.category("bags"))
    for sort in ("price_asc", "price_desc", "newest"):
        page = _ok(client.get("/v1/search", params={"filter": "category=bags", "sort": sort}))
        assert _ids(page) == expected_order(shop, bags, sort) and page["sort"] == sort


def test_a_query_sorted_by_price_reorders_its_relevant_results(served: tuple[httpx.Client, Shop]) -> None:
    client, shop = served
    page = _ok(client.get("/v1/search", params={"q": QUERY, "mode": "vector", "sort": "price_desc", "k": 10}))
    assert _ids(page) == expected_order(shop, shop.relevance(), "price_desc")
    assert page["browse"] is False and page["total"] == {"value": 10, "exact": True}
    assert [hit["price"] for hit in page["hits"][-2:]] == [None, None]
    relevance = _ok(client.get("/v1/search", params={"q": QUERY, "mode": "vector", "k": 3}))
    assert _ids(relevance) == shop.relevance()[:3]
    assert relevance["total"]["exact"] is False and relevance["total"]["value"] >= 4


def test_no_query_and_no_filter_is_a_400_and_a_bad_sort_a_422(served: tuple[httpx.Client, Shop]) -> None:
    client, _ = served
    for params in ({}, {"q": ""}, {"q": "   "}, {"sort": "price_asc"}):
        assert "filter" in _error(client.get("/v1/search", params=params), 400, "query_required")
    _error(
        client.get("/v1/search", params={"filter": "category=shoes", "sort": "cheapest"}),
        422,
        "invalid_request",
    )
    _error(client.get("/v1/search", params={"q": "x" * 101}), 400, "query_too_long")
    _error(client.get("/v1/search", params={"filter": "colour=red"}), 400, "invalid_input")
    _error(client.post("/v1/search/query", json={}), 400, "query_required")


def test_structured_filters_match_values_with_commas_and_operators_exactly(
    served: tuple[httpx.Client, Shop],
) -> None:
    client, shop = served

    def query(**body: Any) -> dict[str, Any]:
        return _ok(client.post("/v1/search/query", json=body))

    comma = query(filters=[{"field": "brand", "op": "eq", "value": COMMA_BRAND}])
    assert _ids(comma) == [shop.ids[3]] and comma["browse"] and comma["total"] == {"value": 1, "exact": True}
    operator = query(filters=[{"field": "brand", "op": "eq", "value": OPERATOR_BRAND}])
    assert _ids(operator) == [shop.ids[4]]
    both = query(
        filters=[{"field": "brand", "op": "in", "value": [COMMA_BRAND, OPERATOR_BRAND]}], sort="price_asc"
    )
    assert _ids(both) == [shop.ids[4], shop.ids[3]]  # 20 before 30
    cheap = query(
        q=QUERY,
        mode="vector",
        sort="price_asc",
        filters=[
            {"field": "price", "op": "le", "value": 20},
            {"field": "category", "op": "in", "value": ["shoes"]},
        ],
    )
    expected = expected_order(shop, shop.relevance(among=[shop.ids[i] for i in (2, 4, 6, 8)]), "price_asc")
    assert _ids(cheap) == expected and cheap["total"] == {"value": 4, "exact": True}
    # the same query through GET and the text grammar gives the same answer
    same = _ok(
        client.get(
            "/v1/search",
            params={
                "q": QUERY,
                "mode": "vector",
                "sort": "price_asc",
                "filter": ["price<=20", "category in shoes"],
            },
        )
    )
    assert _ids(same) == _ids(cheap) and same["total"] == cheap["total"]


def test_bad_structured_filters_are_400s_in_the_error_shape(served: tuple[httpx.Client, Shop]) -> None:
    client, _ = served

    def refused(status: int, code: str, **body: Any) -> str:
        return _error(client.post("/v1/search/query", json=body), status, code)

    assert "Unknown filter field 'colour'" in refused(
        400, "invalid_input", filters=[{"field": "colour", "op": "eq", "value": "red"}]
    )
    assert "op must be one of" in refused(
        400, "invalid_input", filters=[{"field": "brand", "op": "like", "value": "a"}]
    )
    assert "does not support 'lt'" in refused(
        400, "invalid_input", filters=[{"field": "brand", "op": "lt", "value": "a"}]
    )
    assert "needs a number" in refused(
        400, "invalid_input", filters=[{"field": "price", "op": "le", "value": "cheap"}]
    )
    assert "single text or number" in refused(
        400, "invalid_input", filters=[{"field": "price", "op": "le", "value": None}]
    )
    assert "At most 20" in refused(
        400, "invalid_input", filters=[{"field": "brand", "op": "eq", "value": "a"}] * 21
    )
    refused(400, "query_too_long", q="x" * 101, filters=[{"field": "brand", "op": "eq", "value": "a"}])
    refused(422, "invalid_request", q="x", colour="red")
    refused(422, "invalid_request", q="x", k=0)
    refused(422, "invalid_request", q="x", sort="cheapest")
    refused(422, "invalid_request", filters=[{"field": "brand", "op": "eq"}])


def test_the_openapi_document_describes_browse_sort_total_and_the_json_query(
    served: tuple[httpx.Client, Shop],
) -> None:
    client, _ = served
    schema = client.get("/openapi.json").json()
    get = schema["paths"]["/v1/search"]["get"]
    params = {param["name"]: param for param in get["parameters"]}
    assert params["q"]["required"] is False
    assert "price_asc" in str(params["sort"]["schema"])
    post = schema["paths"]["/v1/search/query"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/SearchQueryIn")
    assert {"400", "413", "422"} <= set(post["responses"])
    page = schema["components"]["schemas"]["SearchPageOut"]["properties"]
    assert {"sort", "total", "browse"} <= set(page)
    filter_schema = schema["components"]["schemas"]["FilterIn"]["properties"]
    assert filter_schema["op"]["enum"] == ["eq", "ne", "lt", "le", "gt", "ge", "in"]
