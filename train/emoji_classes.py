"""The emoji a demo model learns, as tensors: each class's captions and its RGBA drawing in every style.

Every style's images are decoded (PNG, WebP, or SVG through cairosvg) once, at the model's input
size, into one [classes, 4, size, size] tensor per style, so a training step only indexes and
augments tensors. The first training style names the classes (an emoji-datasource set); code-point
sets join them where they have the emoji, and a missing drawing is all zero.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.train.demo_settings import DemoRecipe
from blipsearch.train.emoji_packages import PACKAGES, EmojiArchive, EmojiPackage, codepoint_key, fetch_package
from blipsearch.train.emoji_records import EmojiRecord, captions_for, parse_records


@dataclass
class EmojiClasses:
    """The emoji the model learns: records per style, captions per class, RGBA pixels per style."""

    unified: list[str]
    names: list[str]
    captions: list[list[str]]
    """Training captions per class (after corruption and dropping)."""
    clean_captions: list[list[str]]
    records: dict[str, list[EmojiRecord]]
    pixels: dict[str, torch.Tensor]
    """style -> [classes, 4, size, size] float in 0..1 (RGBA); a missing image is all zero."""
    corrupted: set[tuple[str, str]] = field(default_factory=set)

    def images_per_style(self) -> dict[str, int]:
        """How many classes each style has an image for."""
        return {style: int(has_image(p).sum()) for style, p in self.pixels.items()}


def has_image(rgba: torch.Tensor) -> torch.Tensor:
    """Per class (leading dimensions kept), whether this style drew it: a missing image is all zero."""
    return rgba[..., 3, :, :].flatten(-2).amax(-1) > 0


def rasterise_svg(svg: bytes, size: int) -> bytes:
    """A PNG of an SVG emoji at `size` px; cairosvg is imported only for styles drawn as SVG."""
    try:
        import cairosvg
    except ImportError:
        raise InvalidInputError(
            "This emoji style is drawn as SVG; install cairosvg (`pip install blipsearch[demo-train]`)."
        ) from None
    try:
        png: bytes = cairosvg.svg2png(bytestring=svg, output_width=size, output_height=size)
    except Exception as exc:  # cairosvg raises parser-specific errors for a broken file
        raise InvalidInputError(f"An SVG emoji cannot be rendered ({exc}).") from None
    return png


def rgba_pixels(image_bytes: bytes, size: int, suffix: str = ".png") -> torch.Tensor:
    """RGBA in 0..1 at `size` px; `suffix` is the package's image format (SVG needs rendering)."""
    png = rasterise_svg(image_bytes, size) if suffix == ".svg" else image_bytes
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("RGBA")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


def load_classes(recipe: DemoRecipe, packages: dict[str, EmojiPackage] | None = None) -> EmojiClasses:
    """Emoji of the training styles (the classes) and the held-out style, from the pinned packages."""
    known = packages if packages is not None else PACKAGES
    styles = [*recipe.train_styles, recipe.holdout_style]
    records: dict[str, list[EmojiRecord]] = {}
    archives: dict[str, EmojiArchive] = {}
    for style in dict.fromkeys(styles):
        if style not in known:
            raise InvalidInputError(f"Unknown emoji style {style!r}; use one of {', '.join(known)}.")
        package = known[style]
        if package.images_at:
            archives[style] = EmojiArchive.read_codepoints(
                fetch_package(package, recipe.cache), package.images_at, package.image_suffix
            )
            continue
        archive = EmojiArchive.read(fetch_package(package, recipe.cache), style)
        archives[style] = archive
        records[style] = parse_records(archive.entries, style, archive.images)
    if recipe.train_styles[0] not in records:
        raise InvalidInputError(
            f"The first training style must be an emoji-datasource set (it names the classes), "
            f"not {recipe.train_styles[0]!r}."
        )
    first = records[recipe.train_styles[0]]
    unified = [r.unified for r in first]
    names = [r.name for r in first]
    clean = [captions_for(r) for r in first]
    size = recipe.arch.image_size
    pixels: dict[str, torch.Tensor] = {}
    for style, archive in archives.items():
        if style in records:
            by_code = {r.unified: archive.images[r.image] for r in records[style]}
        else:
            by_code = {
                code: archive.images[codepoint_key(code)]
                for code in unified
                if codepoint_key(code) in archive.images
            }
        suffix = known[style].image_suffix
        tensor = torch.zeros(len(unified), 4, size, size)
        for index, code in enumerate(unified):
            data = by_code.get(code)
            if data is not None:
                tensor[index] = rgba_pixels(data, size, suffix)
        pixels[style] = tensor
    captions, corrupted = corrupt_captions(clean, unified, recipe.corrupt_fraction, recipe.seed)
    if recipe.drop_captions is not None:
        dropped = {tuple(pair) for pair in json.loads(recipe.drop_captions.read_text())}
        captions = [
            [c for c in texts if (code, c) not in dropped] or texts[:1]
            for code, texts in zip(unified, captions, strict=True)
        ]
    return EmojiClasses(unified, names, captions, clean, records, pixels, corrupted)


def corrupt_captions(
    captions: list[list[str]], unified: list[str], fraction: float, seed: int
) -> tuple[list[list[str]], set[tuple[str, str]]]:
    """Replace `fraction` of all captions by a caption of another emoji (simulated noisy web text).

    Returns the new caption lists and the set of (unified, caption) pairs that are now wrong.
    """
    if fraction <= 0:
        return [list(c) for c in captions], set()
    rng = random.Random(f"corrupt:{seed}")
    result: list[list[str]] = []
    wrong: set[tuple[str, str]] = set()
    for index, texts in enumerate(captions):
        kept: list[str] = []
        for text in texts:
            if rng.random() < fraction:
                other = rng.randrange(len(captions) - 1)
                other += other >= index
                text = rng.choice(captions[other])
                wrong.add((unified[index], text))
            kept.append(text)
        result.append(list(dict.fromkeys(kept)))
    return result, wrong


def flatten_on_white(rgba: torch.Tensor) -> torch.Tensor:
    """RGBA over white, as `blipsearch.images` flattens transparent images before indexing."""
    alpha = rgba[:, 3:4]
    return rgba[:, :3] * alpha + (1.0 - alpha)
