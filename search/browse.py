"""Browsing: the items a filter matches, with no query, in a sort order, one page at a time.

A shopper who picks a category or a price range without typing anything gets a list, not
nothing. Filters alone decide membership here, so the total is exact: one SQL `COUNT` over the
same conditions as the page. The order is SQL too, written so that SQLite and PostgreSQL agree:
items without a price sort last under either price order by an explicit `price IS NULL` key
(the two databases put NULLs at opposite ends by default), and every order ends on the item id,
so equal keys never swap between pages. `relevance` has no meaning without a query and lists the
newest items first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import and_, func, select

from blipsearch.search.filters import Condition, compile_conditions
from blipsearch.search.results import ImageHit, SearchOptions, SearchPage, SortKey, Total, item_summary
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.schema import Item, ItemStatus

BROWSE_MODE = "browse"
"""The page's `mode` when there was no query."""


def _order(sort: SortKey) -> list[Any]:
    if sort == "price_asc":
        return [Item.price.is_(None), Item.price.asc(), Item.id.asc()]
    if sort == "price_desc":
        return [Item.price.is_(None), Item.price.desc(), Item.id.asc()]
    return [Item.created_at.desc(), Item.id.desc()]


def browse_ids(
    catalog: Catalog, conditions: Sequence[Condition], sort: SortKey, offset: int, k: int
) -> tuple[list[int], int]:
    """One page of matching indexed item ids in `sort` order, and how many match in all."""
    where = and_(Item.status == ItemStatus.INDEXED.value, *compile_conditions(conditions))
    with catalog.reading() as session:
        total = int(session.scalar(select(func.count()).select_from(Item).where(where)) or 0)
        ids = (
            []
            if offset >= total
            else session.scalars(
                select(Item.id).where(where).order_by(*_order(sort)).offset(offset).limit(k)
            ).all()
        )
    return [int(item_id) for item_id in ids], total


def browse_page(
    catalog: Catalog,
    options: SearchOptions,
    *,
    caption_missing: Callable[[list[Item]], dict[int, str]] | None = None,
    timings: dict[str, float] | None = None,
) -> SearchPage:
    """The page: hits carry no scores (nothing was scored), ranks count from 1 over the listing."""
    ids, total = browse_ids(catalog, options.filters, options.sort, options.offset, options.k)
    items = catalog.items_by_ids(ids)
    captions = caption_missing(items) if caption_missing is not None and options.generate_captions else {}
    hits = [
        ImageHit(
            item_id=item.id,
            rank=options.offset + position + 1,
            score=0.0,
            itc_score=None,
            caption=captions.get(item.id, item.caption),
            item=item_summary(item),
        )
        for position, item in enumerate(items)
    ]
    more = total > options.offset + options.k
    return SearchPage(
        BROWSE_MODE,
        hits,
        options.k,
        options.offset,
        options.offset + options.k if more else None,
        False,
        timings if timings is not None else {},
        sort=options.sort,
        total=Total(total, exact=True),
        browse=True,
    )
