"""The OpenAPI shape of a results page and of a structured query: typed and described.

Hits stay open objects: their item fields follow the catalog's metadata, and `SearchPage.as_dict`
(search/results.py) is what fills them.

A structured query's filter `op` and `value` are declared in the document but checked by the
service's own validation (search/filter_objects.py), so that a bad operator or value is the same
400 `invalid_input` with the same message as in the text grammar, not a schema error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from blipsearch.search.filter_objects import OPERATORS
from blipsearch.search.filters import MAX_CONDITIONS
from blipsearch.search.results import SortKey

SORT_DESCRIPTION = (
    "relevance (default; without a query: newest first), price_asc, price_desc (items without a price "
    "last) or newest. With a query, the most relevant results (at most the setting sort_candidates) "
    "are re-ordered; equal keys keep their relevance order."
)


class TotalOut(BaseModel):
    value: int = Field(description="How many results match; a lower bound when exact is false.")
    exact: bool = Field(
        description="True when the count is complete (browsing, or every candidate was counted); false "
        "when a depth limit cut the candidate list: then there are at least `value`."
    )


class SearchPageOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    mode: str = Field(
        description="How the candidates were found: vector, keyword or hybrid; browse without a query."
    )
    k: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last one.")
    reranked: bool = Field(description="The shortlist was re-ranked by ITM.")
    reranked_count: int = Field(
        description="Candidates ITM scored: the deployment's re-rank depth or the shortlist, whichever is "
        "shorter; fewer only when rerank_deadline_hit or rerank_shed."
    )
    rerank_deadline_hit: bool = Field(
        description="The re-rank safety deadline stopped scoring early: the unscored rest of the shortlist "
        "keeps its first-stage order, so this page may disagree with another page of the query."
    )
    rerank_shed: bool = Field(
        default=False,
        description="The server was overloaded and re-ranked fewer candidates than its depth (none at "
        "worst) instead of refusing the request: this page may disagree with another page of the query.",
    )
    sort: str = Field(description="The order of the results: relevance, price_asc, price_desc or newest.")
    total: TotalOut | None = Field(description="How many results the query has, exact or at least.")
    browse: bool = Field(description="No query was given: the items the filters match, in sort order.")
    timings_ms: dict[str, float]
    hits: list[dict[str, Any]] = Field(
        description="Best first. Image hits carry `exact` (bool): the query equals the item's SKU, title or "
        "brand (case- and space-insensitive); exact hits lead keyword and hybrid results and ITM "
        "re-ranking never puts another hit above them."
    )


_VALUE_SCHEMA = {
    "description": "A text or a number; for op `in` a list of them. Taken as is: commas and operator "
    "characters inside a value are part of it.",
    "anyOf": [
        {"type": "string", "maxLength": 200},
        {"type": "number"},
        {"type": "array", "items": {"anyOf": [{"type": "string", "maxLength": 200}, {"type": "number"}]}},
    ],
}


class FilterIn(BaseModel):
    """One condition; all conditions of a query must hold."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(
        max_length=300,
        description="category, brand, sku, currency, format, price, width, height, tag, tags or "
        "attributes.NAME.",
        examples=["brand"],
    )
    op: Annotated[
        str,
        WithJsonSchema({"type": "string", "enum": list(OPERATORS), "description": "The comparison."}),
    ]
    value: Annotated[Any, WithJsonSchema(_VALUE_SCHEMA)]


class SearchQueryIn(BaseModel):
    """GET /v1/search as a JSON body, with filters as objects instead of text."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "q": "running shoes",
                    "k": 10,
                    "sort": "price_asc",
                    "filters": [
                        {"field": "brand", "op": "eq", "value": "Acme, Inc."},
                        {"field": "price", "op": "le", "value": "50"},
                        {"field": "category", "op": "in", "value": ["shoes", "boots"]},
                    ],
                }
            ]
        },
    )

    q: str | None = Field(
        default=None, description="What to look for, in words. Empty or absent: browse the filters' items."
    )
    k: int = Field(default=10, ge=1, le=10_000, description="Results per page (at most max_k).")
    offset: int = Field(default=0, ge=0, description="Results to skip.")
    mode: Literal["vector", "keyword", "hybrid"] | None = Field(
        default=None, description="Text query mode (default: setting)."
    )
    sort: SortKey = Field(default="relevance", description=SORT_DESCRIPTION)
    rerank: bool | None = Field(default=None, description="Re-rank with ITM (default: setting).")
    rerank_k: int | None = Field(default=None, ge=1, le=1000, description="ITM shortlist size.")
    filters: list[FilterIn] = Field(
        default_factory=list, description=f"Conditions that must all hold (at most {MAX_CONDITIONS})."
    )
