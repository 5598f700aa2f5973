"""The OpenAPI shape of a results page: the page-level fields clients rely on, typed and described.

Hits stay open objects: their item fields follow the catalog's metadata, and `SearchPage.as_dict`
(search/results.py) is what fills them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SearchPageOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    mode: str = Field(description="How the candidates were found: vector, keyword or hybrid.")
    k: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last one.")
    reranked: bool = Field(description="The shortlist was re-ranked by ITM.")
    reranked_count: int = Field(
        description="Candidates ITM scored: the deployment's re-rank depth or the shortlist, whichever is "
        "shorter; fewer only when rerank_deadline_hit."
    )
    rerank_deadline_hit: bool = Field(
        description="The re-rank safety deadline stopped scoring early: the unscored rest of the shortlist "
        "keeps its first-stage order, so this page may disagree with another page of the query."
    )
    timings_ms: dict[str, float]
    hits: list[dict[str, Any]] = Field(
        description="Best first. Image hits carry `exact` (bool): the query equals the item's SKU, title or "
        "brand (case- and space-insensitive); exact hits lead keyword and hybrid results and ITM "
        "re-ranking never puts another hit above them."
    )
