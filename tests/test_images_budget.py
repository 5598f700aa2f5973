"""The decoded-pixel budget of query images: read from the header, counted after JPEG reduction."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from blipsearch.errors import InvalidInputError, TooLargeError
from blipsearch.images import decode_image


def _encoded(size: tuple[int, int], fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP"])
def test_formats_that_cannot_reduce_are_refused_over_the_budget(fmt: str) -> None:
    data = _encoded((1200, 1000), fmt)
    with pytest.raises(TooLargeError, match="1200x1000 pixels, over the 1000000-pixel limit"):
        decode_image(data, max_pixels=10_000_000, at_least=(384, 384), max_decoded_pixels=1_000_000)
    decoded = decode_image(data, max_pixels=10_000_000, at_least=(384, 384), max_decoded_pixels=1_200_000)
    assert decoded.image.size == (1200, 1000)


def test_a_jpeg_counts_the_pixels_it_decodes_after_reduction() -> None:
    data = _encoded((3200, 2400), "JPEG")
    decoded = decode_image(data, max_pixels=10_000_000, at_least=(384, 384), max_decoded_pixels=1_000_000)
    assert (decoded.width, decoded.height) == (3200, 2400), "the file's own size is reported"
    assert decoded.image.size == (800, 600), "decoded at 1/4 scale, the least that keeps 384 px a side"
    with pytest.raises(TooLargeError):
        decode_image(data, max_pixels=10_000_000, at_least=(2000, 2000), max_decoded_pixels=1_000_000)


def test_the_file_pixel_limit_is_a_too_large_input_error() -> None:
    with pytest.raises(TooLargeError) as refused:
        decode_image(_encoded((300, 200), "PNG"), max_pixels=50_000)
    assert isinstance(refused.value, InvalidInputError)
