"""Generating an item's caption: a write, so it takes the API key and runs behind the model gate.

Searches and item reads only show captions already stored (by the indexer's `--captions` or by
this route); nothing a reader sends makes the server run the captioner or change the catalog.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from blipsearch.api.deps import AppState, ItemId, app_state, require_write_key
from blipsearch.api.errors import ApiError, errors

router = APIRouter(prefix="/v1/items", tags=["items"])
State = Annotated[AppState, Depends(app_state)]


class CaptionOut(BaseModel):
    item_id: int
    caption: str
    generated: bool
    """False when the stored caption was kept (`replace` not set)."""


@router.post(
    "/{item_id}/caption",
    dependencies=[Depends(require_write_key)],
    summary="Generate and store an item's caption",
    responses=errors(401, 403, 404, 409, 503),
)
async def caption_item(
    state: State,
    item_id: ItemId,
    replace: Annotated[bool, Query(description="Replace a caption the item already has.")] = False,
) -> CaptionOut:
    service = state.service

    def work() -> CaptionOut:
        found = service.catalog.items_by_ids([item_id])
        if not found:
            raise ApiError(404, "item_not_found", f"There is no item {item_id}.")
        if found[0].caption and not replace:
            return CaptionOut(item_id=item_id, caption=found[0].caption, generated=False)
        captions = service.captions.caption_items([item_id], replace=True)
        if item_id not in captions:
            raise ApiError(409, "not_captionable", f"The image of item {item_id} could not be decoded.")
        service.refresh()
        return CaptionOut(item_id=item_id, caption=captions[item_id], generated=True)

    return await state.gate.run(work, write=True)
