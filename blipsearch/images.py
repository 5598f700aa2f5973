"""Decoding image files without trusting them: limits first, then decode, orientation, RGB.

Everything here runs in the indexer's decode threads, so nothing reads or writes Pillow's global
switches: the pixel limit is ours (Pillow's `Image.MAX_IMAGE_PIXELS` is bypassed, not changed),
and truncation is detected by watching the input run dry rather than by trusting
`ImageFile.LOAD_TRUNCATED_IMAGES`, which any other library in the process may have set to True.
(Pillow's GIF and MPO readers still check frame sizes against its global limit internally; past
twice that limit, about 179 million pixels, they refuse on their own, reported as over the limit.)

Every refusal is an `InvalidInputError` whose message is one short sentence naming the file; the
indexer stores it as the item's error, so the wording is kept stable (details that vary, such as
byte counts, are dropped).

Colour rules worth knowing:

* Transparent pixels (alpha, premultiplied alpha, palette or colour-key transparency) are
  composited over white, the way a page shows them.
* 16-bit samples (`I;16*` modes) are scaled by their range: value / 257, so 65535 is 255 and
  32768 is 128. Pillow's own conversion clips them instead, turning most 16-bit images white.
* `I` (32-bit integer) holding values within 0..65535 is treated as 16-bit data, which is how it
  usually arises; any other range is stretched min-max to 0..255.
* `F` (float) within 0..1 is scaled by 255, within 0..255 is kept, and anything else is stretched
  min-max; NaN and infinities become 0. A constant image outside 0..255 is clipped.
* CMYK, YCbCr, LAB, HSV and bilevel images use Pillow's conversions; embedded ICC profiles are
  not applied.
"""

from __future__ import annotations

import io
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import ExifTags, Image, ImageFile

from blipsearch.errors import InvalidInputError, TooLargeError

ALLOWED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
"""Pillow format names decoded; anything else Pillow recognises is refused by name."""

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff"}
)
"""Lower-case suffixes a folder walk picks up; the decoder itself goes by content, never by name."""

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_QUARTER_TURNS = {
    Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSVERSE,
    Image.Transpose.ROTATE_90,
}
_PARENTHESISED = re.compile(r"\s*\([^()]*\)")
_MAX_DETAIL = 80

# Registering every plugin now means the format table never changes under the decode threads.
Image.init()


@dataclass(frozen=True)
class DecodedImage:
    """A decoded picture plus the facts the catalog stores about the file it came from."""

    image: Image.Image
    """RGB, orientation applied, fully loaded, sharing no memory with the input bytes."""
    format: str
    """Pillow's format name, such as "JPEG" or "MPO"."""
    width: int
    """After orientation, so a portrait photo stored sideways reports its portrait width."""
    height: int
    frames: int
    """1, or how many frames an animated or multi-page file holds; only the first is decoded."""


def read_image_file(path: Path | str, *, max_bytes: int, name: str | None = None) -> bytes:
    """Read a whole image file, refusing before reading what the size limit would refuse anyway.

    Messages call the file `name`, by default its bare file name, so that the indexer can group
    failures across folders; a CLI passes the path as the user typed it.

    Only regular files are opened: a FIFO or device with an image suffix would otherwise block the
    reader or stream forever. The read stops one byte past the limit in case the file grew after
    it was measured.
    """
    file = Path(path)
    name = name or file.name or str(file)
    try:
        info = file.stat()
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {name}: {exc.strerror or exc}.") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError(f"{name} is not a regular file.")
    if info.st_size > max_bytes:
        raise InvalidInputError(f"{name} is {info.st_size} bytes, over the {max_bytes}-byte limit.")
    try:
        with file.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {name}: {exc.strerror or exc}.") from None
    if not data:
        raise InvalidInputError(f"{name} is empty.")
    if len(data) > max_bytes:
        raise InvalidInputError(f"{name} is over the {max_bytes}-byte limit.")
    return data


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    name: str = "image",
    at_least: tuple[int, int] | None = None,
    max_decoded_pixels: int | None = None,
) -> DecodedImage:
    """Decode untrusted bytes to an RGB picture, or refuse them with a reason naming `name`.

    The format is identified from content and checked against `ALLOWED_FORMATS`, and the pixel
    count against `max_pixels`, before any pixel data is decompressed. Any exception the decoder
    raises means the bytes are bad, so all of them become `InvalidInputError`.

    `at_least` (width, height) lets a JPEG decode at a reduced DCT scale (1/2, 1/4, 1/8) that is
    still at least that large: a model that resizes to 384 px gains nothing from the full 12
    megapixels, and decoding them is most of the cost of a camera photo. The reported width and
    height stay those of the file.
    """
    if not data:
        raise InvalidInputError(f"{name} is empty.")
    source = _WatchedBuffer(data)
    try:
        image = _identify(source, name)
        try:
            return _decode(
                image,
                source,
                max_pixels=max_pixels,
                name=name,
                at_least=at_least,
                max_decoded_pixels=max_decoded_pixels,
            )
        finally:
            image.close()
    except InvalidInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise TooLargeError(f"{name} exceeds the pixel limit ({_detail(exc)}).") from None
    except MemoryError:
        raise InvalidInputError(f"{name} is too large to decode in memory.") from None
    except Exception as exc:
        raise _decode_failure(name, exc, source.ran_dry) from None


def open_image(
    path: Path | str,
    *,
    max_bytes: int,
    max_pixels: int,
    name: str | None = None,
    at_least: tuple[int, int] | None = None,
) -> Image.Image:
    """Read and decode an image file to RGB in one step, with both limits.

    Messages name the path as given, or `name` where the path must not be shown (an API answer);
    `at_least` is `decode_image`'s reduced JPEG decoding.
    """
    shown = name or str(path)
    data = read_image_file(path, max_bytes=max_bytes, name=shown)
    return decode_image(data, max_pixels=max_pixels, name=shown, at_least=at_least).image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to a new RGB image by the rules in the module docstring.

    Always returns a new image, so the result never shares memory with a file-backed original.
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _scale_to_gray(image).convert("RGB")
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB", "1") and "transparency" in image.info):
        rgba = _unpremultiplied_la(image) if mode == "La" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image.copy()
    return image.convert("RGB")


def _unpremultiplied_la(image: Image.Image) -> Image.Image:
    """Pillow converts premultiplied grey only by way of premultiplied RGB."""
    gray, alpha = image.split()
    return Image.merge("RGBa", (gray, gray, gray, alpha)).convert("RGBA")


class _WatchedBuffer(io.BytesIO):
    """An in-memory file that notes whether a decoder asked for bytes past its end.

    A complete file never makes a decoder read at end of input while pixel data is loading, so
    such a read is the one truncation signal that does not depend on Pillow's global flag.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)
        self.watching = False
        self.ran_dry = False

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if self.watching and not chunk and size != 0:
            self.ran_dry = True
        return chunk


_Opener = tuple[Callable[[IO[bytes], str], ImageFile.ImageFile], Callable[[bytes], Any] | None]


def _candidates() -> list[tuple[str, _Opener]]:
    """Allowed formats first, then formats with a signature, then those that guess by parsing.

    That order keeps a loose parser such as TGA's from claiming a real JPEG, while still naming
    a recognisable but unsupported format instead of calling it "not an image".
    """
    openers: dict[str, _Opener] = dict(Image.OPEN)
    ordered = sorted(openers, key=lambda fmt: (fmt not in ALLOWED_FORMATS, openers[fmt][1] is None))
    return [(fmt, openers[fmt]) for fmt in ordered]


def _identify(source: _WatchedBuffer, name: str) -> ImageFile.ImageFile:
    """What `Image.open` does, minus its decompression-bomb check against Pillow's global limit.

    When an allowed format's signature matches but its header does not parse, the file is that
    format gone bad: truncated if the parser reached the end of the bytes, corrupt otherwise.
    """
    prefix = source.read(16)
    problem: tuple[bool, str] | None = None
    for fmt, (factory, accept) in _candidates():
        try:
            verdict = accept(prefix) if accept is not None else True
        except Exception:
            continue  # some signature checks fail on inputs shorter than they expect
        if isinstance(verdict, str):
            if fmt in ALLOWED_FORMATS and problem is None:
                problem = (False, verdict)
            continue
        if not verdict:
            continue
        source.seek(0)
        source.ran_dry, source.watching = False, True
        try:
            return factory(source, "")
        except (Image.DecompressionBombError, MemoryError):
            raise
        except Exception as exc:
            if fmt in ALLOWED_FORMATS and accept is not None and problem is None:
                problem = (source.ran_dry or source.tell() >= source.size, _detail(exc))
        finally:
            source.watching = False
    if problem is not None:
        ran_dry, detail = problem
        raise InvalidInputError(f"{name} is {'truncated' if ran_dry else 'corrupt'} ({detail}).")
    raise InvalidInputError(f"{name} is not an image file.")


def _decode(
    image: ImageFile.ImageFile,
    source: _WatchedBuffer,
    *,
    max_pixels: int,
    name: str,
    at_least: tuple[int, int] | None = None,
    max_decoded_pixels: int | None = None,
) -> DecodedImage:
    source.ran_dry = False
    fmt = image.format or "unknown"
    if fmt not in ALLOWED_FORMATS:
        raise InvalidInputError(f"{name} has unsupported format {fmt}.")
    width, height = image.size
    if width * height > max_pixels:
        raise TooLargeError(f"{name} is {width}x{height} pixels, over the {max_pixels}-pixel limit.")
    frames = max(1, int(getattr(image, "n_frames", 1)))
    if frames > 1:
        image.seek(0)
    if at_least is not None and fmt == "JPEG" and image.mode in ("RGB", "L"):
        image.draft(image.mode, at_least)  # changes image.size to the reduced size
    if max_decoded_pixels is not None and image.size[0] * image.size[1] > max_decoded_pixels:
        raise TooLargeError(
            f"{name} is {width}x{height} pixels, over the {max_decoded_pixels}-pixel limit for "
            "images that cannot be reduced while decoding."
        )
    source.ran_dry, source.watching = False, True
    image.load()
    source.watching = False
    if source.ran_dry:
        raise InvalidInputError(f"{name} is truncated (image data ends early).")
    rgb = to_rgb(image)
    method = _TRANSPOSE.get(_orientation(image))
    if method is not None:
        rgb = rgb.transpose(method)
    rgb.info = {}
    if method in _QUARTER_TURNS:
        width, height = height, width
    return DecodedImage(image=rgb, format=fmt, width=width, height=height, frames=frames)


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation, treating unreadable metadata as upright: the pixels are fine."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) else 1


def _scale_to_gray(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float32)
    if image.mode in _SIXTEEN_BIT_MODES:
        scaled = values / 257.0
    elif image.mode == "I":
        low, high = float(values.min()), float(values.max())
        scaled = values / 257.0 if low >= 0 and high <= 65535 else _stretch(values, low, high)
    else:
        finite = np.isfinite(values)
        values = np.where(finite, values, 0.0).astype(np.float32)
        low, high = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0, 0)
        if low >= 0 and high <= 1:
            scaled = values * 255.0
        elif low >= 0 and high <= 255:
            scaled = values
        else:
            scaled = _stretch(values, low, high)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return values
    return (values - low) * (255.0 / (high - low))


def _detail(exc: BaseException) -> str:
    """A decoder's message, short and free of varying counts, fit to store and to group by."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _PARENTHESISED.sub("", text).replace("(", "").replace(")", "").strip().rstrip(".")
    if len(text) > _MAX_DETAIL:
        text = text[:_MAX_DETAIL].rsplit(" ", 1)[0]
    return text or type(exc).__name__


def _decode_failure(name: str, exc: Exception, ran_dry: bool) -> InvalidInputError:
    detail = _detail(exc)
    if ran_dry or "truncated" in detail.lower():
        return InvalidInputError(f"{name} is truncated ({detail}).")
    return InvalidInputError(f"{name} is corrupt ({detail}).")
