"""Opening image files without trusting them: size limits first, then decode, orientation, RGB.

The indexer's full decoding policy (format allowlist, every colour mode, animated files) builds on
this; the CLI's model commands use it as is.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from blipsearch.errors import InvalidInputError


def open_image(path: Path | str, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode an image file to RGB, refusing oversized, corrupt or non-image files with a reason."""
    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {file}: {exc.strerror or exc}.") from None
    if size == 0:
        raise InvalidInputError(f"{file} is empty.")
    if size > max_bytes:
        raise InvalidInputError(f"{file} is {size} bytes, over the {max_bytes}-byte limit.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InvalidInputError(
                        f"{file} is {width}x{height} pixels, over the {max_pixels}-pixel limit."
                    )
                image.load()
                oriented = ImageOps.exif_transpose(image)
                return _to_rgb(oriented)
    except InvalidInputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInputError(f"{file} is not a readable image ({exc}).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInputError(f"{file} is corrupt or truncated ({exc}).") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
