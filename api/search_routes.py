"""Search endpoints: text to images, image to images, image to texts (the facets: api/facets.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile

from blipsearch.api.deps import AppState, ItemId, app_state, require_read_access
from blipsearch.api.errors import ApiError
from blipsearch.api.search_schema import SearchPageOut
from blipsearch.api.uploads import read_upload
from blipsearch.search.filters import parse_filters
from blipsearch.search.results import SearchOptions, SearchPage

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_read_access)])

State = Annotated[AppState, Depends(app_state)]


def page_options(
    k: Annotated[int, Query(ge=1, le=10_000, description="Results per page (at most max_k).")] = 10,
    offset: Annotated[int, Query(ge=0, description="Results to skip.")] = 0,
    rerank: Annotated[
        bool | None, Query(description="Re-rank text queries with ITM (default: setting).")
    ] = None,
    rerank_k: Annotated[int | None, Query(ge=1, le=1000, description="ITM shortlist size.")] = None,
    mode: Annotated[
        str | None, Query(pattern="^(vector|keyword|hybrid)$", description="Text query mode.")
    ] = None,
    filter: Annotated[
        list[str] | None,
        Query(
            description="FIELD=VALUE, FIELD<=N, FIELD in A,B (repeatable; all hold; an empty one is a 400)."
        ),
    ] = None,
    include_noisy: Annotated[
        bool, Query(description="Image-to-text: also return texts CapFilt marked noisy.")
    ] = False,
) -> SearchOptions:
    return SearchOptions(
        k=k,
        offset=offset,
        rerank=rerank,
        rerank_k=rerank_k,
        filters=parse_filters(filter or []),
        mode=mode,
        include_noisy=include_noisy,
    )


Options = Annotated[SearchOptions, Depends(page_options)]


def page_json(page: SearchPage, request: Request) -> dict[str, Any]:
    """The service's page, with image links by item id (never a server path)."""
    request.app.state.blip.extras["metrics"].observe_stages(page.timings)
    data = page.as_dict()
    for hit in data["hits"]:
        hit.pop("source", None)
        hit["image_url"] = request.app.url_path_for("item_image", item_id=hit["item_id"])
        hit["thumbnail_url"] = request.app.url_path_for("item_thumbnail", item_id=hit["item_id"])
    return data


@router.get("/search", summary="Text to images", response_model=SearchPageOut)
async def search_text(
    request: Request,
    state: State,
    options: Options,
    q: Annotated[str, Query(min_length=1, description="What to look for, in words.")],
) -> dict[str, Any]:
    if len(q) > state.settings.max_query_chars:
        raise ApiError(
            400, "query_too_long", f"The query is over {state.settings.max_query_chars} characters."
        )
    page = await state.gate.run(state.service.text_to_images, q, options)
    return page_json(page, request)


@router.post("/search/image", summary="Image to images (upload)", response_model=SearchPageOut)
async def search_image(
    request: Request, state: State, options: Options, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    data = await read_upload(file, state.settings)
    page = await state.gate.run(lambda: state.service.image_to_images(data, options=options))
    return page_json(page, request)


@router.post("/search/texts", summary="Image to the catalog's texts (upload)", response_model=SearchPageOut)
async def search_texts(
    request: Request, state: State, options: Options, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    data = await read_upload(file, state.settings)
    page = await state.gate.run(lambda: state.service.image_to_texts(data, options=options))
    return page_json(page, request)


@router.get("/items/{item_id}/similar", summary="More like this item", response_model=SearchPageOut)
async def similar(request: Request, state: State, options: Options, item_id: ItemId) -> dict[str, Any]:
    page = await state.gate.run(lambda: state.service.image_to_images(item_id=item_id, options=options))
    return page_json(page, request)


@router.get(
    "/items/{item_id}/texts",
    summary="The catalog texts closest to this item's image",
    response_model=SearchPageOut,
)
async def item_texts(request: Request, state: State, options: Options, item_id: ItemId) -> dict[str, Any]:
    page = await state.gate.run(lambda: state.service.image_to_texts(item_id=item_id, options=options))
    return page_json(page, request)
