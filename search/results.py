"""What a query asks for and what it gets back: the types the CLI, the API and the web UI share.

A page's `as_dict()` is the JSON the API returns and `blipsearch search --json` prints, so a field
added here appears in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from blipsearch.search.filters import Condition
from blipsearch.storage.schema import Item

QueryMode = Literal["vector", "keyword", "hybrid"]
SortKey = Literal["relevance", "price_asc", "price_desc", "newest"]
SORT_KEYS: tuple[SortKey, ...] = ("relevance", "price_asc", "price_desc", "newest")


@dataclass(frozen=True)
class SearchOptions:
    """Per-query knobs; None means "the configured default"."""

    k: int = 10
    offset: int = 0
    rerank: bool | None = None
    rerank_k: int | None = None
    generate_captions: bool = False
    """Write: caption the page's items that have none and store the captions (the CLI's
    `--caption`). Without it a page shows stored captions only, so a search never writes."""
    filters: Sequence[Condition] = ()
    mode: QueryMode | None = None
    include_noisy: bool = False
    """Image-to-text lookups skip texts CapFilt marked noisy unless this is set."""
    sort: SortKey = "relevance"
    """Text queries and browsing: relevance, or the relevant set re-ordered (search/ordering.py)."""


@dataclass
class ImageHit:
    item_id: int
    rank: int
    score: float
    """What ordered this hit: the ITM probability if re-ranked, else the fused or ITC score."""
    itc_score: float | None
    itm_score: float | None = None
    keyword_score: float | None = None
    caption: str | None = None
    item: dict[str, Any] = field(default_factory=dict)
    exact: bool = False
    """The item's SKU, title or brand equals the query: it leads the results (keyword, hybrid)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "rank": self.rank,
            "score": self.score,
            "itc_score": self.itc_score,
            "itm_score": self.itm_score,
            "keyword_score": self.keyword_score,
            "exact": self.exact,
            "caption": self.caption,
            **self.item,
        }


@dataclass
class TextHit:
    item_id: int
    kind: str
    text: str
    rank: int
    score: float
    itc_score: float
    itm_score: float | None = None
    item: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "kind": self.kind,
            "text": self.text,
            "rank": self.rank,
            "score": self.score,
            "itc_score": self.itc_score,
            "itm_score": self.itm_score,
            **self.item,
        }


@dataclass(frozen=True)
class Total:
    """How many results the query has: exact, or at least `value` when a depth limit cut the list."""

    value: int
    exact: bool

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "exact": self.exact}


@dataclass
class SearchPage:
    mode: str
    hits: list[Any]
    k: int
    offset: int
    next_offset: int | None
    reranked: bool
    timings: dict[str, float] = field(default_factory=dict)
    reranked_count: int = 0
    """Candidates ITM scored: the whole shortlist, fewer only when `rerank_deadline_hit` or
    `rerank_shed`."""
    rerank_deadline_hit: bool = False
    """The re-rank safety deadline stopped scoring early: the unscored rest of the shortlist follows
    the scored candidates in first-stage order, so this page may not agree with another one."""
    rerank_shed: bool = False
    """The server was overloaded when the request arrived and re-ranked fewer candidates than its
    depth (none at worst) rather than refuse the request; the page may disagree with another one."""
    sort: SortKey = "relevance"
    total: Total | None = None
    browse: bool = False
    """No query: the items the filters match, listed in `sort` order (search/browse.py)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "k": self.k,
            "offset": self.offset,
            "next_offset": self.next_offset,
            "reranked": self.reranked,
            "reranked_count": self.reranked_count,
            "rerank_deadline_hit": self.rerank_deadline_hit,
            "rerank_shed": self.rerank_shed,
            "sort": self.sort,
            "total": self.total.as_dict() if self.total is not None else None,
            "browse": self.browse,
            "timings_ms": {key: round(value * 1000, 2) for key, value in self.timings.items()},
            "hits": [hit.as_dict() for hit in self.hits],
        }


def item_summary(item: Item | None) -> dict[str, Any]:
    """What a result shows about its item: identity, file facts and catalog metadata."""
    if item is None:
        return {}
    return {
        "source": item.source,
        "sku": item.external_id,
        "title": item.title,
        "description": item.description,
        "category": item.category,
        "brand": item.brand,
        "price": str(item.price) if item.price is not None else None,
        "currency": item.currency,
        "tags": [tag.tag for tag in item.tags],
        "attributes": item.attributes or {},
        "width": item.width,
        "height": item.height,
        "format": item.format,
        "created_at": iso_time(item.created_at),
    }


def iso_time(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC: SQLite hands back naive datetimes, which the catalog writes in UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()
