"""Item endpoints: add (indexed before the response), read, edit, delete, image, thumbnail, ask."""

from __future__ import annotations

import io
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import anyio
from blipsearch.api.deps import AppState, ItemId, app_state, require_read_access, require_write_key
from blipsearch.api.errors import ApiError
from blipsearch.api.uploads import read_upload
from blipsearch.indexer.items import ItemWriter
from blipsearch.search.service import item_summary
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from PIL import Image
from pydantic import BaseModel, Field

from blipsearch.errors import InvalidInputError
from blipsearch.images import decode_image, read_image_file
from blipsearch.storage.catalog import ItemMetadata
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
THUMBNAIL_SIZES = (64, 128, 256, 512)


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


def _price(value: str | None) -> Decimal | None:
    if value is None or not value.strip():
        return None
    try:
        price = Decimal(value.strip())
    except InvalidOperation:
        raise ApiError(400, "invalid_input", f"price must be a number, not {value!r}.") from None
    if not price.is_finite() or price < 0:
        raise ApiError(400, "invalid_input", "price must be a finite number of at least 0.")
    return price.quantize(Decimal("0.01"))


def _tags(value: str | list[str] | None) -> tuple[str, ...]:
    parts = value if isinstance(value, list) else (value or "").split(",")
    return tuple(sorted({part.strip().lower() for part in parts if part and part.strip()}))


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
    metadata = ItemMetadata(
        external_id=sku or None,
        title=title or None,
        description=description or None,
        category=category or None,
        brand=brand or None,
        price=_price(price),
        currency=(currency or None) and currency.upper(),
        tags=_tags(tags),
    )
    writer = ItemWriter(state.settings, state.service.model, state.catalog)

    def add() -> int:
        try:
            item_id = writer.add(data, metadata, name=file.filename or "the upload")
        except InvalidInputError as exc:
            if "already belongs" in str(exc):
                raise ApiError(409, "sku_conflict", str(exc)) from None
            raise
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
    fields: dict[str, object] = {}
    for name, value in given.items():
        if name == "sku":
            fields["external_id"] = value or None
        elif name == "price":
            fields["price"] = _price(None if value is None else str(value))
        elif name == "tags":
            fields["tags"] = _tags(value)
        elif name == "attributes":
            fields["attributes"] = value or {}
        elif name == "currency":
            fields["currency"] = value.upper() if value else None
        else:
            fields[name] = value or None
    writer = ItemWriter(state.settings, state.service.model, state.catalog)

    def update() -> None:
        try:
            writer.update(item_id, fields)
        except InvalidInputError as exc:
            if "already belongs" in str(exc):
                raise ApiError(409, "sku_conflict", str(exc)) from None
            raise
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


@router.get("/{item_id}/image", name="item_image", dependencies=Read, summary="The original image")
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


@router.get("/{item_id}/thumbnail", name="item_thumbnail", dependencies=Read, summary="A JPEG thumbnail")
async def item_thumbnail(
    request: Request,
    state: State,
    item_id: ItemId,
    size: Annotated[int, Query(description=f"Longest side: one of {THUMBNAIL_SIZES}.")] = 256,
) -> Response:
    if size not in THUMBNAIL_SIZES:
        raise ApiError(400, "invalid_input", f"size must be one of {', '.join(map(str, THUMBNAIL_SIZES))}.")
    item = _item(state, item_id)
    etag = f'"{item.content_hash}-{size}"'
    headers = {"Cache-Control": _CACHE, "ETag": etag, "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    cache = state.settings.data_dir / "thumbnails" / f"{item.content_hash or item.id}-{size}.jpg"

    if cache.is_file():  # served without waiting behind model work
        return Response(cache.read_bytes(), media_type="image/jpeg", headers=headers)

    def render() -> bytes:
        data = read_image_file(_file_of(item), max_bytes=state.settings.max_image_bytes)
        image = decode_image(
            data, max_pixels=state.settings.max_image_pixels, name=f"item {item.id}", at_least=(size, size)
        ).image
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
        data = read_image_file(_file_of(item), max_bytes=state.settings.max_image_bytes)
        image = decode_image(data, max_pixels=state.settings.max_image_pixels, name=f"item {item.id}").image
        return vqa.answer(image, body.question)

    return {"answer": await state.gate.run(answer)}
