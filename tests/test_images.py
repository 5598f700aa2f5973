from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.images import open_image

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 1_000_000}


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    path = _save(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), tmp_path / "clear.png")
    image = open_image(path, **LIMITS)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(Image.new("RGB", (40, 20), (0, 0, 255)), tmp_path / "rotated.jpg", exif=exif)
    assert open_image(path, **LIMITS).size == (20, 40)


def test_grayscale_and_palette_become_rgb(tmp_path: Path) -> None:
    gray = open_image(_save(Image.new("L", (5, 5), 100), tmp_path / "g.png"), **LIMITS)
    palette = open_image(
        _save(Image.new("RGB", (5, 5), (1, 2, 3)).convert("P"), tmp_path / "p.png"), **LIMITS
    )
    assert gray.mode == palette.mode == "RGB"
    assert gray.getpixel((0, 0)) == (100, 100, 100)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a readable image"),
    ],
)
def test_unreadable_files_are_rejected_with_a_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=reason):
        open_image(path, **LIMITS)


def test_truncated_jpeg_is_rejected(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((200, 200), 50).convert("RGB").save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InvalidInputError, match="corrupt or truncated"):
        open_image(path, **LIMITS)


def test_size_limits(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (200, 100)), tmp_path / "big.png")
    with pytest.raises(InvalidInputError, match="pixel limit"):
        open_image(path, max_bytes=10**6, max_pixels=19_999)
    with pytest.raises(InvalidInputError, match="byte limit"):
        open_image(path, max_bytes=10, max_pixels=10**6)
    assert open_image(path, max_bytes=10**6, max_pixels=20_000).size == (200, 100)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="Cannot read"):
        open_image(tmp_path / "absent.png", **LIMITS)
