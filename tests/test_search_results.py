"""A result page as JSON: what the API returns and `search --json` prints."""

from __future__ import annotations

from decimal import Decimal

from blipsearch.search.results import ImageHit, SearchPage, TextHit, item_summary
from blipsearch.storage.schema import Item, ItemTag


def test_a_page_reports_milliseconds_and_merges_each_hit_with_its_item() -> None:
    hit = ImageHit(item_id=7, rank=1, score=0.9, itc_score=0.4, itm_score=0.9, item={"sku": "AB-1"})
    timings = {"vector": 0.0123456}
    page = SearchPage("hybrid", [hit], k=1, offset=0, next_offset=1, reranked=True, timings=timings)
    data = page.as_dict()
    assert data["timings_ms"] == {"vector": 12.35}
    assert data["next_offset"] == 1 and data["reranked"] and data["reranked_count"] == 0
    assert data["hits"] == [
        {
            "item_id": 7,
            "rank": 1,
            "score": 0.9,
            "itc_score": 0.4,
            "itm_score": 0.9,
            "keyword_score": None,
            "exact": False,
            "caption": None,
            "sku": "AB-1",
        }
    ]
    text = TextHit(item_id=7, kind="title", text="a mug", rank=2, score=0.3, itc_score=0.3)
    assert text.as_dict()["kind"] == "title" and text.as_dict()["itm_score"] is None


def test_an_item_summary_shows_identity_and_metadata_but_never_vectors() -> None:
    item = Item(
        source="/photos/mug.png",
        external_id="AB-1",
        title="Mug",
        price=Decimal("4.50"),
        currency="EUR",
        tags=[ItemTag(tag="kitchen")],
        width=32,
        height=24,
        format="PNG",
        embedding=b"\x00" * 16,
    )
    summary = item_summary(item)
    assert summary["sku"] == "AB-1" and summary["price"] == "4.50" and summary["tags"] == ["kitchen"]
    assert summary["attributes"] == {} and (summary["width"], summary["height"]) == (32, 24)
    assert not {"embedding", "model_fingerprint", "content_hash"} & set(summary)
    assert item_summary(None) == {}
