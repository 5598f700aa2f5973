"""Demo and training data from freely licensed emoji artwork that the npm registry carries.

BLIP's objectives need image-caption pairs, and a CPU demo needs a catalog that anyone may
redistribute. `emoji-datasource-google` (Noto Emoji, Apache-2.0) and `emoji-datasource-twitter`
(Twemoji, CC-BY-4.0) give both: thousands of small PNGs, each with a name, short names, a category
and a subcategory. Only these two packages are used; the Apple and Facebook sets in the same
family are not licensed for redistribution.

The tarballs are fetched once with `npm pack` into a cache folder and checked against the sha512
integrity recorded below, so a later run from the cache is offline and byte-for-byte the same
input. Everything is read straight from the tarball; nothing is unpacked to disk.

Outputs (see `build_emoji_data`): per style a folder of composited PNGs and a BLIP-style caption
file (`[{"image", "caption": [...]}]`, read by `search.caption_sets.load_caption_set`) plus the same
pairs as an `image<TAB>caption` TSV for `blipsearch train`, so "train on Noto, measure on Twemoji"
is two files; optionally a CSV product manifest for `blipsearch index`;
and always a LICENSES.txt with the attribution the licences require.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import random
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from blipsearch.errors import InvalidInputError


@dataclass(frozen=True)
class EmojiPackage:
    """One pinned npm package: what to fetch, what its bytes must hash to, and its licence."""

    style: str
    name: str
    version: str
    integrity: str
    """npm's `dist.integrity` (`sha512-<base64>`) for exactly this version."""
    brand: str
    licence: str
    attribution: str
    images_at: str = ""
    """For a package laid out by code point (`<images_at><hex>-<hex>.png`) rather than as an
    emoji-datasource package: it has no emoji.json of that shape, so its images are matched to the
    datasource classes by code point (see `codepoint_key`)."""
    image_suffix: str = ".png"
    """`.png`, `.webp`, or `.svg` (rasterised with cairosvg when the classes are loaded)."""

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def release(self) -> str:
        """Name and version as one file-name stem, as `npm pack` writes it (`@scope/name`: `scope-name`)."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}"

    @property
    def tarball_name(self) -> str:
        return f"{self.release}.tgz"


# Recorded from `npm view <name>@16.0.0 dist.integrity`; a cache hit must match these exactly.
PACKAGES: dict[str, EmojiPackage] = {
    "google": EmojiPackage(
        style="google",
        name="emoji-datasource-google",
        version="16.0.0",
        integrity="sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
        brand="Noto",
        licence="Apache-2.0",
        attribution="Noto Emoji by Google LLC, Apache License 2.0 "
        "(https://github.com/googlefonts/noto-emoji, https://www.apache.org/licenses/LICENSE-2.0)",
    ),
    "twitter": EmojiPackage(
        style="twitter",
        name="emoji-datasource-twitter",
        version="16.0.0",
        integrity="sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==",
        brand="Twemoji",
        licence="CC-BY-4.0",
        attribution="Twemoji by Twitter, Inc and other contributors, CC-BY 4.0 "
        "(https://github.com/twitter/twemoji, https://creativecommons.org/licenses/by/4.0/)",
    ),
}
# Extra drawing styles for training only. EmojiOne 2.x's artwork is CC-BY-4.0 (3.x and later are
# not free); it covers Unicode 9, so about three quarters of the datasource classes. Its colour and
# black-and-white sets are two more styles the ViT can learn from while Twemoji stays held out.
_EMOJIONE_INTEGRITY = (
    "sha512-Gbf8qysc34+TFUS5HPwOUY62v8gjLuPmfVTWUR/zirULSYUe/D3MrvYo0W5Y2gScF1YI7EBe5t81IbD8q144Ag=="
)
_EMOJIONE_ATTRIBUTION = (
    "EmojiOne 2.2.7 artwork by Ranks.com Inc, CC-BY 4.0 "
    "(https://github.com/emojione/emojione/tree/2.2.7, https://creativecommons.org/licenses/by/4.0/)"
)
PACKAGES["emojione"] = EmojiPackage(
    style="emojione",
    name="emojione",
    version="2.2.7",
    integrity=_EMOJIONE_INTEGRITY,
    brand="EmojiOne",
    licence="CC-BY-4.0",
    attribution=_EMOJIONE_ATTRIBUTION,
    images_at="package/assets/png/",
)
PACKAGES["emojione-bw"] = replace(
    PACKAGES["emojione"],
    style="emojione-bw",
    brand="EmojiOne black-and-white",
    images_at="package/assets/png_bw/",
)
# Microsoft's Fluent Emoji (MIT), as LobeHub packs them by code point: a 3D rendering (256 px WebP)
# and the flat 2D drawing of the same designs (SVG). They cover about 97% and 95% of the classes.
_FLUENT_ATTRIBUTION = (
    "Fluent Emoji by Microsoft Corporation, MIT License (https://github.com/microsoft/fluentui-emoji), "
    "packed by code point by LobeHub (https://github.com/lobehub/fluent-emoji, MIT License)"
)
PACKAGES["fluent-3d"] = EmojiPackage(
    style="fluent-3d",
    name="@lobehub/fluent-emoji-3d",
    version="1.1.0",
    integrity="sha512-Wlq2lVStTnr8BDpIJ0pEnTKO4LuDxxqTEhTvRtD1DLRF0me7ogeRQjKoehDHXuVJ2Qaecgl5wRBv60lUAG3h7g==",
    brand="Fluent 3D",
    licence="MIT",
    attribution=_FLUENT_ATTRIBUTION,
    images_at="package/assets/",
    image_suffix=".webp",
)
PACKAGES["fluent-flat"] = replace(
    PACKAGES["fluent-3d"],
    style="fluent-flat",
    name="@lobehub/fluent-emoji-flat",
    integrity="sha512-lPYCg8+N56MIj+iOgeBeH6AF0tneXxJCvgi41rOTjAWpA5rU2WUcmU1fiIXouEe8GrSTarWCYLY2ML+rdLRHsg==",
    brand="Fluent flat",
    image_suffix=".svg",
)
# Noto as Android drew it until 2017 (the "blob" faces and animals): an older release of the same
# package, another artist's hand on 1,467 of the classes, same licence as Noto today.
PACKAGES["google-blob"] = replace(
    PACKAGES["google"],
    style="google-blob",
    version="3.0.0",
    integrity="sha512-Ms+IO6V40EKcfBjxs76iLYQexo6Tgl8MbTxM7Z4Qm5n/Hwkr/DNNYui40aU3YaVd8oRNLaMXN1/rS++/VHViPQ==",
    brand="Noto blob",
    attribution='Noto Emoji (2017 "blob" designs) by Google LLC, Apache License 2.0 '
    "(https://github.com/googlefonts/noto-emoji, https://www.apache.org/licenses/LICENSE-2.0), "
    "as packed by emoji-datasource-google 3.0.0 (MIT)",
    images_at="package/img/google/64/",
)
# OpenMoji: flat drawings with black outlines, CC BY-SA 4.0 (share-alike: a model trained on them
# and shipped should say so in its card).
PACKAGES["openmoji"] = EmojiPackage(
    style="openmoji",
    name="openmoji",
    version="17.0.0",
    integrity="sha512-EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w==",
    brand="OpenMoji",
    licence="CC-BY-SA-4.0",
    attribution="All emojis designed by OpenMoji, the open-source emoji and icon project "
    "(https://openmoji.org/), CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)",
    images_at="package/color/svg/",
    image_suffix=".svg",
)
DEFAULT_STYLES = ("google", "twitter")
SOURCE_IMAGE_SIZE = 64
"""The packages ship several sizes; 64 px is the largest single-image one and plenty for BLIP."""

SKIN_TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}


# --------------------------------------------------------------------------- fetching


def sri_sha512(path: Path) -> str:
    """The Subresource-Integrity string npm records for a tarball (`sha512-<base64 digest>`)."""
    digest = hashlib.sha512()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def verify_integrity(path: Path, expected: str) -> None:
    """Refuse a tarball whose bytes are not the pinned release: the data must be reproducible."""
    actual = sri_sha512(path)
    if actual != expected:
        raise InvalidInputError(
            f"{path.name}: integrity mismatch (expected {expected[:24]}..., got {actual[:24]}...); "
            "delete it from the cache and fetch it again."
        )


def fetch_package(package: EmojiPackage, cache: Path, *, npm: str = "npm") -> Path:
    """The verified tarball in `cache`, downloaded with `npm pack` only when it is not there yet.

    A cached file is verified like a fresh one, so a corrupted or substituted cache is refused
    rather than silently producing different data.
    """
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / package.tarball_name
    if not tarball.is_file():
        if shutil.which(npm) is None:
            raise InvalidInputError(
                f"{tarball} is not cached and `{npm}` is not installed; install Node.js/npm or copy "
                f"`npm pack {package.spec}` into {cache}."
            )
        try:
            subprocess.run(
                [npm, "pack", package.spec, "--pack-destination", str(cache), "--silent"],
                check=True,
                capture_output=True,
                text=True,
                timeout=900,
            )
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise InvalidInputError(
                f"`npm pack {package.spec}` failed: {detail[-1] if detail else exc}"
            ) from None
        except subprocess.TimeoutExpired:
            raise InvalidInputError(f"`npm pack {package.spec}` timed out.") from None
        if not tarball.is_file():
            raise InvalidInputError(f"`npm pack {package.spec}` did not write {tarball}.")
    try:
        verify_integrity(tarball, package.integrity)
    except InvalidInputError:
        if tarball.stat().st_size == 0:
            tarball.unlink()
        raise
    return tarball


@dataclass
class EmojiArchive:
    """`emoji.json` and one style's PNGs, read in a single pass over a (gzip) tarball.

    A gzip stream has no random access, so collecting the wanted members in one sweep is much
    faster than a lookup per image; 64 px PNGs of one style are a few MB in memory.
    """

    entries: list[dict[str, Any]]
    images: dict[str, bytes] = field(default_factory=dict)
    """File name (e.g. `1f34e.png`) to PNG bytes."""

    @classmethod
    def read_codepoints(cls, tarball: Path, folder: str, suffix: str = ".png") -> EmojiArchive:
        """A code-point-named image folder: no entries, image bytes keyed by `codepoint_key`."""
        images: dict[str, bytes] = {}
        try:
            with tarfile.open(tarball, "r:*") as archive:
                for member in archive:
                    name = member.name
                    if member.isfile() and name.startswith(folder) and name.endswith(suffix):
                        stem = name[len(folder) : -len(suffix)]
                        if "/" not in stem:
                            images[codepoint_key(stem)] = _extract(archive, member)
        except (tarfile.TarError, OSError) as exc:
            raise InvalidInputError(f"{tarball.name} is not a readable npm tarball ({exc}).") from None
        if not images:
            raise InvalidInputError(f"{tarball.name} has no {suffix} images under {folder}.")
        return cls(entries=[], images=images)

    @classmethod
    def read(cls, tarball: Path, style: str, *, size: int = SOURCE_IMAGE_SIZE) -> EmojiArchive:
        prefix = f"package/img/{style}/{size}/"
        entries: list[dict[str, Any]] | None = None
        images: dict[str, bytes] = {}
        try:
            with tarfile.open(tarball, "r:*") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    if member.name == "package/emoji.json":
                        data = _extract(archive, member)
                        try:
                            parsed = json.loads(data.decode("utf-8"))
                        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                            raise InvalidInputError(
                                f"{tarball.name}: emoji.json is not JSON ({exc})."
                            ) from None
                        if not isinstance(parsed, list):
                            raise InvalidInputError(f"{tarball.name}: emoji.json is not a list.")
                        entries = parsed
                    elif member.name.startswith(prefix) and member.name.endswith(".png"):
                        images[member.name[len(prefix) :]] = _extract(archive, member)
        except (tarfile.TarError, OSError) as exc:
            raise InvalidInputError(f"{tarball.name} is not a readable npm tarball ({exc}).") from None
        if entries is None:
            raise InvalidInputError(f"{tarball.name} has no package/emoji.json.")
        return cls(entries=entries, images=images)


def codepoint_key(sequence: str) -> str:
    """`1f46e-1F3FC`, `2764-FE0F` and `2764` to one key: upper-case, without variation selector 16.

    Emoji sets disagree on whether FE0F is part of a file name; it never changes which emoji it is.
    """
    parts = sequence.replace("_", "-").upper().split("-")
    return "-".join(p for p in parts if p and p != "FE0F")


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:
        raise InvalidInputError(f"{member.name} cannot be read from the tarball.")
    return handle.read()


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class EmojiRecord:
    """One emoji in one style, with the words that describe it."""

    unified: str
    name: str
    """Lower-case, e.g. `red apple`."""
    short_names: tuple[str, ...]
    category: str
    subcategory: str
    style: str
    image: str
    """File name inside the package's `img/<style>/64/` folder."""
    sort_order: int = 0


def _clean(text: str) -> str:
    """Lower-case words as a caption would spell them (`Food & Drink` -> `food and drink`)."""
    text = text.replace("&", " and ").replace("_", " ").replace("-", " ")
    return " ".join(text.lower().split())


def _name(entry: dict[str, Any]) -> str:
    name = entry.get("name")
    if isinstance(name, str) and name.strip():
        return _clean(name)
    short = entry.get("short_name")
    return _clean(short) if isinstance(short, str) else ""


def parse_records(
    entries: Iterable[dict[str, Any]],
    style: str,
    available: Iterable[str] | None = None,
    *,
    include_skin_tones: bool = False,
) -> list[EmojiRecord]:
    """emoji.json entries to records of one style, in the package's sort order.

    Skin-tone variants are skipped by default: they share a name with their base emoji, so as
    captions they only add near-duplicate positives that make retrieval metrics ambiguous. Entries
    without an image in this style (`has_img_<style>` false, or the PNG absent) are skipped.
    """
    present = set(available) if available is not None else None
    flag = f"has_img_{style}"
    records: list[EmojiRecord] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        unified = entry.get("unified")
        image = entry.get("image")
        name = _name(entry)
        if not isinstance(unified, str) or not isinstance(image, str) or not name:
            continue
        raw_short = entry.get("short_names") or []
        short_names = tuple(dict.fromkeys(_clean(s) for s in raw_short if isinstance(s, str) and _clean(s)))
        category = str(entry.get("category") or "")
        subcategory = str(entry.get("subcategory") or "")
        order = entry.get("sort_order")
        sort_order = order if isinstance(order, int) else 0
        variants: list[tuple[str, str, str, dict[str, Any]]] = [(unified, name, image, entry)]
        if include_skin_tones and isinstance(entry.get("skin_variations"), dict):
            for tones, variant in entry["skin_variations"].items():
                if not isinstance(variant, dict) or not isinstance(variant.get("image"), str):
                    continue
                words = ", ".join(SKIN_TONES.get(t, t.lower()) for t in str(tones).split("-"))
                variants.append(
                    (
                        str(variant.get("unified") or f"{unified}-{tones}"),
                        f"{name}: {words}",
                        variant["image"],
                        variant,
                    )
                )
        for code, label, file_name, source in variants:
            if source.get(flag) is False:
                continue
            if present is not None and file_name not in present:
                continue
            records.append(
                EmojiRecord(
                    unified=code.upper(),
                    name=label,
                    short_names=short_names,
                    category=category,
                    subcategory=subcategory,
                    style=style,
                    image=file_name,
                    sort_order=sort_order,
                )
            )
    records.sort(key=lambda r: (r.sort_order, r.unified))
    return records


# --------------------------------------------------------------------------- captions


def _article(phrase: str) -> str:
    return f"an {phrase}" if phrase[:1] in "aeiou" else f"a {phrase}"


def captions_for(record: EmojiRecord, seed: int = 0) -> list[str]:
    """Several phrasings of one emoji, lower-case and de-duplicated.

    The first is always the plain name with an article (`a red apple`), so evaluation has a stable
    canonical text; the rest are shuffled by `seed` so that training sees no fixed order. Varying
    the wording teaches the model the concept rather than one template.
    """
    name = record.name
    category = _clean(record.category)
    subcategory = _clean(record.subcategory)
    phrases = [_article(name), f"{name} emoji", f"an emoji of {_article(name)}"]
    for short in record.short_names:
        phrases.append(f"{short} emoji")
        if category:
            phrases.append(f"{_article(short)}, {_article(category)}")
    if category:
        phrases.append(f"{_article(name)}, {_article(category)}")
    if subcategory and subcategory != category:
        phrases.append(f"{name} icon, {subcategory}")
    unique = list(dict.fromkeys(" ".join(p.lower().split()) for p in phrases))
    head, tail = unique[:1], unique[1:]
    random.Random(f"captions:{seed}:{record.unified}").shuffle(tail)
    return head + tail


# --------------------------------------------------------------------------- images


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
            tags = dict.fromkeys(t for t in [_clean(record.subcategory), *record.short_names] if t)
            category = _clean(record.category)
            writer.writerow(
                {
                    "image": entry.image,
                    "sku": sku,
                    "title": f"{record.name.capitalize()} ({brand})",
                    "description": f"{_article(record.name).capitalize()} emoji in the {brand} style"
                    + (f", from {_article(category)} set" if category else "")
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
