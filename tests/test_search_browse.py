"""Browsing and sorting through the query service, on SQLite and PostgreSQL alike.

The shop (tests/shop_catalog.py) plants every price, creation time and ITC similarity, so the
expected orders follow from the rules written out in the test, never from the service's output.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blipsearch.errors import InvalidInputError
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.filter_objects import conditions_from_objects
from blipsearch.search.filters import parse_filters
from blipsearch.search.results import SearchOptions, SearchPage
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog

from imagesets import TEST_MAX_PIXELS
from shop_catalog import COMMA_BRAND, HOURS, OPERATOR_BRAND, QUERY, Shop, expected_order, write_shop


def _settings(tmp_path: Path, database_url: str, tiny_checkpoints, **changes: object) -> Settings:
    fields: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "retrieval_model": str(tiny_checkpoints.retrieval),
        "caption_model": str(tiny_checkpoints.caption),
        "device": "cpu",
        "dtype": "float32",
        "offline": True,
        "max_image_pixels": TEST_MAX_PIXELS,
        "rerank": False,  # the relevance order is then the planted ITC order, known in advance
    }
    fields.update(changes)
    return Settings(**fields)  # type: ignore[arg-type]


@pytest.fixture
def shop_service(
    tmp_path: Path, database_url: str, tiny_checkpoints, retrieval: RetrievalModel
) -> tuple[SearchService, Shop]:
    settings = _settings(tmp_path, database_url, tiny_checkpoints, sort_candidates=50)
    catalog = Catalog.open(settings)
    shop = write_shop(catalog, retrieval, tmp_path / "photos")
    service = SearchService(settings, retrieval, catalog)
    yield service, shop
    service.close()


def _ids(page: SearchPage) -> list[int]:
    return [hit.item_id for hit in page.hits]


def _browse(service: SearchService, *filters: str, **options: object) -> SearchPage:
    return service.browse(SearchOptions(filters=parse_filters(filters), **options))  # type: ignore[arg-type]


def test_browsing_lists_the_filter_matches_newest_first_with_an_exact_total(
    shop_service: tuple[SearchService, Shop],
) -> None:
    service, shop = shop_service
    shoes = shop.category("shoes")
    newest = sorted(shoes, key=lambda item_id: -HOURS[shop.index_of(item_id)])
    page = _browse(service, "category=shoes", k=20)
    assert _ids(page) == newest
    assert page.browse and page.mode == "browse" and page.sort == "relevance"
    assert page.total is not None and (page.total.value, page.total.exact) == (len(shoes), True)
    assert page.next_offset is None
    data = page.as_dict()
    assert data["total"] == {"value": 5, "exact": True} and data["browse"] is True
    assert all(hit["created_at"].startswith("2026-01-02T") for hit in data["hits"])
    assert all(hit["itc_score"] is None for hit in data["hits"])


def test_browse_pages_are_disjoint_end_cleanly_and_the_pending_item_is_never_listed(
    shop_service: tuple[SearchService, Shop],
) -> None:
    service, _ = shop_service
    everything = _ids(_browse(service, "price>=0", k=50, sort="price_asc"))
    assert len(everything) == 8  # the pending item has a price of 1 and must not appear
    seen: list[int] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        page = _browse(service, "price>=0", k=3, offset=offset, sort="price_asc")
        assert page.total is not None and page.total.value == 8 and page.total.exact
        seen += _ids(page)
        offset = page.next_offset
        pages += 1
    assert seen == everything and pages == 3
    past = _browse(service, "price>=0", k=3, offset=30, sort="price_asc")
    assert past.hits == [] and past.next_offset is None and past.total is not None and past.total.value == 8


@pytest.mark.parametrize("sort", ["price_asc", "price_desc", "newest"])
def test_browse_sorts_with_missing_prices_last(shop_service: tuple[SearchService, Shop], sort: str) -> None:
    service, shop = shop_service
    bags = shop.category("bags")  # two of the five have no price
    by_id = sorted(bags)  # browsing breaks ties by id
    assert _ids(_browse(service, "category=bags", k=10, sort=sort)) == expected_order(shop, by_id, sort)


@pytest.mark.parametrize("sort", ["price_asc", "price_desc", "newest"])
def test_a_query_sorted_reorders_its_relevant_results(
    shop_service: tuple[SearchService, Shop], sort: str
) -> None:
    service, shop = shop_service
    options = SearchOptions(k=10, mode="vector", sort=sort)  # type: ignore[arg-type]
    page = service.text_to_images(QUERY, options)
    assert _ids(page) == expected_order(shop, shop.relevance(), sort)
    # every item fits under sort_candidates (50): the relevant set was counted fully
    assert page.total is not None and (page.total.value, page.total.exact) == (10, True)
    assert page.sort == sort and not page.browse
    if sort != "newest":
        priced = [hit for hit in page.hits if hit.item["price"] is not None]
        assert page.hits[-2:] == [hit for hit in page.hits if hit.item["price"] is None]
        assert len(priced) == 8


def test_sorted_pages_of_a_query_join_up(shop_service: tuple[SearchService, Shop]) -> None:
    service, shop = shop_service
    pages = [
        _ids(
            service.text_to_images(QUERY, SearchOptions(k=4, offset=offset, mode="vector", sort="price_desc"))
        )
        for offset in (0, 4, 8)
    ]
    assert pages[0] + pages[1] + pages[2] == expected_order(shop, shop.relevance(), "price_desc")


def test_sorting_is_over_the_most_relevant_sort_candidates(
    tmp_path: Path, database_url: str, tiny_checkpoints, retrieval: RetrievalModel
) -> None:
    settings = _settings(tmp_path, database_url, tiny_checkpoints, sort_candidates=4)
    catalog = Catalog.open(settings)
    shop = write_shop(catalog, retrieval, tmp_path / "photos")
    service = SearchService(settings, retrieval, catalog)
    try:
        page = service.text_to_images(QUERY, SearchOptions(k=10, mode="vector", sort="price_asc"))
    finally:
        service.close()
    assert _ids(page) == expected_order(shop, shop.relevance()[:4], "price_asc")
    assert page.total is not None and (page.total.value, page.total.exact) == (4, False)


def test_relevance_totals_are_lower_bounds_unless_the_candidates_ran_out(
    shop_service: tuple[SearchService, Shop],
) -> None:
    service, _ = shop_service
    cut = service.text_to_images(QUERY, SearchOptions(k=3, mode="vector"))
    assert cut.total is not None and not cut.total.exact and cut.total.value >= 4
    filtered = service.text_to_images(
        QUERY, SearchOptions(k=3, mode="vector", filters=parse_filters(["price<=10"]))
    )
    assert filtered.total is not None and (filtered.total.value, filtered.total.exact) == (3, True)
    keyword = service.text_to_images("Acme", SearchOptions(k=3, mode="keyword"))
    assert [hit.item["brand"] for hit in keyword.hits] == [COMMA_BRAND]
    assert keyword.total is not None and (keyword.total.value, keyword.total.exact) == (1, True)


def test_structured_filters_take_commas_and_operators_as_part_of_the_value(
    shop_service: tuple[SearchService, Shop],
) -> None:
    service, shop = shop_service

    def browse(*specs: dict[str, object]) -> list[int]:
        return _ids(service.browse(SearchOptions(k=20, filters=conditions_from_objects(specs))))

    assert browse({"field": "brand", "op": "eq", "value": COMMA_BRAND}) == [shop.ids[3]]
    assert browse({"field": "brand", "op": "eq", "value": OPERATOR_BRAND}) == [shop.ids[4]]
    both = browse({"field": "brand", "op": "in", "value": [COMMA_BRAND, OPERATOR_BRAND]})
    assert sorted(both) == sorted([shop.ids[3], shop.ids[4]])
    others = browse({"field": "brand", "op": "ne", "value": COMMA_BRAND})
    assert sorted(others) == sorted(item_id for item_id in shop.ids if item_id != shop.ids[3])
    cheap = browse(
        {"field": "price", "op": "le", "value": 10}, {"field": "category", "op": "eq", "value": "shoes"}
    )
    assert sorted(cheap) == sorted(shop.ids[i] for i in (2, 6, 8))
    # the text grammar splits the same `in` at the comma: it cannot say this value
    assert _ids(_browse(service, f"brand in {COMMA_BRAND}", k=20)) == []


def test_bad_sort_is_refused(shop_service: tuple[SearchService, Shop]) -> None:
    service, _ = shop_service
    with pytest.raises(InvalidInputError, match="sort must be one of"):
        service.browse(SearchOptions(filters=parse_filters(["price>=0"]), sort="cheapest"))  # type: ignore[arg-type]
