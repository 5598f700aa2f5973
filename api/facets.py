"""GET /v1/facets: what the web UI builds its filters, home page and upload form from.

Everything comes from the server itself: the catalog's categories, brands and price range, example
queries drawn from the same catalog (so an emoji catalog never suggests "a red leather bag"),
whether the retrieval model is the shipped demo model (which knows emoji only), and the upload
size limit, so a browser can refuse a too-large file before sending it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from blipsearch.api.deps import AppState, app_state, require_read_access
from blipsearch.demo import DEMO_MODEL_NOTE, is_demo_model
from blipsearch.storage.schema import Item, ItemStatus

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_read_access)])

State = Annotated[AppState, Depends(app_state)]

MAX_EXAMPLES = 6
MAX_VALUES = 500
_SUFFIX = re.compile(r"\s*\([^()]*\)\s*$")
_LETTER = re.compile(r"[^\W\d_]")


class PriceRange(BaseModel):
    min: str | None = Field(description="Lowest price in the catalog, as a decimal string.")
    max: str | None = Field(description="Highest price in the catalog, as a decimal string.")


class ModelNotice(BaseModel):
    demo: bool = Field(description="The retrieval model is the small shipped demo model (emoji only).")
    note: str | None = Field(description="What a user should know about the model, or null.")


class FacetsOut(BaseModel):
    categories: list[str]
    brands: list[str]
    price: PriceRange
    vqa: bool = Field(description="A question-answering model is configured.")
    items: int = Field(description="Indexed items.")
    examples: list[str] = Field(
        description="Up to 6 example queries from the catalog itself: category names and short titles."
    )
    model: ModelNotice
    max_upload_bytes: int = Field(description="Largest image file an upload or image query may carry.")


def short_title(title: str | None) -> str | None:
    """A title short enough to be a query people type: a trailing "(...)" dropped, at most 4 words."""
    if not title:
        return None
    text = _SUFFIX.sub("", " ".join(title.split()))
    if not text or len(text) > 32 or len(text.split()) > 4 or not _LETTER.search(text):
        return None
    return text


def catalog_examples(session: Session, indexed: Any) -> list[str]:
    """Up to 3 category names (largest first) then short titles, one per category in the same order
    (the lowest item id first), so the same catalog always gives the same examples."""
    count = func.count(Item.id)
    categories: list[str] = [
        str(name)
        for name, _ in session.execute(
            select(Item.category, count)
            .where(indexed, Item.category.is_not(None), Item.category != "")
            .group_by(Item.category)
            .order_by(count.desc(), Item.category)
            .limit(MAX_EXAMPLES)
        ).all()
    ]
    examples: list[str] = list(categories[:3])
    scopes: list[Any] = [Item.category == name for name in categories] or [Item.id.is_not(None)]
    per_scope = 1 if categories else MAX_EXAMPLES
    for scope in scopes:
        titles = session.scalars(
            select(Item.title).where(indexed, scope, Item.title.is_not(None)).order_by(Item.id).limit(50)
        ).all()
        taken = 0
        for title in titles:
            text = short_title(title)
            if text and text.casefold() not in {known.casefold() for known in examples}:
                examples.append(text)
                taken += 1
                if taken == per_scope:
                    break
        if len(examples) >= MAX_EXAMPLES:
            break
    return examples[:MAX_EXAMPLES]


def model_notice(state: AppState) -> dict[str, Any]:
    """Decided once per server: the model does not change while it runs."""
    known = state.extras.get("model_notice")
    if known is None:
        model = state.service.model
        demo = is_demo_model(model.fingerprint, model.checkpoint.model.config, state.settings.demo_dir)
        known = {"demo": demo, "note": DEMO_MODEL_NOTE if demo else None}
        state.extras["model_notice"] = known
    return dict(known)


@router.get("/facets", summary="Values to build filters from", response_model=FacetsOut)
async def facets(state: State) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        indexed = Item.status == ItemStatus.INDEXED.value
        with state.catalog.sessions() as session:
            categories = session.scalars(
                select(Item.category)
                .where(indexed, Item.category.is_not(None))
                .distinct()
                .order_by(Item.category)
            ).all()
            brands = session.scalars(
                select(Item.brand).where(indexed, Item.brand.is_not(None)).distinct().order_by(Item.brand)
            ).all()
            low, high, count = session.execute(
                select(func.min(Item.price), func.max(Item.price), func.count(Item.id)).where(indexed)
            ).one()
            examples = catalog_examples(session, indexed)
        return {
            "categories": list(categories)[:MAX_VALUES],
            "brands": list(brands)[:MAX_VALUES],
            "price": {
                "min": str(low) if low is not None else None,
                "max": str(high) if high is not None else None,
            },
            "vqa": state.vqa is not None,
            "items": int(count),
            "examples": examples,
            "model": model_notice(state),
            "max_upload_bytes": state.settings.max_image_bytes,
        }

    return await anyio.to_thread.run_sync(read)  # SQL and, once, a fingerprint: not model work
