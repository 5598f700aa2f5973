"""Re-ordering a query's relevant results by price or date, for `sort=` other than relevance.

Sorting a ranked list keeps its meaning only over the results that are relevant, so the caller
hands over the relevance order already cut (by the relevance floor and `sort_candidates`); this
module only re-orders it. Items without a price go last under either price order, and equal keys
keep their relevance order (Python's sort is stable), so a query always gives the same order and
pages of it never overlap. The keys come from one SQL read of the candidates, not from the hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select

from blipsearch.models.runtime import chunks
from blipsearch.search.results import SortKey
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.catalog_access import QUERY_CHUNK
from blipsearch.storage.schema import Item


def sort_ranked(catalog: Catalog, ranked_ids: Sequence[int], sort: SortKey) -> list[int]:
    """`ranked_ids` (best first) in `sort` order; relevance returns them unchanged.

    Ids no longer in the catalog (deleted since the first stage) are left out.
    """
    ids = list(ranked_ids)
    if sort == "relevance" or not ids:
        return ids
    keys = _sort_facts(catalog, ids)
    present = [item_id for item_id in ids if item_id in keys]
    if sort == "newest":
        return sorted(present, key=lambda item_id: -_timestamp(keys[item_id][1]))
    sign = Decimal(1) if sort == "price_asc" else Decimal(-1)

    def price_key(item_id: int) -> tuple[bool, Decimal]:
        price = keys[item_id][0]
        return (price is None, sign * price if price is not None else Decimal(0))

    return sorted(present, key=price_key)


def _sort_facts(catalog: Catalog, ids: list[int]) -> dict[int, tuple[Decimal | None, datetime | None]]:
    facts: dict[int, tuple[Decimal | None, datetime | None]] = {}
    with catalog.reading() as session:
        for chunk in chunks(ids, QUERY_CHUNK):
            rows = session.execute(
                select(Item.id, Item.price, Item.created_at).where(Item.id.in_(chunk))
            ).all()
            facts.update({int(row[0]): (row[1], row[2]) for row in rows})
    return facts


def _timestamp(moment: datetime | None) -> float:
    """Seconds since the epoch; naive times (SQLite) are UTC, as the catalog writes them."""
    if moment is None:
        return float("-inf")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
