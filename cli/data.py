"""`blipsearch data`: build demo and training data from freely licensed sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()

data_app = typer.Typer(
    help="Build demo catalogs and image-caption sets from freely licensed data.", no_args_is_help=True
)


def default_npm_cache() -> Path:
    """Outside the output folder, so deleting and rebuilding the output needs no new download."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "blipsearch" / "npm"


@data_app.command("emoji")
def emoji(
    out_dir: Annotated[Path, typer.Argument(help="Folder for images, caption files, catalog and licences.")],
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Where the npm tarballs are kept (default ~/.cache/blipsearch/npm)."),
    ] = None,
    styles: Annotated[
        str,
        typer.Option(
            "--styles", help="Comma-separated: google (Noto, Apache-2.0), twitter (Twemoji, CC-BY-4.0)."
        ),
    ] = "google,twitter",
    size: Annotated[int, typer.Option("--size", min=8, help="Output image side in pixels.")] = 64,
    augment: Annotated[
        int,
        typer.Option(
            "--augment", min=0, help="Extra augmented copies per emoji (scale, position, background)."
        ),
    ] = 0,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Only the first N emoji (the same ones in every style)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds caption order, augmentation and prices.")] = 0,
    catalog: Annotated[
        bool, typer.Option("--catalog", help="Also write catalog.csv for `blipsearch index`.")
    ] = False,
    skin_tones: Annotated[bool, typer.Option("--skin-tones", help="Include skin-tone variants.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Emoji caption sets (one BLIP JSON per style) and a demo catalog from Noto and Twemoji PNGs."""
    from blipsearch.train.emoji import build_emoji_data

    summary = build_emoji_data(
        out_dir,
        cache=cache if cache is not None else default_npm_cache(),
        styles=[s.strip() for s in styles.split(",") if s.strip()],
        size=size,
        augment=augment,
        limit=limit,
        seed=seed,
        catalog=catalog,
        include_skin_tones=skin_tones,
    )
    if as_json:
        print(json.dumps(summary.as_dict(), indent=2))
        return
    for style in summary.styles:
        console.print(
            f"{style.brand} ({style.style}): {style.written} of {style.available} emoji, "
            f"{style.images} images, captions in {out_dir / style.caption_file}",
            highlight=False,
        )
    if summary.catalog:
        console.print(f"catalog: {summary.catalog} ({summary.catalog_rows} rows)", highlight=False)
    console.print(f"licences: {summary.licences}  ({summary.seconds:.1f} s)", highlight=False)
