"""A fake npm emoji tarball, laid out like emoji-datasource-*, so no test reaches the network."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

from PIL import Image

from blipsearch.train import emoji_packages as em

ENTRIES = [
    {
        "name": "RED APPLE",
        "unified": "1F34E",
        "image": "1f34e.png",
        "short_name": "apple",
        "short_names": ["apple"],
        "category": "Food & Drink",
        "subcategory": "food-fruit",
        "sort_order": 2,
        "has_img_google": True,
        "has_img_twitter": True,
    },
    {
        "name": "GRINNING FACE",
        "unified": "1F600",
        "image": "1f600.png",
        "short_name": "grinning",
        "short_names": ["grinning"],
        "category": "Smileys & Emotion",
        "subcategory": "face-smiling",
        "sort_order": 1,
        "has_img_google": True,
        "has_img_twitter": True,
    },
    {
        "name": "WAVING HAND SIGN",
        "unified": "1F44B",
        "image": "1f44b.png",
        "short_name": "wave",
        "short_names": ["wave", "waving_hand"],
        "category": "People & Body",
        "subcategory": "hand-fingers-open",
        "sort_order": 3,
        "has_img_google": True,
        "has_img_twitter": True,
        "skin_variations": {
            "1F3FB": {
                "unified": "1F44B-1F3FB",
                "image": "1f44b-1f3fb.png",
                "has_img_google": True,
                "has_img_twitter": True,
            }
        },
    },
    {
        "name": "GHOST WITHOUT IMAGE",
        "unified": "1F47B",
        "image": "1f47b.png",
        "short_name": "ghost",
        "short_names": ["ghost"],
        "category": "Smileys & Emotion",
        "subcategory": "face-costume",
        "sort_order": 4,
        "has_img_google": True,
        "has_img_twitter": True,
    },
]
PALETTE = [(220, 30, 30), (30, 160, 60), (40, 80, 200), (230, 210, 40)]
"""Distinct colours, so that a tiny model can tell the fake emoji apart in a few steps."""
WITH_IMAGES = ["1f34e.png", "1f600.png", "1f44b.png", "1f44b-1f3fb.png"]


def png(colour: tuple[int, int, int], image_format: str = "PNG", size: int = 64) -> bytes:
    """A square of `colour` in the middle half of a transparent image."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    image.paste((*colour, 255), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **({"lossless": True} if image_format == "WEBP" else {}))
    return buffer.getvalue()


def svg(colour: tuple[int, int, int]) -> bytes:
    """The same square as `png`, drawn in a 32-unit SVG viewBox (as Fluent's flat set is drawn)."""
    r, g, b = colour
    return (
        '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32" '
        f'viewBox="0 0 32 32"><rect x="8" y="8" width="16" height="16" fill="rgb({r},{g},{b})"/></svg>'
    ).encode()


def image_bytes(colour: tuple[int, int, int], suffix: str) -> bytes:
    """A fake emoji in a package's own file format: 256-px WebP like Fluent 3D, SVG, or PNG."""
    if suffix == ".svg":
        return svg(colour)
    if suffix == ".webp":
        return png(colour, "WEBP", size=256)
    return png(colour)


def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def fake_package(cache: Path, style: str = "google") -> em.EmojiPackage:
    """A tarball laid out like npm's, in the cache under the name `npm pack` would give it."""
    package = replace(em.PACKAGES[style], integrity="sha512-placeholder")
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / package.tarball_name
    with tarfile.open(tarball, "w:gz") as archive:
        add(archive, "package/package.json", b'{"name": "fake"}')
        add(archive, "package/emoji.json", json.dumps(ENTRIES).encode())
        for number, file_name in enumerate(WITH_IMAGES):
            add(archive, f"package/img/{style}/64/{file_name}", png(PALETTE[number % len(PALETTE)]))
    return replace(package, integrity=em.sri_sha512(tarball))


CODEPOINT_FILES = {"1f34e.png": 1, "1F600-FE0F.png": 2}
"""An EmojiOne-like set: the apple, and the grinning face under a FE0F-qualified upper-case name;
no waving hand, so a class can lack this style."""


def fake_codepoint_package(cache: Path, style: str = "emojione") -> em.EmojiPackage:
    """A tarball of code-point-named images in the style's format (EmojiOne's or Fluent's layout),
    with no emoji.json of the datasource shape."""
    package = replace(em.PACKAGES[style], integrity="sha512-placeholder")
    suffix = package.image_suffix
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / package.tarball_name
    with tarfile.open(tarball, "w:gz") as archive:
        add(archive, "package/package.json", json.dumps({"name": package.name}).encode())
        for file_name, colour in CODEPOINT_FILES.items():
            stem = file_name.removesuffix(".png")
            add(archive, f"{package.images_at}{stem}{suffix}", image_bytes(PALETTE[colour], suffix))
        add(archive, f"{package.images_at}nested/1f44b{suffix}", image_bytes(PALETTE[0], suffix))
    return replace(package, integrity=em.sri_sha512(tarball))
