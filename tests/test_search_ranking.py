"""Ranking rules through the real service, on SQLite and PostgreSQL: exact hits first (and never
below re-ranked candidates), no stopword-only keyword candidates, a relevance floor that ends paging,
and the same order on a slow machine.

The collection's ITC embeddings are planted (similarity to the query falls with the index), so the
vector side's order is known; the exact items sit far from the query, where only the exact rule can
bring them first.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.filters import parse_filters
from blipsearch.search.results import SearchOptions
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_writes import FileFacts, ItemMetadata, ItemWrite
from blipsearch.storage.schema import ItemStatus

from imagesets import TEST_MAX_PIXELS, write_valid_images
from test_search_clock import ManualClock

QUERY = "a red dress with white dots"
COUNT = 16
PLAIN = 12
"""Items 0..11 are plain products near the query; 12..15 are the exact-match cast, far from it."""


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@dataclass
class Shop:
    settings: Settings
    catalog: Catalog
    ids: list[int]
    itc: dict[int, float]
    sku: int
    """SKU "ZX-9000"."""
    title: int
    """Title "ZX-9000" (another item's SKU) in category boots."""
    brand: int
    """Brand "ZX-9000"."""
    titled: int
    """Title "Trailblazer   Hiking boot" and brand "Quokkaware"."""


def _metadata(index: int) -> ItemMetadata:
    cast = {
        12: ItemMetadata(external_id="ZX-9000", title="Plain thing", brand="Other", category="dresses"),
        13: ItemMetadata(external_id="SKU-13", title="ZX-9000", brand="Other", category="boots"),
        14: ItemMetadata(external_id="SKU-14", title="Plain thing", brand="zx-9000", category="dresses"),
        15: ItemMetadata(
            external_id="SKU-15", title="Trailblazer   Hiking boot", brand="Quokkaware", category="boots"
        ),
    }
    if index in cast:
        return cast[index]
    # "a" and "with" in every title: matches on them alone must never make a candidate
    title = {0: "The Who: a live album", 1: "a dress with dots"}.get(
        index, f"a summer item with {index} pockets"
    )
    return ItemMetadata(
        external_id=f"SKU-{index}", title=title, brand="acme", category="dresses", price=Decimal(index)
    )


@pytest.fixture
def shop(tmp_path: Path, database_url: str, tiny_checkpoints, retrieval: RetrievalModel) -> Shop:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        retrieval_model=str(tiny_checkpoints.retrieval),
        caption_model=str(tiny_checkpoints.caption),
        device="cpu",
        dtype="float32",
        offline=True,
        max_image_pixels=TEST_MAX_PIXELS,
        rerank_budget_ms=600_000.0,
        rerank_deadline_ms=600_000.0,
    )
    catalog = Catalog.open(settings)
    paths = write_valid_images(tmp_path / "photos", COUNT, seed=5)
    query_vector = retrieval.embed_texts([QUERY])[0]
    rng = np.random.default_rng(11)
    embeddings = []
    for index in range(COUNT):
        noise = _unit(rng.normal(size=query_vector.shape))
        if index < PLAIN:  # similarity to the query falls with the index
            embeddings.append(_unit((0.95 - 0.07 * index) * query_vector + (0.05 + 0.07 * index) * noise))
        else:  # the cast points away from the query: no vector search brings it up
            embeddings.append(_unit(-query_vector + 0.3 * noise))
    writes = [
        ItemWrite(
            source=str(path),
            origin=str(path.parent),
            status=ItemStatus.INDEXED,
            file=FileFacts(f"{index:064x}", path.stat().st_size, path.stat().st_mtime, "PNG", 32, 32),
            embedding=embeddings[index],
            model_fingerprint=retrieval.fingerprint,
            metadata=_metadata(index),
        )
        for index, path in enumerate(paths)
    ]
    ids = catalog.write(writes)
    yield Shop(
        settings=settings,
        catalog=catalog,
        ids=ids,
        itc={i: float(e @ query_vector) for i, e in zip(ids, embeddings, strict=True)},
        sku=ids[12],
        title=ids[13],
        brand=ids[14],
        titled=ids[15],
    )
    catalog.close()


def _service(shop: Shop, retrieval: RetrievalModel, clock: ManualClock | None = None, **changes: object):
    settings = shop.settings.model_copy(update=changes)
    if clock is None:
        return SearchService(settings, retrieval, shop.catalog)
    return SearchService(settings, retrieval, shop.catalog, clock=clock)


def _ids(page) -> list[int]:  # type: ignore[no-untyped-def]
    return [hit.item_id for hit in page.hits]


@pytest.mark.parametrize("mode", ["hybrid", "keyword"])
def test_exact_sku_title_and_brand_lead_with_reranking_on(
    shop: Shop, retrieval: RetrievalModel, mode: str
) -> None:
    service = _service(shop, retrieval)
    options = SearchOptions(k=8, mode=mode, rerank=True, rerank_k=8)  # type: ignore[arg-type]
    by_sku = service.text_to_images("  zx-9000 ", options)
    # SKU, then title, then brand: each kind of exact hit, all before anything re-ranked
    assert _ids(by_sku)[:3] == [shop.sku, shop.title, shop.brand]
    assert [hit.exact for hit in by_sku.hits[:3]] == [True, True, True]
    assert not any(hit.exact for hit in by_sku.hits[3:])
    assert all(hit.itm_score is None for hit in by_sku.hits[:3]), "exact hits are not re-ranked"

    by_title = service.text_to_images("TRAILBLAZER hiking   BOOT", options)
    assert _ids(by_title)[0] == shop.titled and by_title.hits[0].exact
    assert by_title.hits[0].as_dict()["exact"] is True
    by_brand = service.text_to_images("quokkaware", options)
    assert _ids(by_brand)[0] == shop.titled and by_brand.hits[0].exact


def test_reranking_never_puts_a_candidate_above_an_exact_hit(shop: Shop, retrieval: RetrievalModel) -> None:
    service = _service(shop, retrieval)
    query = "Trailblazer hiking boot"  # near-misses ("a dress with dots") are re-ranked behind it
    page = service.text_to_images(query, SearchOptions(k=COUNT, mode="hybrid", rerank=True, rerank_k=8))
    assert page.reranked and page.reranked_count >= 1
    assert _ids(page)[0] == shop.titled and page.hits[0].itm_score is None
    scored = [hit for hit in page.hits if hit.itm_score is not None]
    assert scored and all(hit.rank > 1 for hit in scored)
    assert [hit.rank for hit in page.hits] == list(range(1, len(page.hits) + 1))


def test_a_product_code_lists_its_product_and_keyword_matches_not_vector_neighbours(
    shop: Shop, retrieval: RetrievalModel
) -> None:
    service = _service(shop, retrieval)
    page = service.text_to_images("ZX-9000", SearchOptions(k=COUNT, mode="hybrid", rerank=True, rerank_k=8))
    # the plain items are the query text's nearest vectors, yet none names the code
    assert _ids(page) == [shop.sku, shop.title, shop.brand]
    assert page.total is not None and (page.total.value, page.total.exact) == (3, True)
    assert page.next_offset is None
    not_a_code = service.text_to_images("Quokkaware", SearchOptions(k=COUNT, mode="hybrid", rerank=False))
    assert len(not_a_code.hits) > 1, "a brand is not a product code: vector candidates still come"


def test_filters_still_apply_to_exact_hits(shop: Shop, retrieval: RetrievalModel) -> None:
    service = _service(shop, retrieval)
    boots = parse_filters(["category=boots"])
    page = service.text_to_images("zx-9000", SearchOptions(k=8, mode="hybrid", rerank=True, filters=boots))
    assert _ids(page)[0] == shop.title and page.hits[0].exact
    assert shop.sku not in _ids(page) and shop.brand not in _ids(page)


def test_vector_mode_stays_pure_vector(shop: Shop, retrieval: RetrievalModel) -> None:
    service = _service(shop, retrieval)
    page = service.text_to_images("ZX-9000", SearchOptions(k=COUNT, mode="vector", rerank=False))
    assert not any(hit.exact for hit in page.hits)
    assert len(page.hits) == COUNT, "vector mode has no relevance floor"


@pytest.mark.parametrize("mode", ["hybrid", "keyword"])
def test_stopwords_alone_make_no_keyword_candidate(shop: Shop, retrieval: RetrievalModel, mode: str) -> None:
    service = _service(shop, retrieval, vector_floor=0.99)  # the vector side keeps only its best
    page = service.text_to_images("a dress with dots", SearchOptions(k=COUNT, mode=mode, rerank=False))
    keyword_hits = {hit.item_id for hit in page.hits if hit.keyword_score is not None}
    assert keyword_hits == {shop.ids[1]}, (
        "'a' and 'with' are in every plain title; only item 1 has dress/dots"
    )
    everything = _service(shop, retrieval, keyword_stopwords=False, keyword_floor=0.0)
    loose = everything.text_to_images(
        "a dress with dots", SearchOptions(k=COUNT, mode="keyword", rerank=False)
    )
    assert len(loose.hits) > 2, "without the stopword rule 'a' and 'with' match the plain titles"


def test_a_query_of_stopwords_only_still_searches_them(shop: Shop, retrieval: RetrievalModel) -> None:
    service = _service(shop, retrieval)
    page = service.text_to_images("the", SearchOptions(k=3, mode="keyword", rerank=False))
    assert _ids(page) == [shop.ids[0]]


def test_the_relevance_floor_ends_paging(shop: Shop, retrieval: RetrievalModel) -> None:
    def all_pages(service: SearchService) -> list[int]:
        seen: list[int] = []
        offset: int | None = 0
        while offset is not None:
            page = service.text_to_images(
                QUERY, SearchOptions(k=3, offset=offset, mode="hybrid", rerank=False)
            )
            seen += _ids(page)
            offset = page.next_offset
        return seen

    floored = all_pages(_service(shop, retrieval, vector_floor=0.5))
    best = max(shop.itc.values())
    assert floored and len(floored) == len(set(floored))
    assert {i for i in floored if shop.itc[i] < 0.5 * best} <= {shop.ids[1]}, (
        "only a keyword match may be low"
    )
    assert not {shop.sku, shop.title, shop.brand, shop.titled} & set(floored)
    unfloored = all_pages(_service(shop, retrieval, vector_floor=0.0))
    assert len(unfloored) == COUNT > len(floored)


def test_a_slow_itm_does_not_change_the_order(shop: Shop, retrieval: RetrievalModel) -> None:
    def calibrated_at_four(slow_step: float) -> SearchService:
        clock = ManualClock(step=0.4)  # 0.1 s per probe candidate: four fit the 400 ms budget
        service = _service(shop, retrieval, clock, rerank_budget_ms=None)
        service.reranker.deployment_depth()
        clock.step = slow_step
        return service

    options = SearchOptions(k=10, mode="hybrid")
    fast = calibrated_at_four(0.0).text_to_images("Quokkaware dress", options)
    slow = calibrated_at_four(30.0).text_to_images("Quokkaware dress", options)
    assert _ids(slow) == _ids(fast) and slow.reranked_count == fast.reranked_count == 4
    assert not slow.rerank_deadline_hit
    exact = calibrated_at_four(30.0).text_to_images("quokkaware", options)
    assert _ids(exact)[0] == shop.titled and _ids(exact) == _ids(
        calibrated_at_four(0.0).text_to_images("quokkaware", options)
    )
