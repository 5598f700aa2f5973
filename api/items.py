"""Item endpoints: add (indexed before the response), read, edit, delete, image, thumbnail, ask.

Nothing here blocks the event loop: routes without model work are plain `def` (FastAPI runs them
in its thread pool); the `async` ones await the upload and the inference gate, and run their
catalog reads through `anyio.to_thread`. What may be served, and the checks on the file before it
is, live in `item_files`.
"""

from __future__ import annotations

import io
from enum import IntEnum
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from PIL import Image
from pydantic import BaseModel, Field

from blipsearch.api.deps import AppState, ItemId, app_state, require_read_access, require_write_key
from blipsearch.api.errors import ApiError
from blipsearch.api.item_files import (
    IMAGE_TYPES,
    confirm_present,
    content_disposition,
    image_type,
    open_verified,
)
from blipsearch.api.uploads import read_upload
from blipsearch.images import decode_image
from blipsearch.indexer.items import ItemWriter
from blipsearch.indexer.sources import metadata_from_fields
from blipsearch.search.results import item_summary
from blipsearch.storage.schema import Item

router = APIRouter(prefix="/v1/items", tags=["items"])
State = Annotated[AppState, Depends(app_state)]
Read = [Depends(require_read_access)]
Write = [Depends(require_write_key)]

_CACHE = "public, max-age=86400"


class ThumbnailSize(IntEnum):
    """Longest side of a thumbnail: a few sizes, so the cache stays small and the schema says so."""

    TINY = 64
    SMALL = 128
    MEDIUM = 256
    LARGE = 512


THUMBNAIL_SIZES: tuple[int, ...] = tuple(ThumbnailSize)


def item_json(item: Item, request: Request) -> dict[str, Any]:
    """The service's item summary without the server path, plus state and links by id."""
    summary = item_summary(item)
    summary.pop("source", None)
    return {
        "item_id": item.id,
        **summary,
        "caption": item.caption,
        "status": item.status,
        "error": item.error,
        "image_url": request.app.url_path_for("item_image", item_id=item.id),
        "thumbnail_url": request.app.url_path_for("item_thumbnail", item_id=item.id),
        "created_at": item.created_at.isoformat() if item.created_at else None,
        "updated_at": item.updated_at.isoformat() if item.updated_at else None,
    }


def _item(state: AppState, item_id: int) -> Item:
    found = state.catalog.items_by_ids([item_id])
    if not found:
        raise ApiError(404, "item_not_found", f"There is no item {item_id}.")
    return found[0]


_FIELD_NAMES = {"sku": "external_id"}
"""API field names that differ from the catalog's."""


def _metadata_fields(given: dict[str, Any]) -> dict[str, Any]:
    """API fields under the catalog's names, blanks dropped, for `metadata_from_fields`."""
    return {
        _FIELD_NAMES.get(name, name): value
        for name, value in given.items()
        if not (value is None or (isinstance(value, str) and not value.strip()))
    }


@router.post("", status_code=201, dependencies=Write, summary="Add an item (indexed before this returns)")
async def add_item(
    request: Request,
    state: State,
    file: Annotated[UploadFile, File(description="The image.")],
    sku: Annotated[str | None, Form(max_length=200)] = None,
    title: Annotated[str | None, Form(max_length=2000)] = None,
    description: Annotated[str | None, Form(max_length=20000)] = None,
    category: Annotated[str | None, Form(max_length=200)] = None,
    brand: Annotated[str | None, Form(max_length=200)] = None,
    price: Annotated[str | None, Form(max_length=40)] = None,
    currency: Annotated[str | None, Form(max_length=3)] = None,
    tags: Annotated[str | None, Form(max_length=4000, description="Comma separated.")] = None,
) -> dict[str, Any]:
    data = await read_upload(file, state.settings)
    form = {"sku": sku, "title": title, "description": description, "category": category, "brand": brand}
    form.update(price=price, currency=currency, tags=tags)
    metadata = metadata_from_fields(_metadata_fields(form))
    writer = ItemWriter(state.settings, state.service.model, state.catalog)

    def add() -> int:
        item_id = writer.add(data, metadata, name=file.filename or "the upload")
        state.service.refresh()
        return item_id

    item_id = await state.gate.run(add, write=True)
    return await anyio.to_thread.run_sync(_item_json, state, item_id, request)


def _item_json(state: AppState, item_id: int, request: Request) -> dict[str, Any]:
    return item_json(_item(state, item_id), request)


@router.get("/{item_id}", dependencies=Read, summary="An item's metadata")
def get_item(request: Request, state: State, item_id: ItemId) -> dict[str, Any]:
    return _item_json(state, item_id, request)


class ItemChanges(BaseModel):
    """Fields to change; a field left out keeps its value, null clears it."""

    model_config = {"extra": "forbid"}

    sku: str | None = Field(default=None, max_length=200)
    title: str | None = Field(default=None, max_length=2000)
    description: str | None = Field(default=None, max_length=20000)
    category: str | None = Field(default=None, max_length=200)
    brand: str | None = Field(default=None, max_length=200)
    price: str | float | None = None
    currency: str | None = Field(default=None, max_length=3)
    tags: list[str] | None = None
    attributes: dict[str, str | int | float | bool | None] | None = None


@router.patch("/{item_id}", dependencies=Write, summary="Change an item's metadata")
async def update_item(
    request: Request, state: State, item_id: ItemId, changes: ItemChanges
) -> dict[str, Any]:
    await anyio.to_thread.run_sync(_item, state, item_id)
    given = changes.model_dump(exclude_unset=True)
    # Parsed like a new item's fields; a field given as null or blank is cleared.
    parsed = metadata_from_fields(_metadata_fields(given))
    fields = {name: getattr(parsed, name) for name in (_FIELD_NAMES.get(key, key) for key in given)}
    writer = ItemWriter(state.settings, state.service.model, state.catalog)

    def update() -> None:
        writer.update(item_id, fields)
        state.service.refresh()

    await state.gate.run(update, write=True)
    return await anyio.to_thread.run_sync(_item_json, state, item_id, request)


@router.delete("/{item_id}", status_code=204, dependencies=Write, summary="Delete an item")
async def delete_item(state: State, item_id: ItemId) -> Response:
    await anyio.to_thread.run_sync(_item, state, item_id)
    writer = ItemWriter(state.settings, state.service.model, state.catalog)

    def delete() -> None:
        writer.delete(item_id)
        state.service.refresh()

    await state.gate.run(delete, write=True)
    return Response(status_code=204)


def _open(state: AppState, item: Item, *, at_least: tuple[int, int] | None = None) -> Image.Image:
    """The item's verified picture, decoded with the server's limits; errors name the item, never its path."""
    data = open_verified(state.settings, item).read()
    return decode_image(
        data, max_pixels=state.settings.max_image_pixels, name=f"item {item.id}", at_least=at_least
    ).image


_IMAGE = {"schema": {"type": "string", "format": "binary"}}
_IMAGE_MEDIA_TYPES = sorted({kind.media_type for kind in IMAGE_TYPES.values()})


@router.get(
    "/{item_id}/image",
    name="item_image",
    dependencies=Read,
    summary="The original image",
    response_class=Response,
    responses={200: {"content": {media: _IMAGE for media in _IMAGE_MEDIA_TYPES}}},
)
def item_image(request: Request, state: State, item_id: ItemId) -> Response:
    item = _item(state, item_id)
    kind = image_type(item)
    headers = {
        "Cache-Control": _CACHE,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": content_disposition(item, kind),
    }
    etag = f'"{item.content_hash}"' if item.content_hash else None
    if etag:
        headers["ETag"] = etag
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
    verified = open_verified(state.settings, item)
    headers["Content-Length"] = str(verified.size)
    return StreamingResponse(verified.chunks(), media_type=kind.media_type, headers=headers)


@router.get(
    "/{item_id}/thumbnail",
    name="item_thumbnail",
    dependencies=Read,
    summary="A JPEG thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": _IMAGE}}},
)
def item_thumbnail(
    request: Request,
    state: State,
    item_id: ItemId,
    size: Annotated[ThumbnailSize, Query(description="Longest side in pixels.")] = ThumbnailSize.MEDIUM,
) -> Response:
    """Decoding and resizing is not model work: it runs in the route's worker thread, not the gate."""
    item = _item(state, item_id)
    image_type(item)
    etag = f'"{item.content_hash}-{size}"'
    headers = {
        "Cache-Control": _CACHE,
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="item-{item.id}-{size}.jpg"',
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    cache = state.settings.data_dir / "thumbnails" / f"{item.content_hash or item.id}-{size}.jpg"
    if cache.is_file():
        # A cached thumbnail still answers for the file: gone or swapped, it is not served either.
        confirm_present(state.settings, item)
        return Response(cache.read_bytes(), media_type="image/jpeg", headers=headers)
    image = _open(state, item, at_least=(size, size))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, optimize=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_suffix(".tmp")
    temporary.write_bytes(out.getvalue())
    temporary.replace(cache)
    return Response(out.getvalue(), media_type="image/jpeg", headers=headers)


class Question(BaseModel):
    question: str = Field(min_length=1, max_length=500)


@router.post("/{item_id}/ask", dependencies=Read, summary="Ask a question about an item's image (VQA)")
async def ask(request: Request, state: State, item_id: ItemId, body: Question) -> dict[str, str]:
    if state.vqa is None:
        raise ApiError(404, "vqa_unavailable", "No question-answering model is configured on this server.")
    item = await anyio.to_thread.run_sync(_item, state, item_id)
    vqa = state.vqa

    def answer() -> str:
        return vqa.answer(_open(state, item), body.question)

    return {"answer": await state.gate.run(answer, request=request)}
