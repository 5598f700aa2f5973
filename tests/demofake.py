"""A demo recipe small enough for tests: a shrunk ViT beside the real MiniLM text side, few steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from blipsearch.train.demo_model import DemoArchitecture
from blipsearch.train.demo_settings import DemoRecipe

SMALL = DemoArchitecture(
    image_size=32, patch_size=16, vision_width=32, vision_layers=1, vision_heads=2, decoder_layers=1
)


def small_recipe(tmp_path: Path, **changes: object) -> DemoRecipe:
    recipe = DemoRecipe.plain(
        out=tmp_path / "run",
        cache=tmp_path / "cache",
        arch=SMALL,
        itc_steps=40,
        itc_batch=3,
        itc_lr=1e-4,
        warmup_steps=2,
        itm_steps=4,
        itm_batch=2,
        caption_steps=4,
        caption_batch=3,
        validate_every=20,
        clean_fraction=0.5,
    )
    return replace(recipe, **changes)
