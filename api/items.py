"""Item endpoints: add (indexed before the response), read, edit, delete, image, thumbnail, ask."""

from __future__ import annotations

import io
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import anyio
from blipsearch.api.deps import AppState, ItemId, app_state, require_read_access, require_write_key
from blipsearch.api.errors import ApiError
from blipsearch.api.uploads import read_upload
from blipsearch.indexer.items import ItemWriter
from blipsearch.indexer.sources import metadata_from_fields
from blipsearch.search.service import item_summary
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from PIL import Image
from pydantic import BaseModel, Field

from blipsearch.images import open_image
from blipsearch.storage.schema import Item

router = APIRouter(prefix="/v1/items", tags=["items"])
State = Annotated[AppState, Depends(app_state)]
Read = [Depends(require_read_access)]
Write = [Depends(require_write_key)]

_MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
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

    item_id = await state.gate.run(add)
    return item_json(_item(state, item_id), request)


@router.get("/{item_id}", dependencies=Read, summary="An item's metadata")
async def get_item(request: Request, state: State, item_id: ItemId) -> dict[str, Any]:
    return item_json(_item(state, item_id), request)


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
    _item(state, item_id)
    given = changes.model_dump(exclude_unset=True)
    # Parsed like a new item's fields; a field given as null or blank is cleared.
    parsed = metadata_from_fields(_metadata_fields(given))
    fields = {name: getattr(parsed, name) for name in (_FIELD_NAMES.get(key, key) for key in given)}
    writer = ItemWriter(state.settings, state.service.model, state.catalog)

    def update() -> None:
        writer.update(item_id, fields)
        state.service.refresh()

    await state.gate.run(update)
    return item_json(_item(state, item_id), request)


@router.delete("/{item_id}", status_code=204, dependencies=Write, summary="Delete an item")
async def delete_item(state: State, item_id: ItemId) -> Response:
    _item(state, item_id)
    writer = ItemWriter(state.settings, state.service.model, state.catalog)

    def delete() -> None:
        writer.delete(item_id)
        state.service.refresh()

    await state.gate.run(delete)
    return Response(status_code=204)


def _file_of(item: Item) -> Path:
    path = Path(item.source)
    if not path.is_file():
        raise ApiError(404, "image_missing", f"The image file of item {item.id} is no longer there.")
    return path


def _open(state: AppState, item: Item, *, at_least: tuple[int, int] | None = None) -> Image.Image:
    """The item's picture, with the server's limits; errors name the item, never its path."""
    settings = state.settings
    return open_image(
        _file_of(item),
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        name=f"item {item.id}",
        at_least=at_least,
    )


_IMAGE = {"schema": {"type": "string", "format": "binary"}}


@router.get(
    "/{item_id}/image",
    name="item_image",
    dependencies=Read,
    summary="The original image",
    response_class=Response,
    responses={200: {"content": {media: _IMAGE for media in sorted(set(_MEDIA_TYPES.values()))}}},
)
async def item_image(request: Request, state: State, item_id: ItemId) -> Response:
    item = _item(state, item_id)
    etag = f'"{item.content_hash}"' if item.content_hash else None
    if etag and request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": _CACHE})
    headers = {"Cache-Control": _CACHE, "X-Content-Type-Options": "nosniff"}
    if etag:
        headers["ETag"] = etag
    return FileResponse(
        _file_of(item),
        media_type=_MEDIA_TYPES.get(item.format or "", "application/octet-stream"),
        headers=headers,
    )


@router.get(
    "/{item_id}/thumbnail",
    name="item_thumbnail",
    dependencies=Read,
    summary="A JPEG thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": _IMAGE}}},
)
async def item_thumbnail(
    request: Request,
    state: State,
    item_id: ItemId,
    size: Annotated[ThumbnailSize, Query(description="Longest side in pixels.")] = ThumbnailSize.MEDIUM,
) -> Response:
    item = _item(state, item_id)
    etag = f'"{item.content_hash}-{size}"'
    headers = {"Cache-Control": _CACHE, "ETag": etag, "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    cache = state.settings.data_dir / "thumbnails" / f"{item.content_hash or item.id}-{size}.jpg"

    if cache.is_file():  # served without waiting behind model work
        return Response(cache.read_bytes(), media_type="image/jpeg", headers=headers)

    def render() -> bytes:
        image = _open(state, item, at_least=(size, size))
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85, optimize=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache.with_suffix(".tmp")
        temporary.write_bytes(out.getvalue())
        temporary.replace(cache)
        return out.getvalue()

    # Decoding and resizing is not model work: its own worker threads, not the inference gate.
    return Response(await anyio.to_thread.run_sync(render), media_type="image/jpeg", headers=headers)


class Question(BaseModel):
    question: str = Field(min_length=1, max_length=500)


@router.post("/{item_id}/ask", dependencies=Read, summary="Ask a question about an item's image (VQA)")
async def ask(state: State, item_id: ItemId, body: Question) -> dict[str, str]:
    if state.vqa is None:
        raise ApiError(404, "vqa_unavailable", "No question-answering model is configured on this server.")
    item = _item(state, item_id)
    vqa = state.vqa

    def answer() -> str:
        return vqa.answer(_open(state, item), body.question)

    return {"answer": await state.gate.run(answer)}
