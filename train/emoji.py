"""`blipsearch data emoji`: demo and training data sets from the pinned emoji packages.

Outputs (see `build_emoji_data`): per style a folder of composited PNGs and a BLIP-style caption
file (`[{"image", "caption": [...]}]`, read by `search.caption_sets.load_caption_set`) plus the same
pairs as an `image<TAB>caption` TSV for `blipsearch train`, so "train on Noto, measure on Twemoji"
is two files; optionally a CSV product manifest for `blipsearch index`;
and always a LICENSES.txt with the attribution the licences require.
"""

from __future__ import annotations

import csv
import io
import json
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.train.emoji_packages import (
    PACKAGES,
    SOURCE_IMAGE_SIZE,
    EmojiArchive,
    EmojiPackage,
    fetch_package,
)
from blipsearch.train.emoji_records import (
    EmojiRecord,
    caption_words,
    captions_for,
    parse_records,
    with_article,
)

DEFAULT_STYLES = ("google", "twitter")


def compose(
    png: bytes,
    size: int,
    *,
    rng: random.Random | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """The emoji flattened onto an opaque background, as an RGB image of `size` x `size`.

    Image encoders expect RGB; pasting the alpha channel onto a plain background avoids the black
    fringes a bare RGBA-to-RGB conversion gives. With `rng`, the scale (50-100 %), position and a
    light background colour vary, so that a model cannot key on the exact pixel layout.
    """
    with Image.open(io.BytesIO(png)) as opened:
        emoji = opened.convert("RGBA")
    scale = 1.0
    colour = background
    if rng is not None:
        scale = rng.uniform(0.5, 1.0)
        colour = (rng.randint(160, 255), rng.randint(160, 255), rng.randint(160, 255))
    side = max(1, round(size * scale))
    emoji = emoji.resize((side, side), Image.Resampling.LANCZOS)
    left = top = (size - side) // 2
    if rng is not None:
        left = rng.randint(0, size - side)
        top = rng.randint(0, size - side)
    canvas = Image.new("RGB", (size, size), colour)
    canvas.paste(emoji, (left, top), emoji)
    return canvas


@dataclass(frozen=True)
class CaptionEntry:
    image: str
    """Path relative to the output folder (where the caption file lies)."""
    captions: tuple[str, ...]
    record: EmojiRecord
    augmented: bool = False


def write_caption_set(
    out: Path,
    records: Sequence[EmojiRecord],
    images: dict[str, bytes],
    *,
    size: int = SOURCE_IMAGE_SIZE,
    augment: int = 0,
    seed: int = 0,
) -> list[CaptionEntry]:
    """Write one style's images under `out/images/<style>/`, `out/<style>.json` and `.tsv`.

    Each emoji gets one plain image plus `augment` seeded variants with the same captions. The
    variants' randomness is keyed by (seed, style, code, variant), so an image does not change when
    `--limit` or the other styles change.
    """
    if not records:
        return []
    style = records[0].style
    folder = out / "images" / style
    folder.mkdir(parents=True, exist_ok=True)
    entries: list[CaptionEntry] = []
    for record in records:
        png = images[record.image]
        captions = tuple(captions_for(record, seed))
        stem = record.unified.lower()
        variants: list[tuple[str, random.Random | None]] = [(f"{stem}.png", None)]
        for k in range(1, augment + 1):
            variants.append(
                (f"{stem}_aug{k}.png", random.Random(f"augment:{seed}:{style}:{record.unified}:{k}"))
            )
        for file_name, rng in variants:
            try:
                image = compose(png, size, rng=rng)
            except OSError as exc:
                raise InvalidInputError(f"{style}/{record.image} is not a readable PNG ({exc}).") from None
            image.save(folder / file_name, format="PNG", optimize=False)
            entries.append(
                CaptionEntry(
                    image=f"images/{style}/{file_name}",
                    captions=captions,
                    record=record,
                    augmented=rng is not None,
                )
            )
    payload = [{"image": e.image, "caption": list(e.captions)} for e in entries]
    # The same pairs as `image<TAB>caption` lines: the format `blipsearch train` reads.
    tsv = "".join(f"{e.image}\t{caption}\n" for e in entries for caption in e.captions)
    (out / f"{style}.tsv").write_text(tsv, encoding="utf-8")
    (out / f"{style}.json").write_text(
        json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    return entries


# --------------------------------------------------------------------------- catalog and licences

CATALOG_COLUMNS = ("image", "sku", "title", "description", "category", "brand", "price", "currency", "tags")


def price_for(sku: str, seed: int = 0) -> str:
    """A stable pseudo-random price, so price filters and sorting have something to work on."""
    cents = random.Random(f"price:{seed}:{sku}").randint(99, 4999)
    return f"{cents / 100:.2f}"


def write_catalog(
    path: Path,
    entries: Iterable[CaptionEntry],
    *,
    seed: int = 0,
    packages: dict[str, EmojiPackage] | None = None,
) -> int:
    """A CSV product manifest of the plain images that `blipsearch index` ingests."""
    rows = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CATALOG_COLUMNS)
        writer.writeheader()
        for entry in entries:
            if entry.augmented:
                continue
            record = entry.record
            known = packages if packages is not None else PACKAGES
            brand = known[record.style].brand if record.style in known else record.style
            sku = f"{brand.upper()}-{record.unified}"
            tags = dict.fromkeys(t for t in [caption_words(record.subcategory), *record.short_names] if t)
            category = caption_words(record.category)
            writer.writerow(
                {
                    "image": entry.image,
                    "sku": sku,
                    "title": f"{record.name.capitalize()} ({brand})",
                    "description": f"{with_article(record.name).capitalize()} emoji in the {brand} style"
                    + (f", from {with_article(category)} set" if category else "")
                    + ".",
                    "category": record.category,
                    "brand": brand,
                    "price": price_for(sku, seed),
                    "currency": "USD",
                    "tags": "|".join(t.replace("|", " ") for t in tags),
                }
            )
            rows += 1
    return rows


def write_licenses(out: Path, styles: Iterable[str], packages: dict[str, EmojiPackage] | None = None) -> Path:
    """LICENSES.txt for what was written: the images' licences and the attribution CC-BY requires."""
    lines = [
        "Licences of the generated emoji data",
        "=====================================",
        "",
        "The images in this folder are derived (resized, composited onto a background) from the",
        "npm packages listed below. Redistribution must keep this notice.",
        "",
    ]
    for style in styles:
        package = (packages if packages is not None else PACKAGES)[style]
        lines += [
            f"images/{style}/  ({package.brand}, from {package.spec}, {package.integrity[:23]}...)",
            f"  Licence: {package.licence}",
            f"  Attribution: {package.attribution}",
            "",
        ]
    lines += [
        "Names, short names and categories (the captions, titles and tags) come from emoji-data",
        "(https://github.com/iamcal/emoji-data) by Cal Henderson, MIT licence.",
        "",
    ]
    path = out / "LICENSES.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the whole job


@dataclass
class StyleSummary:
    style: str
    brand: str
    available: int
    """Emoji of this style in the package (after skipping skin tones and missing images)."""
    written: int
    images: int
    caption_file: str


@dataclass
class EmojiDataSummary:
    out: str
    styles: list[StyleSummary]
    catalog: str | None
    catalog_rows: int
    licences: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "styles": [vars(s) for s in self.styles],
            "catalog": self.catalog,
            "catalog_rows": self.catalog_rows,
            "licences": self.licences,
            "seconds": round(self.seconds, 2),
        }


def build_emoji_data(
    out: Path,
    *,
    cache: Path,
    styles: Sequence[str] = DEFAULT_STYLES,
    size: int = SOURCE_IMAGE_SIZE,
    augment: int = 0,
    limit: int | None = None,
    seed: int = 0,
    catalog: bool = False,
    include_skin_tones: bool = False,
    packages: dict[str, EmojiPackage] | None = None,
    npm: str = "npm",
) -> EmojiDataSummary:
    """Fetch (or reuse) the packages, then write caption sets, the optional catalog and licences.

    With `limit`, the same first emoji (in the package's sort order) are taken in every style, so
    the sets stay comparable across styles.
    """
    started = time.monotonic()
    known = {k: v for k, v in (packages if packages is not None else PACKAGES).items() if not v.images_at}
    unknown = [s for s in styles if s not in known]
    if unknown or not styles:
        raise InvalidInputError(
            f"Unknown emoji style(s) {', '.join(unknown) or '(none)'}; use {', '.join(known)} "
            "(code-point-only sets such as EmojiOne have no names of their own and only train)."
        )
    if size < 8:
        raise InvalidInputError("--size must be at least 8 pixels.")
    if augment < 0:
        raise InvalidInputError("--augment must not be negative.")
    per_style: dict[str, tuple[list[EmojiRecord], dict[str, bytes]]] = {}
    available: dict[str, int] = {}
    for style in styles:
        tarball = fetch_package(known[style], cache, npm=npm)
        archive = EmojiArchive.read(tarball, style)
        records = parse_records(archive.entries, style, archive.images, include_skin_tones=include_skin_tones)
        per_style[style] = (records, archive.images)
        available[style] = len(records)
    if limit is not None:
        common = set.intersection(*({r.unified for r in recs} for recs, _ in per_style.values()))
        ordered = [r.unified for r in per_style[styles[0]][0] if r.unified in common][:limit]
        chosen = set(ordered)
        per_style = {
            s: ([r for r in recs if r.unified in chosen], imgs) for s, (recs, imgs) in per_style.items()
        }
    out.mkdir(parents=True, exist_ok=True)
    summaries: list[StyleSummary] = []
    all_entries: list[CaptionEntry] = []
    for style in styles:
        records, images = per_style[style]
        entries = write_caption_set(out, records, images, size=size, augment=augment, seed=seed)
        all_entries += entries
        summaries.append(
            StyleSummary(
                style=style,
                brand=known[style].brand,
                available=available[style],
                written=len(records),
                images=len(entries),
                caption_file=f"{style}.json",
            )
        )
    catalog_path: str | None = None
    rows = 0
    if catalog:
        path = out / "catalog.csv"
        rows = write_catalog(path, all_entries, seed=seed, packages=known)
        catalog_path = str(path)
    licences = write_licenses(out, styles, known)
    return EmojiDataSummary(
        out=str(out),
        styles=summaries,
        catalog=catalog_path,
        catalog_rows=rows,
        licences=str(licences),
        seconds=time.monotonic() - started,
    )
