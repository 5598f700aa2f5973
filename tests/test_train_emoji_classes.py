"""The emoji classes as tensors: corrupted captions, code-point styles joining, WebP and SVG decoding."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from blipsearch.errors import InvalidInputError
from blipsearch.train.augment import train_images
from blipsearch.train.emoji_classes import corrupt_captions, flatten_on_white, load_classes

from demofake import small_recipe
from emojifake import PALETTE, fake_codepoint_package, fake_package


def test_corrupt_captions_replaces_the_share_with_other_emojis_captions() -> None:
    captions = [[f"caption {c} {i}" for i in range(10)] for c in range(40)]
    codes = [f"U{c}" for c in range(40)]
    noisy, wrong = corrupt_captions(captions, codes, 0.3, seed=0)
    assert 0.2 < len(wrong) / 400 < 0.4
    for code, text in wrong:
        owner = int(text.split()[1])
        assert f"U{owner}" != code  # always another emoji's text
    assert corrupt_captions(captions, codes, 0.3, seed=0) == (noisy, wrong)
    assert corrupt_captions(captions, codes, 0.0, seed=0) == (captions, set())


def test_codepoint_style_joins_the_classes_and_is_drawn_only_where_it_has_the_emoji(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    packages = {
        "google": fake_package(cache, "google"),
        "twitter": fake_package(cache, "twitter"),
        "emojione": fake_codepoint_package(cache),
    }
    recipe = small_recipe(tmp_path, train_styles=("google", "emojione"), style_weights=(0.0, 1.0))
    classes = load_classes(recipe, packages)
    assert "emojione" not in classes.records  # no names of its own: the classes are Noto's
    present = classes.pixels["emojione"][:, 3].flatten(1).amax(1) > 0
    by_code = dict(zip(classes.unified, present.tolist(), strict=True))
    assert by_code == {"1F600": True, "1F34E": True, "1F44B": False}
    # EmojiOne's own colours (PALETTE[1], [2]) differ from Noto's, so which style was drawn is visible
    assert not torch.equal(classes.pixels["emojione"][0], classes.pixels["google"][0])
    rows = torch.arange(3).repeat(20)
    generator = torch.Generator().manual_seed(0)
    drawn = train_images(classes, replace(recipe, clean_fraction=1.0), rows, generator)
    for row, image in zip(rows.tolist(), drawn, strict=True):
        # weight 0 for Noto: EmojiOne wherever it has the emoji, Noto only where it has not
        source = "emojione" if present[row] else "google"
        torch.testing.assert_close(image, flatten_on_white(classes.pixels[source][row : row + 1])[0])
    with pytest.raises(InvalidInputError, match="first training style"):
        load_classes(replace(recipe, train_styles=("emojione", "google")), packages)


def test_fluent_styles_load_from_webp_and_svg_at_the_model_size(tmp_path: Path) -> None:
    """Fluent 3D ships 256-px WebP and Fluent flat SVG: both become the same RGBA tensor layout."""
    cache = tmp_path / "cache"
    packages = {
        "google": fake_package(cache, "google"),
        "twitter": fake_package(cache, "twitter"),
        "fluent-3d": fake_codepoint_package(cache, "fluent-3d"),
        "fluent-flat": fake_codepoint_package(cache, "fluent-flat"),
    }
    recipe = small_recipe(tmp_path, train_styles=("google", "fluent-3d", "fluent-flat"))
    classes = load_classes(recipe, packages)
    size = recipe.arch.image_size
    apple = classes.unified.index("1F34E")
    for style in ("fluent-3d", "fluent-flat"):
        pixels = classes.pixels[style]
        assert pixels.shape == (len(classes.unified), 4, size, size)
        centre = pixels[apple, :, size // 2, size // 2]
        expected = torch.tensor([*(c / 255 for c in PALETTE[1]), 1.0])
        torch.testing.assert_close(centre, expected, atol=0.02, rtol=0)
        assert pixels[apple, 3, 0, 0] == 0  # transparent outside the drawing
        assert pixels[classes.unified.index("1F44B"), 3].amax() == 0  # not in the set
