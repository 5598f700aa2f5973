"""Training images: seeded augmentation, clean images as indexed, and styles drawn by weight."""

from __future__ import annotations

from pathlib import Path

import torch

from blipsearch.train.augment import augment, train_images
from blipsearch.train.emoji_classes import flatten_on_white, load_classes

from demofake import small_recipe
from emojifake import fake_codepoint_package, fake_package


def test_augment_is_seeded_and_clean_images_match_indexing() -> None:
    rgba = torch.rand(6, 4, 32, 32)
    first = augment(rgba, torch.Generator().manual_seed(1), clean_fraction=0.0)
    again = augment(rgba, torch.Generator().manual_seed(1), clean_fraction=0.0)
    other = augment(rgba, torch.Generator().manual_seed(2), clean_fraction=0.0)
    assert first.shape == (6, 3, 32, 32) and float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(first, again) and not torch.equal(first, other)
    clean = augment(rgba, torch.Generator().manual_seed(1), clean_fraction=1.0)
    torch.testing.assert_close(clean, flatten_on_white(rgba))


def test_caption_styles_draw_only_their_styles(tmp_path: Path) -> None:
    """Phase 3 may stay on the catalog's style while phase 1 draws from every training style."""
    cache = tmp_path / "cache"
    packages = {
        "google": fake_package(cache, "google"),
        "twitter": fake_package(cache, "twitter"),
        "emojione": fake_codepoint_package(cache),
    }
    recipe = small_recipe(
        tmp_path, train_styles=("google", "emojione"), style_weights=(1.0, 9.0), clean_fraction=1.0
    )
    classes = load_classes(recipe, packages)
    rows = torch.arange(2).repeat(30)  # both classes have an EmojiOne drawing
    flat = {s: flatten_on_white(classes.pixels[s][:2]) for s in ("google", "emojione")}

    def sources(images: torch.Tensor) -> set[str]:
        return {
            next(s for s, known in flat.items() if torch.allclose(image, known[row]))
            for row, image in zip(rows.tolist(), images, strict=True)
        }

    generator = torch.Generator().manual_seed(0)
    assert sources(train_images(classes, recipe, rows, generator)) == {"google", "emojione"}
    assert sources(train_images(classes, recipe, rows, generator, ("google",))) == {"google"}
