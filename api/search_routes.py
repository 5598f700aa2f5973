"""Search endpoints: text to images, image to images, image to texts (the facets: api/facets.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, File, Query, Request, UploadFile

from blipsearch.api.deps import AppState, ItemId, app_state, require_read_access
from blipsearch.api.errors import ApiError
from blipsearch.api.search_schema import SORT_DESCRIPTION, SearchPageOut, SearchQueryIn
from blipsearch.api.uploads import read_upload
from blipsearch.search.filter_objects import conditions_from_objects
from blipsearch.search.filters import parse_filters
from blipsearch.search.results import SearchOptions, SearchPage, SortKey

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


@router.get("/search", summary="Text to images, or browse by filters", response_model=SearchPageOut)
async def search_text(
    request: Request,
    state: State,
    options: Options,
    q: Annotated[
        str | None,
        Query(description="What to look for, in words. Empty or absent with a filter: browse the matches."),
    ] = None,
    sort: Annotated[SortKey, Query(description=SORT_DESCRIPTION)] = "relevance",
) -> dict[str, Any]:
    return await _text_or_browse(request, state, q, replace(options, sort=sort))


@router.post(
    "/search/query", summary="Text to images or browse, filters as JSON objects", response_model=SearchPageOut
)
async def search_query(request: Request, state: State, body: SearchQueryIn) -> dict[str, Any]:
    """The same answer as GET /v1/search; each filter is `{"field", "op", "value"}` and its value is
    never read as filter grammar, so commas and operators inside a value are fine."""
    options = SearchOptions(
        k=body.k,
        offset=body.offset,
        rerank=body.rerank,
        rerank_k=body.rerank_k,
        filters=conditions_from_objects([spec.model_dump() for spec in body.filters]),
        mode=body.mode,
        sort=body.sort,
    )
    return await _text_or_browse(request, state, body.q, options)


async def _text_or_browse(
    request: Request, state: AppState, q: str | None, options: SearchOptions
) -> dict[str, Any]:
    """A query searches; no query (absent, empty or blanks) with filters browses; neither is a 400."""
    if q is not None and len(q) > state.settings.max_query_chars:
        raise ApiError(
            400, "query_too_long", f"The query is over {state.settings.max_query_chars} characters."
        )
    if q is not None and q.strip():
        page = await state.gate.run(state.service.text_to_images, q, options, request=request)
    elif options.filters:
        # SQL only: no need to queue behind model work
        page = await anyio.to_thread.run_sync(state.service.browse, options)
    else:
        raise ApiError(400, "query_required", "Give a query (q), at least one filter to browse by, or both.")
    return page_json(page, request)


@router.post("/search/image", summary="Image to images (upload)", response_model=SearchPageOut)
async def search_image(
    request: Request, state: State, options: Options, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    data = await read_upload(file, state.settings)
    page = await state.gate.run(lambda: state.service.image_to_images(data, options=options), request=request)
    return page_json(page, request)


@router.post("/search/texts", summary="Image to the catalog's texts (upload)", response_model=SearchPageOut)
async def search_texts(
    request: Request, state: State, options: Options, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    data = await read_upload(file, state.settings)
    page = await state.gate.run(lambda: state.service.image_to_texts(data, options=options), request=request)
    return page_json(page, request)


@router.get("/items/{item_id}/similar", summary="More like this item", response_model=SearchPageOut)
async def similar(request: Request, state: State, options: Options, item_id: ItemId) -> dict[str, Any]:
    page = await state.gate.run(
        lambda: state.service.image_to_images(item_id=item_id, options=options), request=request
    )
    return page_json(page, request)


@router.get(
    "/items/{item_id}/texts",
    summary="The catalog texts closest to this item's image",
    response_model=SearchPageOut,
)
async def item_texts(request: Request, state: State, options: Options, item_id: ItemId) -> dict[str, Any]:
    page = await state.gate.run(
        lambda: state.service.image_to_texts(item_id=item_id, options=options), request=request
    )
    return page_json(page, request)
