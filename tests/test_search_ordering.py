"""Re-ordering a relevance list by price or date, read from the catalog, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select, update

from blipsearch.search.ordering import sort_ranked
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_writes import ItemMetadata
from blipsearch.storage.schema import Item

from catalog_rows import indexed_write

PRICES = [Decimal("9.50"), None, Decimal("3"), Decimal("9.50"), None, Decimal("12")]
AGE_HOURS = [5, 1, 4, 1, 0, 2]
"""Item i was created this many hours before the newest; items 1 and 3 at the same moment."""


@pytest.fixture
def catalog(tmp_path: Path, database_url: str) -> Catalog:
    opened = Catalog.open(Settings(data_dir=tmp_path, database_url=database_url))
    ids = opened.write(
        [
            indexed_write(f"/p/{i}.png", i + 1, metadata=ItemMetadata(price=PRICES[i]))
            for i in range(len(PRICES))
        ]
    )
    newest = datetime(2026, 3, 1, tzinfo=UTC)
    with opened.sessions() as session, session.begin():
        for i, item_id in enumerate(ids):
            created = newest - timedelta(hours=AGE_HOURS[i])
            session.execute(update(Item).where(Item.id == item_id).values(created_at=created))
    yield opened
    opened.close()


def _positions(catalog: Catalog, ranked_positions: list[int], sort: str) -> list[int]:
    """Sort items given by their fixture position; answer in positions too."""
    ids = catalog_ids(catalog)
    result = sort_ranked(catalog, [ids[p] for p in ranked_positions], sort)  # type: ignore[arg-type]
    return [ids.index(item_id) for item_id in result]


def catalog_ids(catalog: Catalog) -> list[int]:
    with catalog.sessions() as session:
        return list(session.scalars(select(Item.id).order_by(Item.id)))


RELEVANCE = [4, 3, 0, 1, 5, 2]
"""A relevance order unrelated to the ids, prices and dates."""


def test_relevance_keeps_the_order(catalog: Catalog) -> None:
    assert _positions(catalog, RELEVANCE, "relevance") == RELEVANCE


def test_price_ascending_puts_missing_prices_last_and_keeps_ties_in_relevance_order(catalog: Catalog) -> None:
    # 3 and 0 both cost 9.50 (3 is more relevant); 4 and 1 have no price (4 is more relevant)
    assert _positions(catalog, RELEVANCE, "price_asc") == [2, 3, 0, 5, 4, 1]


def test_price_descending_also_puts_missing_prices_last(catalog: Catalog) -> None:
    assert _positions(catalog, RELEVANCE, "price_desc") == [5, 3, 0, 2, 4, 1]
    assert _positions(catalog, [0, 3, 1, 4], "price_desc") == [0, 3, 1, 4]


def test_newest_first_with_equal_times_in_relevance_order(catalog: Catalog) -> None:
    assert _positions(catalog, RELEVANCE, "newest") == [4, 3, 1, 5, 2, 0]
    assert _positions(catalog, [1, 3], "newest") == [1, 3]


def test_ids_no_longer_in_the_catalog_are_left_out(catalog: Catalog) -> None:
    ids = catalog_ids(catalog)
    assert sort_ranked(catalog, [ids[2], 10_000, ids[0]], "price_asc") == [ids[2], ids[0]]
    assert sort_ranked(catalog, [], "newest") == []
