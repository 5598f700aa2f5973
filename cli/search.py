"""`blipsearch search` and `blipsearch describe`: the query service from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from blipsearch.cli.context import session
from blipsearch.cli.options import CatalogUrlOpt, DataDirOpt, IndexedModelOpt, JsonOpt, print_json
from blipsearch.cli.output import shorten_paths, stdout_is_terminal, write_lines

console = Console()


def search(
    ctx: typer.Context,
    query: Annotated[
        str | None,
        typer.Argument(
            help="What to look for, in words (omit with --image or --item, or to browse by --filter)."
        ),
    ] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Find images like this image file.")] = None,
    item: Annotated[int | None, typer.Option("--item", help="Find images like this catalog item.")] = None,
    texts: Annotated[
        bool, typer.Option("--texts", help="With --image/--item: return the catalog's closest texts instead.")
    ] = False,
    k: Annotated[int, typer.Option("-k", "--k", help="Results per page.")] = 10,
    offset: Annotated[int, typer.Option("--offset", help="Skip this many results (pagination).")] = 0,
    rerank_k: Annotated[
        int | None, typer.Option("--rerank-k", help="ITM re-ranks this many ITC candidates.")
    ] = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Pure ITC order, no ITM.")] = False,
    caption: Annotated[
        bool, typer.Option("--caption", help="Show captions, generating and storing those missing.")
    ] = False,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter", "-f", help="FIELD=VALUE, FIELD<=NUMBER, FIELD in A,B ... (repeatable; all must hold)."
        ),
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="Text queries: vector, keyword or hybrid (default: setting).")
    ] = None,
    sort: Annotated[
        str,
        typer.Option(
            "--sort",
            help="relevance, price_asc, price_desc (no price last) or newest; text queries and browsing.",
        ),
    ] = "relevance",
    include_noisy: Annotated[
        bool, typer.Option("--include-noisy", help="With --texts: also texts CapFilt marked noisy.")
    ] = False,
    data_dir: DataDirOpt = None,
    database_url: CatalogUrlOpt = None,
    model: IndexedModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the index: text to images, image to images (--image, --item), image to texts (--texts).

    Browse: --filter with no query lists the matching items (newest first, or --sort).

    Examples: `blipsearch search "a red dress" -f category=dresses -f "price<=50" --sort price_asc`,
    `blipsearch search -f category=shoes --sort newest`, `blipsearch search --image photo.jpg`,
    `blipsearch search --item 42 --texts`.
    """
    from blipsearch.errors import InvalidInputError
    from blipsearch.images import read_image_file
    from blipsearch.search.filters import parse_filters
    from blipsearch.search.results import SearchOptions
    from blipsearch.search.service import SearchService

    if query is not None and not query.strip():
        query = None  # an empty query with filters browses
    browsing = query is None and image is None and item is None and bool(filters)
    given = sum(value is not None for value in (query, image, item))
    if given != 1 and not browsing:
        raise InvalidInputError(
            "Give exactly one of: a text query, --image FILE, or --item ID (or only --filter to browse)."
        )
    if texts and (query is not None or browsing):
        raise InvalidInputError("--texts looks up texts for an image: use it with --image or --item.")
    if sort != "relevance" and (image is not None or item is not None):
        raise InvalidInputError("--sort applies to text queries and browsing, not to --image or --item.")
    options = SearchOptions(
        k=k,
        offset=offset,
        rerank=False if no_rerank else None,
        rerank_k=rerank_k,
        generate_captions=caption,
        filters=parse_filters(filters or []),
        mode=mode,
        include_noisy=include_noisy,
        sort=sort,  # the service validates it
    )
    settings = session(ctx).settings(data_dir=data_dir, database_url=database_url, retrieval_model=model)
    service = SearchService.open(settings)
    try:
        data = (
            read_image_file(image, max_bytes=settings.max_image_bytes, name=str(image))
            if image is not None
            else None
        )
        if browsing:
            page = service.browse(options)
        elif query is not None:
            page = service.text_to_images(query, options)
        elif texts:
            page = service.image_to_texts(data, item_id=item, options=options)
        else:
            page = service.image_to_images(data, item_id=item, options=options)
    finally:
        service.close()
    result = page.as_dict()
    if as_json:
        print_json(result)
        return
    _print_page(result, texts=texts, caption=caption)


def _print_page(result: dict[str, Any], *, texts: bool, caption: bool) -> None:
    hits = result["hits"]
    if not hits:
        empty = "No results. (Is anything indexed? `blipsearch index status` tells.)"
        if stdout_is_terminal():
            console.print(empty)
        else:
            _write_hit_lines([], [], texts=texts, caption=caption)
            sys.stderr.write(empty + "\n")
        return
    sources, root = shorten_paths([str(hit.get("source") or "") for hit in hits])
    timings = ", ".join(f"{key} {value} ms" for key, value in result["timings_ms"].items())
    more = f"; next page: --offset {result['next_offset']}" if result["next_offset"] is not None else ""
    total = result.get("total")
    counted = f"{'' if total['exact'] else 'at least '}{total['value']} results, " if total else ""
    ordered = f"mode {result['mode']}, sort {result['sort']}, re-ranked: {result['reranked']}"
    summary = f"{counted}{ordered}; {timings}{more}"
    notes = [summary, *([f"paths relative to {root}"] if root else [])]
    if not stdout_is_terminal():
        _write_hit_lines(hits, sources, texts=texts, caption=caption)
        for note in notes:
            sys.stderr.write(note + "\n")
        return
    console.print(hits_table(hits, sources, texts=texts, caption=caption, width=console.width))
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)


def _score(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else ""


def _write_hit_lines(hits: list[dict[str, Any]], sources: list[str], *, texts: bool, caption: bool) -> None:
    last = (
        ["kind", "text"] if texts else ["exact", "source", "sku", "title", *(["caption"] if caption else [])]
    )
    rows = []
    for hit, source in zip(hits, sources, strict=True):
        tail = (
            [hit["kind"], hit["text"]]
            if texts
            else [
                "exact" if hit.get("exact") else "",
                source,
                hit.get("sku"),
                hit.get("title"),
                *([hit.get("caption")] if caption else []),
            ]
        )
        rows.append(
            [hit["rank"], hit["item_id"], _score(hit.get("itc_score")), _score(hit.get("itm_score")), *tail]
        )
    write_lines(["rank", "item_id", "itc_score", "itm_score", *last], rows)


def hits_table(
    hits: list[dict[str, Any]], sources: list[str], *, texts: bool, caption: bool, width: int
) -> Table:
    """The terminal's table, sized so that numbers and paths are never broken across lines: a path
    too long for the terminal is cut at its end with an ellipsis, and only the free text wraps."""
    cells = []
    for hit, source in zip(hits, sources, strict=True):
        details = ["exact match"] if hit.get("exact") else []
        details += [
            str(value)
            for value in (hit.get("sku"), hit.get("title"), hit.get("brand"), hit.get("price"))
            if value
        ]
        if caption and hit.get("caption"):
            details.append(f"caption: {hit['caption']}")
        cells.append(
            [
                str(hit["rank"]),
                str(hit["item_id"]),
                _score(hit.get("itc_score")),
                _score(hit.get("itm_score")),
                f"[{hit['kind']}] {hit['text']}" if texts else source,
                " | ".join(details),
            ]
        )
    names = ["#", "item", "ITC", "ITM", "text" if texts else "source", "details"]
    widths = [max(len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(names)]
    free = width - (3 * len(names) + 1) - sum(widths[:4])
    table = Table(show_lines=False)
    for name, column_width in zip(names[:4], widths[:4], strict=True):
        table.add_column(name, no_wrap=True, width=column_width, justify="right" if name != "#" else "left")
    if texts:
        table.add_column(names[4], overflow="fold", ratio=1)
        table.add_column(names[5], overflow="fold", ratio=1)
    else:
        details_width = min(widths[5], 10)
        source_width = max(min(widths[4], free - details_width), 12)
        table.add_column(names[4], no_wrap=True, overflow="ellipsis", width=source_width)
        table.add_column(names[5], overflow="fold", min_width=min(details_width, max(free - source_width, 1)))
    for row in cells:
        table.add_row(*row)
    return table


def describe(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="An image file.")],
    k: Annotated[int, typer.Option("-k", "--k", help="How many catalog texts to show.")] = 5,
    data_dir: DataDirOpt = None,
    database_url: CatalogUrlOpt = None,
    model: IndexedModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Caption an image and show the catalog texts (titles, descriptions, captions) closest to it."""
    from blipsearch.images import open_image
    from blipsearch.search.results import SearchOptions
    from blipsearch.search.service import SearchService

    settings = session(ctx).settings(data_dir=data_dir, database_url=database_url, retrieval_model=model)
    picture = open_image(image, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    service = SearchService.open(settings)
    try:
        caption = service.caption([picture])[0]
        page = service.image_to_texts(picture, options=SearchOptions(k=k))
    finally:
        service.close()
    result = {"image": str(image), "caption": caption, "texts": page.as_dict()["hits"]}
    if as_json:
        print_json(result)
        return
    console.print(f"caption: {caption}", highlight=False)
    _print_page(page.as_dict(), texts=True, caption=False)
