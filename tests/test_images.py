"""The decoding policy on generated files: what is refused and why, and what every odd file becomes."""

from __future__ import annotations

import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from blipsearch.errors import InvalidInputError
from blipsearch.images import (
    ALLOWED_FORMATS,
    IMAGE_SUFFIXES,
    DecodedImage,
    decode_image,
    open_image,
    read_image_file,
    to_rgb,
)

from imagesets import (
    BROKEN_KINDS,
    ODD_SIZE,
    ODD_VALID_KINDS,
    TEST_MAX_BYTES,
    TEST_MAX_PIXELS,
    write_broken_images,
    write_odd_valid_images,
    write_valid_images,
)

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 1_000_000}

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)

BROKEN_REASONS = {
    "empty": r"is empty\.$",
    "truncated_jpeg": r"is truncated \(",
    "jpeg_missing_end": r"is truncated \(",
    "truncated_png": r"is truncated \(",
    "truncated_gif": r"is truncated \(",
    "random_bytes": r"is not an image file\.$",
    "text_file": r"is not an image file\.$",
    "unsupported_format": r"has unsupported format PPM\.$",
    "unsupported_tga": r"has unsupported format TGA\.$",
    "corrupt_png": r"is corrupt \(",
    "corrupt_jpeg_header": r"is corrupt \(",
    "pixel_bomb": r"is 30000x30000 pixels, over the 10000000-pixel limit\.$",
}

# kind: (format, (width, height) after orientation, frames, colour at the left probe, at the right probe)
ODD_EXPECTED: dict[str, tuple[str, tuple[int, int], int, tuple[int, int, int], tuple[int, int, int]]] = {
    "cmyk_jpeg": ("JPEG", ODD_SIZE, 1, RED, GREEN),
    "cmyk_tiff": ("TIFF", ODD_SIZE, 1, RED, BLACK),
    "gray_jpeg": ("JPEG", ODD_SIZE, 1, (30, 30, 30), (220, 220, 220)),
    "progressive_jpeg": ("JPEG", ODD_SIZE, 1, (0, 160, 0), (250, 250, 0)),
    "gray16_png": ("PNG", ODD_SIZE, 1, WHITE, (128, 128, 128)),
    "gray16_tiff": ("TIFF", ODD_SIZE, 1, WHITE, (128, 128, 128)),
    "gray16_bigendian_tiff": ("TIFF", ODD_SIZE, 1, (128, 128, 128), BLACK),
    "int32_tiff": ("TIFF", ODD_SIZE, 1, WHITE, (128, 128, 128)),
    "float_tiff": ("TIFF", ODD_SIZE, 1, WHITE, (128, 128, 128)),
    "rgb48_png": ("PNG", ODD_SIZE, 1, (255, 128, 0), BLUE),
    "rgb48_tiff": ("TIFF", ODD_SIZE, 1, (255, 128, 0), BLUE),
    "palette_transparency_png": ("PNG", ODD_SIZE, 1, WHITE, (255, 0, 255)),
    "rgb_colour_key_png": ("PNG", ODD_SIZE, 1, BLUE, WHITE),
    "la_png": ("PNG", ODD_SIZE, 1, BLACK, WHITE),
    "rgba_png": ("PNG", ODD_SIZE, 1, RED, (255, 127, 127)),
    "webp_alpha": ("WEBP", ODD_SIZE, 1, BLUE, WHITE),
    "animated_gif": ("GIF", ODD_SIZE, 3, RED, RED),
    "animated_webp": ("WEBP", ODD_SIZE, 3, RED, RED),
    "apng": ("PNG", ODD_SIZE, 3, RED, RED),
    # Stored red-left, blue-right with orientation 6: shown upright it is red on top, blue below.
    "exif_rotated_jpeg": ("JPEG", (ODD_SIZE[1], ODD_SIZE[0]), 1, RED, BLUE),
    "bilevel_tiff": ("TIFF", ODD_SIZE, 1, BLACK, WHITE),
    "ycbcr_tiff": ("TIFF", ODD_SIZE, 1, RED, BLUE),
    "lab_tiff": ("TIFF", ODD_SIZE, 1, WHITE, BLACK),
    "multipage_tiff": ("TIFF", ODD_SIZE, 3, RED, RED),
    "mpo": ("MPO", ODD_SIZE, 3, RED, RED),
    "bmp_as_dib": ("BMP", ODD_SIZE, 1, RED, GREEN),
    "upper_case_suffix": ("JPEG", ODD_SIZE, 1, RED, GREEN),
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_broken_images(tmp_path_factory.mktemp("broken"))


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_odd_valid_images(tmp_path_factory.mktemp("odd"))


def _decode(path: Path, max_pixels: int = TEST_MAX_PIXELS) -> DecodedImage:
    return decode_image(path.read_bytes(), max_pixels=max_pixels, name=path.name)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _probes(decoded: DecodedImage) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The centres of the two halves; for a portrait result, of the top and bottom halves."""
    width, height = decoded.width, decoded.height
    if width >= height:
        first, second = (width // 4, height // 2), (3 * width // 4, height // 2)
    else:
        first, second = (width // 2, height // 4), (width // 2, 3 * height // 4)
    return tuple(decoded.image.getpixel(first)), tuple(decoded.image.getpixel(second))


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- the broken set ------------------------------------------------------------------------------


def test_broken_set_has_every_kind_with_an_image_suffix(broken: dict[str, Path]) -> None:
    assert tuple(broken) == BROKEN_KINDS == tuple(BROKEN_REASONS)
    assert all(path.suffix.lower() in IMAGE_SUFFIXES for path in broken.values())
    assert len({path.name for path in broken.values()}) == len(broken)
    assert all(path.stat().st_size < TEST_MAX_BYTES for path in broken.values())
    assert broken["pixel_bomb"].stat().st_size < 2_000_000
    assert broken["empty"].stat().st_size == 0


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_every_broken_kind_is_refused_with_its_reason(broken: dict[str, Path], kind: str) -> None:
    path = broken[kind]
    with pytest.raises(InvalidInputError) as refused:
        _decode(path)
    message = str(refused.value)
    assert message.startswith(path.name + " ")
    assert message.endswith(".") and "\n" not in message and len(message) < 200
    assert re.search(BROKEN_REASONS[kind], message), message


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_open_image_refuses_the_broken_set_too(broken: dict[str, Path], kind: str) -> None:
    with pytest.raises(InvalidInputError):
        open_image(broken[kind], max_bytes=TEST_MAX_BYTES, max_pixels=TEST_MAX_PIXELS)


@pytest.mark.parametrize("kind", ["truncated_jpeg", "jpeg_missing_end", "truncated_png", "truncated_gif"])
def test_truncation_is_caught_even_when_pillow_is_told_to_allow_it(
    broken: dict[str, Path], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another library in the process may set this global; Pillow then fills the gap with grey."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with Image.open(broken[kind]) as image:
        image.load()  # proves Pillow alone would accept the file now
    with pytest.raises(InvalidInputError, match="is truncated"):
        _decode(broken[kind])


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow on a cut TIFF header
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
@pytest.mark.parametrize("keep", [16, 30])
def test_a_file_cut_inside_its_header_is_truncated_not_unknown(fmt: str, keep: int) -> None:
    data = _encode(Image.new("RGB", (8, 8), RED), fmt)
    with pytest.raises(InvalidInputError, match=r"^cut is truncated \("):
        decode_image(data[:keep], max_pixels=64, name="cut")


@pytest.mark.parametrize("data", [b"x", b"\xff\xd8", b"P6", b"\x00" * 3, b"RIFF\x00\x00\x00\x00WEBP"])
def test_scraps_too_short_for_any_signature_are_not_images(data: bytes) -> None:
    with pytest.raises(InvalidInputError, match=r"^scrap is not an image file\.$"):
        decode_image(data, max_pixels=64, name="scrap")


def test_png_cut_just_before_its_end_chunk_is_truncated() -> None:
    data = _encode(Image.new("RGB", (20, 20), RED), "PNG")
    assert data.endswith(b"IEND\xaeB`\x82")
    with pytest.raises(InvalidInputError, match="is truncated"):
        decode_image(data[:-12], max_pixels=TEST_MAX_PIXELS, name="cut.png")


def test_pixel_limit_is_checked_before_decoding_and_is_ours_not_pillows(
    broken: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _encode(Image.new("RGB", (200, 100), GREEN), "PNG")
    with pytest.raises(InvalidInputError, match="200x100 pixels, over the 19999-pixel limit"):
        decode_image(data, max_pixels=19_999, name="big.png")
    assert decode_image(data, max_pixels=20_000).width == 200

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow would call this a bomb
    assert decode_image(data, max_pixels=20_000, name="big.png").height == 100
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's guard switched off entirely
    with pytest.raises(InvalidInputError, match="pixel limit"):
        _decode(broken["pixel_bomb"])


def test_every_allowed_format_is_accepted_and_nothing_else() -> None:
    image = Image.new("RGB", (8, 8), RED)
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        assert decode_image(_encode(image, fmt), max_pixels=64).format == fmt
    for fmt in ("PPM", "PCX", "ICO", "TGA", "SGI", "QOI"):
        with pytest.raises(InvalidInputError, match=f"unsupported format {fmt}"):
            decode_image(_encode(image, fmt), max_pixels=64, name="x.png")
    assert frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"}) == ALLOWED_FORMATS


# --- the odd valid set ---------------------------------------------------------------------------


def test_odd_set_covers_every_kind(odd: dict[str, Path]) -> None:
    assert tuple(odd) == ODD_VALID_KINDS == tuple(ODD_EXPECTED)
    assert all(path.suffix.lower() in IMAGE_SUFFIXES for path in odd.values())
    assert len({path.name for path in odd.values()}) == len(odd)


@pytest.mark.parametrize("kind", ODD_VALID_KINDS)
def test_every_odd_kind_decodes_to_the_right_rgb_picture(odd: dict[str, Path], kind: str) -> None:
    fmt, size, frames, first, second = ODD_EXPECTED[kind]
    decoded = _decode(odd[kind])
    assert decoded.image.mode == "RGB"
    assert (decoded.format, (decoded.width, decoded.height), decoded.frames) == (fmt, size, frames)
    assert decoded.image.size == size
    left, right = _probes(decoded)
    assert _close(left, first) and _close(right, second), (left, right)


def test_the_odd_files_really_are_odd(odd: dict[str, Path]) -> None:
    """Guards the generator: each kind must reach the decoder in the mode it claims to test."""
    modes = {}
    for kind, path in odd.items():
        with Image.open(path) as image:
            modes[kind] = image.mode
    assert modes["cmyk_jpeg"] == modes["cmyk_tiff"] == "CMYK"
    assert b"Adobe" in odd["cmyk_jpeg"].read_bytes()  # the inverted-CMYK variant
    assert modes["gray16_png"] == modes["gray16_tiff"] == "I;16"
    assert modes["gray16_bigendian_tiff"] == "I;16B"
    assert modes["int32_tiff"] == "I" and modes["float_tiff"] == "F"
    assert modes["palette_transparency_png"] == "P" and modes["la_png"] == "LA"
    assert modes["bilevel_tiff"] == "1" and modes["ycbcr_tiff"] == "YCbCr" and modes["lab_tiff"] == "LAB"
    for kind in ("rgb48_tiff", "rgb48_png"):
        with Image.open(odd[kind]) as image:
            args = image.tile[0].args
            rawmode = args if isinstance(args, str) else args[0]
            assert image.mode == "RGB" and rawmode.startswith("RGB;16"), kind


def test_sixteen_bit_values_are_scaled_not_clipped(odd: dict[str, Path]) -> None:
    with Image.open(odd["gray16_png"]) as image:
        assert image.convert("RGB").getpixel((35, 15)) == WHITE  # what a plain convert does
    assert _decode(odd["gray16_png"]).image.getpixel((35, 15)) == (128, 128, 128)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_eight_exif_orientations(orientation: int) -> None:
    """Stored 4x2 with red at the top-left and blue at the top-right; the EXIF tag says where
    those stored corners belong on screen, per the TIFF/EXIF definition of each value."""
    stored = Image.new("RGB", (4, 2), WHITE)
    stored.putpixel((0, 0), RED)
    stored.putpixel((3, 0), BLUE)
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(_encode(stored, "PNG", exif=exif), max_pixels=100)
    size = (4, 2) if orientation <= 4 else (2, 4)
    assert (decoded.width, decoded.height) == decoded.image.size == size
    right, bottom = size[0] - 1, size[1] - 1
    red_at, blue_at = {
        1: ((0, 0), (right, 0)),
        2: ((right, 0), (0, 0)),
        3: ((right, bottom), (0, bottom)),
        4: ((0, bottom), (right, bottom)),
        5: ((0, 0), (0, bottom)),
        6: ((right, 0), (right, bottom)),
        7: ((right, bottom), (right, 0)),
        8: ((0, bottom), (0, 0)),
    }[orientation]
    assert decoded.image.getpixel(red_at) == RED and decoded.image.getpixel(blue_at) == BLUE


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_unreadable_exif_counts_as_upright() -> None:
    data = _encode(Image.new("RGB", (6, 4), GREEN), "JPEG")
    broken_exif = data[:2] + b"\xff\xe1\x00\x10Exif\x00\x00MM\x00*\xff\xff\xff\xff" + data[2:]
    decoded = decode_image(broken_exif, max_pixels=100)
    assert decoded.image.size == (6, 4) and _close(decoded.image.getpixel((3, 2)), GREEN)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("HSV", (2, 2), (0, 255, 255)), RED),
        (Image.new("YCbCr", (2, 2), (76, 85, 255)), (254, 0, 0)),
        (Image.new("LAB", (2, 2), (128, 128, 128)), (119, 119, 119)),
        (Image.new("RGBa", (2, 2), (0, 0, 0, 0)), WHITE),
        (Image.new("RGBa", (2, 2), (100, 0, 0, 255)), (100, 0, 0)),
        (Image.new("La", (2, 2), (0, 0)), WHITE),
        (Image.new("La", (2, 2), (64, 128)), (191, 191, 191)),  # 128 unpremultiplied, over white
        (Image.new("PA", (2, 2), (0, 0)), WHITE),
        (Image.new("1", (2, 2), 1), WHITE),
        (Image.fromarray(np.full((2, 2), 70_000, np.int32)), WHITE),  # constant beyond 16 bits: clipped
        (Image.fromarray(np.full((2, 2), 0.5, np.float32)), (128, 128, 128)),  # 0..1: times 255
        (Image.fromarray(np.full((2, 2), 200.0, np.float32)), (200, 200, 200)),  # 0..255: as is
    ],
)
def test_to_rgb_on_modes_files_rarely_hold(image: Image.Image, expected: tuple[int, int, int]) -> None:
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted is not image
    assert _close(converted.getpixel((0, 0)), expected, tolerance=1)


def test_wide_range_integers_and_floats_are_stretched_min_max() -> None:
    ints = Image.fromarray(np.array([[-1000, 1_000_000]], np.int32))
    assert [to_rgb(ints).getpixel((x, 0)) for x in (0, 1)] == [BLACK, WHITE]
    floats = Image.fromarray(np.array([[-2.0, 0.0, 2.0, np.nan]], np.float32))
    assert [to_rgb(floats).getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 128]


# --- independence and threads --------------------------------------------------------------------


def test_decoded_image_is_detached_from_the_input() -> None:
    picture = Image.effect_noise((32, 24), 40).convert("RGB")
    data = bytearray(_encode(picture, "PNG"))
    decoded = decode_image(data, max_pixels=10_000)  # type: ignore[arg-type]
    data[:] = b"\x00" * len(data)
    assert not isinstance(decoded.image, ImageFile.ImageFile)
    assert decoded.image.tobytes() == picture.tobytes() and decoded.image.info == {}


def _outcome(path: Path) -> tuple[str, ...]:
    try:
        decoded = _decode(path)
    except InvalidInputError as exc:
        return ("refused", str(exc))
    digest = str(hash(decoded.image.tobytes()))
    return (decoded.format, str(decoded.width), str(decoded.height), str(decoded.frames), digest)


def test_many_threads_decode_the_whole_set_like_one_thread(
    tmp_path: Path, broken: dict[str, Path], odd: dict[str, Path]
) -> None:
    paths = [*write_valid_images(tmp_path, 24, seed=5), *odd.values(), *broken.values()] * 3
    serial = [_outcome(path) for path in paths]
    with ThreadPoolExecutor(max_workers=16) as pool:
        threaded = list(pool.map(_outcome, paths))
    assert threaded == serial
    assert sum(outcome[0] == "refused" for outcome in serial) == 3 * len(broken)


# --- the valid set -------------------------------------------------------------------------------


def test_valid_set_is_distinct_deterministic_and_nested(tmp_path: Path) -> None:
    paths = write_valid_images(tmp_path / "a", 12, seed=4, size=(50, 30))
    again = write_valid_images(tmp_path / "b", 12, seed=4, size=(50, 30))
    other = write_valid_images(tmp_path / "c", 12, seed=5, size=(50, 30))
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    assert [p.read_bytes() for p in paths] != [p.read_bytes() for p in other]
    decoded = [_decode(path) for path in paths]
    assert {d.format for d in decoded} == {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
    assert all(d.image.size == (50, 30) for d in decoded)
    assert len({d.image.tobytes() for d in decoded}) == 12
    folders = {path.parent.relative_to(tmp_path / "a").as_posix() for path in paths}
    assert folders == {".", "nested", "nested/deeper"}
    assert all(path.suffix in IMAGE_SUFFIXES for path in paths)


# --- reading files -------------------------------------------------------------------------------


def test_read_image_file_limits_and_failures(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(_encode(Image.new("RGB", (10, 10), RED), "PNG"))
    size = path.stat().st_size
    assert read_image_file(path, max_bytes=size) == path.read_bytes()
    over = rf"^photo.png is {size} bytes, over the {size - 1}-byte limit\.$"
    with pytest.raises(InvalidInputError, match=over):
        read_image_file(path, max_bytes=size - 1)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InvalidInputError, match=r"^empty.jpg is empty\.$"):
        read_image_file(tmp_path / "empty.jpg", max_bytes=10)
    with pytest.raises(InvalidInputError, match=r"^Cannot read absent.png: No such file"):
        read_image_file(tmp_path / "absent.png", max_bytes=10)
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(InvalidInputError, match="not a regular file"):
        read_image_file(tmp_path / "folder.jpg", max_bytes=10**6)
    with pytest.raises(InvalidInputError, match=r"^Cannot read some/where.png: No such file"):
        read_image_file(tmp_path / "absent.png", max_bytes=10, name="some/where.png")


@pytest.mark.timeout(20)
def test_a_fifo_with_an_image_name_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        read_image_file(fifo, max_bytes=10**6)


def test_decode_refuses_empty_bytes() -> None:
    with pytest.raises(InvalidInputError, match=r"^nothing.jpg is empty\.$"):
        decode_image(b"", max_pixels=100, name="nothing.jpg")


# --- open_image, the one-step form the CLI uses --------------------------------------------------


def test_open_image_composites_orients_and_limits(tmp_path: Path) -> None:
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(clear)
    assert open_image(clear, **LIMITS).getpixel((0, 0)) == WHITE
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "rotated.jpg"
    Image.new("RGB", (40, 20), BLUE).save(rotated, exif=exif)
    assert open_image(rotated, **LIMITS).size == (20, 40)
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(big)
    with pytest.raises(InvalidInputError, match="pixel limit"):
        open_image(big, max_bytes=10**6, max_pixels=19_999)
    with pytest.raises(InvalidInputError, match="byte limit"):
        open_image(big, max_bytes=10, max_pixels=10**6)
    assert open_image(big, max_bytes=10**6, max_pixels=20_000).size == (200, 100)
    with pytest.raises(InvalidInputError, match="Cannot read"):
        open_image(tmp_path / "absent.png", **LIMITS)
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(InvalidInputError, match=f"^{re.escape(str(tmp_path / 'junk.jpg'))} is corrupt"):
        open_image(tmp_path / "junk.jpg", **LIMITS)  # the CLI shows the path the user typed


def _big_jpeg(size: tuple[int, int], orientation: int | None = None) -> bytes:
    import io

    x = np.linspace(0, 6, size[0])[None, :]
    y = np.linspace(0, 4, size[1])[:, None]
    base = (np.sin(x * 3) + np.cos(y * 2)) * 60 + 128
    pixels = np.stack([base, base[::-1], np.fliplr(base)], axis=-1).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def test_reduced_jpeg_decoding_covers_the_target_and_reports_the_file_size() -> None:
    data = _big_jpeg((2000, 1500))
    full = decode_image(data, max_pixels=10**8)
    reduced = decode_image(data, max_pixels=10**8, at_least=(384, 384))
    assert (full.width, full.height) == (reduced.width, reduced.height) == (2000, 1500)
    assert full.image.size == (2000, 1500)
    assert min(reduced.image.size) >= 384 and reduced.image.width <= 1000, reduced.image.size
    # What the model sees is nearly the same picture.
    a = np.asarray(full.image.resize((384, 384), Image.Resampling.BICUBIC), dtype=np.float32)
    b = np.asarray(reduced.image.resize((384, 384), Image.Resampling.BICUBIC), dtype=np.float32)
    assert np.abs(a - b).mean() < 3.0


def test_reduced_decoding_keeps_exif_rotation_and_leaves_other_formats_alone() -> None:
    rotated = decode_image(_big_jpeg((1600, 1200), orientation=6), max_pixels=10**8, at_least=(384, 384))
    assert (rotated.width, rotated.height) == (1200, 1600)
    assert rotated.image.height > rotated.image.width
    import io

    png = io.BytesIO()
    Image.new("RGB", (1600, 1200), (1, 2, 3)).save(png, "PNG")
    decoded = decode_image(png.getvalue(), max_pixels=10**8, at_least=(384, 384))
    assert decoded.image.size == (1600, 1200)


def test_open_image_can_name_the_file_and_decode_reduced(tmp_path: Path) -> None:
    path = tmp_path / "secret" / "big.jpg"
    path.parent.mkdir()
    path.write_bytes(_big_jpeg((2000, 1500)))
    reduced = open_image(path, max_bytes=10**8, max_pixels=10**8, at_least=(384, 384))
    assert min(reduced.size) >= 384 and reduced.width <= 1000
    broken = tmp_path / "secret" / "broken.jpg"
    broken.write_bytes(b"")
    with pytest.raises(InvalidInputError, match=r"^item 7 is empty") as raised:
        open_image(broken, max_bytes=10**8, max_pixels=10**8, name="item 7")
    assert "secret" not in str(raised.value)
