"""The demo recipe's settings: the checks they must pass together before any data loads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from blipsearch.errors import InvalidInputError
from blipsearch.train.demo_settings import check_caption_styles

from demofake import small_recipe


def test_caption_styles_must_be_training_styles_and_include_the_first(tmp_path: Path) -> None:
    recipe = small_recipe(tmp_path, train_styles=("google", "emojione"), style_weights=(1.0, 9.0))
    check_caption_styles(replace(recipe, caption_styles=("google",)))
    with pytest.raises(InvalidInputError, match="not training styles"):
        check_caption_styles(replace(recipe, caption_styles=("google", "openmoji")))
    with pytest.raises(InvalidInputError, match="must include 'google'"):
        check_caption_styles(replace(recipe, caption_styles=("emojione",)))
