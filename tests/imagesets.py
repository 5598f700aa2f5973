"""Generated image files for the decoder, indexer and crash tests: valid, odd-but-valid, broken.

Import it as `from imagesets import ...`. Pytest's default ("prepend") import mode puts the
`tests/` folder itself on `sys.path`, because it has no `__init__.py`; `tests.imagesets` would only
resolve under `python -m pytest` (which also adds the working directory), not under a bare
`pytest`, so the test modules must not use it.

Everything is deterministic for a given seed, and every file name is unique across the three sets
(`photo-*`, `odd-*`, `broken-*`), so tests can key catalog rows by file name. Every file carries
a suffix from `IMAGE_SUFFIXES`, so a folder walk picks all of them up, broken ones included.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TEST_MAX_PIXELS = 10_000_000
"""The pixel limit the broken set is built against: `pixel_bomb` exceeds it, nothing else does."""
TEST_MAX_BYTES = 5_000_000
"""Every generated file is smaller than this; size refusals are tested by lowering the limit."""

BROKEN_KINDS: tuple[str, ...] = (
    "empty",
    "truncated_jpeg",
    "jpeg_missing_end",
    "truncated_png",
    "truncated_gif",
    "random_bytes",
    "text_file",
    "unsupported_format",
    "unsupported_tga",
    "corrupt_png",
    "corrupt_jpeg_header",
    "pixel_bomb",
)
"""One file each in `write_broken_images`; oversized files are left to callers lowering max_bytes."""

ODD_VALID_KINDS: tuple[str, ...] = (
    "cmyk_jpeg",
    "cmyk_tiff",
    "gray_jpeg",
    "progressive_jpeg",
    "gray16_png",
    "gray16_tiff",
    "gray16_bigendian_tiff",
    "int32_tiff",
    "float_tiff",
    "rgb48_png",
    "rgb48_tiff",
    "palette_transparency_png",
    "rgb_colour_key_png",
    "la_png",
    "rgba_png",
    "webp_alpha",
    "animated_gif",
    "animated_webp",
    "apng",
    "exif_rotated_jpeg",
    "bilevel_tiff",
    "ycbcr_tiff",
    "lab_tiff",
    "multipage_tiff",
    "mpo",
    "bmp_as_dib",
    "upper_case_suffix",
)

PIXEL_BOMB_SIZE = (30_000, 30_000)
ODD_SIZE = (40, 30)
"""Every odd valid file, before orientation: left half one known colour, right half another."""

_VALID_FORMATS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (".jpg", "JPEG", {"quality": 92}),
    (".png", "PNG", {}),
    (".webp", "WEBP", {"quality": 90}),
    (".gif", "GIF", {}),
    (".bmp", "BMP", {}),
    (".tiff", "TIFF", {"compression": "tiff_lzw"}),
)


def noise_png(seed: int, size: tuple[int, int] = (40, 40)) -> bytes:
    """A PNG of random RGB noise, (height, width): every seed a different image, nearly incompressible."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def write_valid_images(
    directory: Path, count: int, *, seed: int = 0, size: tuple[int, int] = (48, 40)
) -> list[Path]:
    """Distinct pictures (a two-colour gradient, a block, noise) cycling through six formats.

    Files 1, 5, 9, ... go in `nested/` and 3, 7, 11, ... in `nested/deeper/`, so folder walks are
    exercised. Returned in creation order.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    paths: list[Path] = []
    for index in range(count):
        suffix, fmt, options = _VALID_FORMATS[index % len(_VALID_FORMATS)]
        folder = {1: directory / "nested", 3: directory / "nested" / "deeper"}.get(index % 4, directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"photo-{seed}-{index:03d}{suffix}"
        _picture(rng, width, height).save(path, fmt, **options)
        paths.append(path)
    return paths


def write_broken_images(directory: Path) -> dict[str, Path]:
    """One file per kind in `BROKEN_KINDS`, each refused by the decoder under the test limits."""
    directory.mkdir(parents=True, exist_ok=True)
    noise = _picture(np.random.default_rng(99), 96, 80)
    jpeg = _encode(noise, "JPEG", quality=90)
    png = _encode(noise, "PNG")
    gif = _encode(noise, "GIF")
    contents: dict[str, tuple[str, bytes]] = {
        "empty": (".jpg", b""),
        "truncated_jpeg": (".jpg", jpeg[: len(jpeg) // 2]),
        "jpeg_missing_end": (".jpeg", jpeg[:-2]),
        "truncated_png": (".png", png[: len(png) // 2]),
        "truncated_gif": (".gif", gif[: len(gif) // 2]),
        "random_bytes": (".png", np.random.default_rng(7).bytes(4096)),
        "text_file": (".jpg", b"This is a shopping list, not a picture.\n" * 40),
        "unsupported_format": (".png", _encode(noise, "PPM")),
        "unsupported_tga": (".jpg", _encode(noise, "TGA")),
        "corrupt_png": (".png", _corrupt_png()),
        "corrupt_jpeg_header": (".jpg", b"\xff\xd8\xff" + np.random.default_rng(8).bytes(512)),
        "pixel_bomb": (".png", _pixel_bomb()),
    }
    assert tuple(contents) == BROKEN_KINDS
    paths: dict[str, Path] = {}
    for kind, (suffix, data) in contents.items():
        path = directory / f"broken-{kind.replace('_', '-')}{suffix}"
        path.write_bytes(data)
        paths[kind] = path
    return paths


def write_odd_valid_images(directory: Path) -> dict[str, Path]:
    """One file per kind in `ODD_VALID_KINDS`: valid files in the modes and layouts that decoders
    most often get wrong. Each is 40x30 (before orientation) with a left half and a right half of
    different, known colours, so tests can probe (5, 15) and (35, 15) for exact expectations.
    """
    directory.mkdir(parents=True, exist_ok=True)
    writers: dict[str, tuple[str, bytes]] = {
        "cmyk_jpeg": (
            ".jpg",
            _encode(_halves("CMYK", (0, 255, 255, 0), (255, 0, 255, 0)), "JPEG", quality=95),
        ),
        "cmyk_tiff": (".tif", _encode(_halves("CMYK", (0, 255, 255, 0), (0, 0, 0, 255)), "TIFF")),
        "gray_jpeg": (".jpeg", _encode(_halves("L", 30, 220), "JPEG", quality=95)),
        "progressive_jpeg": (
            ".jpe",
            _encode(_halves("RGB", (0, 160, 0), (250, 250, 0)), "JPEG", quality=95, progressive=True),
        ),
        "gray16_png": (".png", _encode(_gray16("<u2", 65535, 32768), "PNG")),
        "gray16_tiff": (".tiff", _encode(_gray16("<u2", 65535, 32768), "TIFF")),
        "gray16_bigendian_tiff": (".tif", _encode(_gray16(">u2", 32768, 0), "TIFF")),
        "int32_tiff": (".tif", _encode(_int32(65535, 32768), "TIFF")),
        "float_tiff": (".tif", _encode(_float(1.0, 0.5), "TIFF")),
        "rgb48_png": (".png", _rgb48_png((65535, 32768, 0), (0, 0, 65535))),
        "rgb48_tiff": (".tiff", _rgb48_tiff((65535, 32768, 0), (0, 0, 65535))),
        "palette_transparency_png": (".png", _encode(_palette_with_transparency(), "PNG")),
        "rgb_colour_key_png": (
            ".png",
            _encode(_halves("RGB", (0, 0, 255), (10, 20, 30)), "PNG", transparency=(10, 20, 30)),
        ),
        "la_png": (".png", _encode(_halves("LA", (0, 255), (0, 0)), "PNG")),
        "rgba_png": (".png", _encode(_halves("RGBA", (255, 0, 0, 255), (255, 0, 0, 128)), "PNG")),
        "webp_alpha": (
            ".webp",
            _encode(_halves("RGBA", (0, 0, 255, 255), (0, 0, 255, 0)), "WEBP", lossless=True),
        ),
        "animated_gif": (".gif", _animation("GIF")),
        "animated_webp": (".webp", _animation("WEBP", lossless=True)),
        "apng": (".png", _animation("PNG")),
        "exif_rotated_jpeg": (".jpg", _exif_rotated()),
        "bilevel_tiff": (".tiff", _encode(_halves("1", 0, 1), "TIFF")),
        "ycbcr_tiff": (".tif", _encode(_halves("RGB", (255, 0, 0), (0, 0, 255)).convert("YCbCr"), "TIFF")),
        "lab_tiff": (".tif", _encode(_halves("LAB", (255, 128, 128), (0, 128, 128)), "TIFF")),
        "multipage_tiff": (".tiff", _animation("TIFF")),
        "mpo": (".jpg", _animation("MPO", quality=95)),
        "bmp_as_dib": (".dib", _encode(_halves("RGB", (255, 0, 0), (0, 255, 0)), "BMP")),
        "upper_case_suffix": (".JPG", _encode(_halves("RGB", (255, 0, 0), (0, 255, 0)), "JPEG", quality=95)),
    }
    assert tuple(writers) == ODD_VALID_KINDS
    paths: dict[str, Path] = {}
    for kind, (suffix, data) in writers.items():
        path = directory / f"odd-{kind.replace('_', '-')}{suffix}"
        path.write_bytes(data)
        paths[kind] = path
    return paths


def _picture(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xs * np.cos(angle) + ys * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = start + ramp[..., None] * (end - start)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    pixels[top : top + height // 3, left : left + width // 3] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 18, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _halves(mode: str, left: Any, right: Any) -> Image.Image:
    width, height = ODD_SIZE
    image = Image.new(mode, ODD_SIZE, left)
    image.paste(Image.new(mode, (width // 2, height), right), (width // 2, 0))
    return image


def _two_halves_array(dtype: str, left: float, right: float) -> np.ndarray:
    width, height = ODD_SIZE
    values = np.full((height, width), left, dtype=dtype)
    values[:, width // 2 :] = right
    return values


def _gray16(dtype: str, left: int, right: int) -> Image.Image:
    mode = "I;16B" if dtype.startswith(">") else "I;16"
    return Image.frombytes(mode, ODD_SIZE, _two_halves_array(dtype, left, right).tobytes())


def _int32(left: int, right: int) -> Image.Image:
    return Image.fromarray(_two_halves_array("<i4", left, right))


def _float(left: float, right: float) -> Image.Image:
    return Image.fromarray(_two_halves_array("<f4", left, right))


def _rgb48_rows(left: tuple[int, int, int], right: tuple[int, int, int], dtype: str) -> np.ndarray:
    width, height = ODD_SIZE
    values = np.empty((height, width, 3), dtype=dtype)
    values[:, : width // 2] = left
    values[:, width // 2 :] = right
    return values


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _rgb48_png(left: tuple[int, int, int], right: tuple[int, int, int]) -> bytes:
    """Pillow cannot write 16-bit RGB PNGs, so this writes the chunks itself."""
    values = _rgb48_rows(left, right, ">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in values)
    return _png(*ODD_SIZE, 16, 2, zlib.compress(rows))


def _rgb48_tiff(left: tuple[int, int, int], right: tuple[int, int, int]) -> bytes:
    """An uncompressed 48-bit RGB TIFF, written by hand because Pillow cannot save one."""
    width, height = ODD_SIZE
    pixels = _rgb48_rows(left, right, "<u2").tobytes()
    entries = 10
    bits_offset = 8 + 2 + entries * 12 + 4
    data_offset = bits_offset + 6
    tags = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 3, bits_offset),  # BitsPerSample, 3 SHORTs stored after the IFD
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 2),  # PhotometricInterpretation: RGB
        (273, 4, 1, data_offset),  # StripOffsets
        (277, 3, 1, 3),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, len(pixels)),  # StripByteCounts
        (284, 3, 1, 1),  # PlanarConfiguration: chunky
    ]
    ifd = struct.pack("<H", entries)
    for tag, kind, count, value in tags:
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 and count == 1 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<3H", 16, 16, 16) + pixels


def _palette_with_transparency() -> Image.Image:
    """Index 0 is transparent green (must show white), index 1 opaque magenta."""
    image = _halves("P", 0, 1)
    image.putpalette([0, 255, 0, 255, 0, 255] + [0, 0, 0] * 254)
    image.info["transparency"] = 0
    return image


def _animation(fmt: str, **options: Any) -> bytes:
    """Red, then green, then blue: the first frame decoded must be the red one."""
    frames = [Image.new("RGB", ODD_SIZE, colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    if fmt in ("GIF", "PNG", "WEBP"):
        options.update(duration=100, loop=0)
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], **options)


def _exif_rotated() -> bytes:
    """Stored 40x30 with red left, blue right; orientation 6 shows it 30x40, red on top."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(_halves("RGB", (255, 0, 0), (0, 0, 255)), "JPEG", quality=95, exif=exif)


def _corrupt_png() -> bytes:
    """A correct signature, header and chunk checksums around image data that is not zlib."""
    garbage = np.random.default_rng(5).bytes(600)
    return _png(32, 32, 8, 2, garbage)


@functools.cache
def _pixel_bomb() -> bytes:
    """A 1-bit PNG of 30000x30000 blank pixels: about 110 KB on disk, 900 MB once decoded.

    The data is complete, so the file is a real bomb; only a limit on header size stops it.
    """
    width, height = PIXEL_BOMB_SIZE
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    block = row * 1000
    idat = b"".join(compressor.compress(block) for _ in range(height // 1000)) + compressor.flush()
    return _png(width, height, 1, 0, idat)
