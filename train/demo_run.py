"""What the demo model's card and its notes both read from a run: its files, its targets, the labels
of its styles and its timing, so that the two documents say the same thing in the same words."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from blipsearch.machine import machine_description
from blipsearch.train.demo_settings import DemoRecipe
from blipsearch.train.emoji_packages import PACKAGES

TARGETS = {"holdout_t2i_r1": 50.0, "holdout_t2i_r5": 80.0, "catalog_t2i_r1": 95.0, "holdout_captions": 50.0}

RECIPE_DEFAULTS = {f.name: f.default for f in fields(DemoRecipe)}
"""What `blipsearch train demo` runs without options: the card's command names only what differs."""


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def served_ranking(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The re-ranked ranking the demo serves (ITM and ITC together where measured), and its name."""
    for mode in ("ITM+ITC@8", "ITM@8"):
        if mode in entry:
            return mode, entry[mode]
    return "ITC", entry["ITC"]


def style_labels(recipe: dict[str, Any]) -> dict[str, str]:
    """Each style's brand with its role in the run, the catalog named as such."""
    train_style = (recipe.get("train_styles") or ["google"])[0]
    holdout = recipe.get("holdout_style", "twitter")
    roles = {holdout: "held out", **{s: "trained on" for s in recipe.get("train_styles") or []}}
    roles[train_style] = "trained on; the demo catalog"
    return {
        style: f"{package.brand} ({style}, {roles.get(style, 'not used')})"
        for style, package in PACKAGES.items()
    }


def time_line(recipe: dict[str, Any], timing: dict[str, float]) -> str:
    """Minutes per phase and where they ran; a run older than the machine key is credited to the
    machine writing the card."""
    machine = recipe.get("machine") or machine_description()
    minutes = sum(timing.values()) / 60 if timing else 0.0
    return (
        (
            f"Time on {machine}: "
            if not recipe.get("itc_from")
            else f"Time (phase 1 as its own run recorded it; phases 2 and 3 on {machine}): "
        )
        + ", ".join(f"{phase} {seconds / 60:.1f} min" for phase, seconds in timing.items())
        + f"; {minutes:.1f} min of training in all."
    )
