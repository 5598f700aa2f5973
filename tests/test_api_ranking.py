"""Ranking rules over HTTP (real uvicorn, SQLite and PostgreSQL): exact hits lead and say so, stopwords
make no candidates, and the relevance floor ends paging."""

from __future__ import annotations

import httpx
import pytest
from test_search_ranking import COUNT, QUERY, Shop, shop  # noqa: F401  (the fixture)


@pytest.fixture
def client(shop: Shop, api_server) -> httpx.Client:  # type: ignore[no-untyped-def]  # noqa: F811
    with httpx.Client(base_url=api_server(shop.settings), timeout=120) as session:
        yield session


@pytest.mark.parametrize("mode", ["hybrid", "keyword"])
def test_exact_hits_come_first_and_are_marked(client: httpx.Client, shop: Shop, mode: str) -> None:  # noqa: F811
    page = client.get("/v1/search", params={"q": "ZX-9000", "mode": mode, "rerank": True, "k": 8}).json()
    hits = page["hits"]
    assert [hit["item_id"] for hit in hits[:3]] == [shop.sku, shop.title, shop.brand]
    assert [hit["exact"] for hit in hits] == [True, True, True] + [False] * (len(hits) - 3)
    assert all(hit["itm_score"] is None for hit in hits[:3])
    vector = client.get("/v1/search", params={"q": "ZX-9000", "mode": "vector", "k": COUNT}).json()
    assert not any(hit["exact"] for hit in vector["hits"])


def test_no_stopword_candidates_and_paging_ends(client: httpx.Client, shop: Shop) -> None:  # noqa: F811
    page = client.get("/v1/search", params={"q": "a dress with dots", "mode": "keyword", "k": COUNT}).json()
    assert [hit["item_id"] for hit in page["hits"]] == [shop.ids[1]]
    seen: list[int] = []
    offset: int | None = 0
    while offset is not None:
        body = client.get("/v1/search", params={"q": QUERY, "k": 4, "offset": offset, "rerank": False}).json()
        seen += [hit["item_id"] for hit in body["hits"]]
        offset = body["next_offset"]
    assert 0 < len(seen) < COUNT and len(seen) == len(set(seen))
    assert not {shop.sku, shop.title, shop.brand, shop.titled} & set(seen)
