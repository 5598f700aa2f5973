"""A slice of the shipped demo catalog, indexed with the shipped demo model, behind the real app.

The browser modules for browsing, the item page and the home page (tests/test_web_*.py) share it:
real emoji pictures of 64 px (so the item page must draw a tiny picture large), categories, brands
and prices from the demo manifest, and the demo model, so the home page's demo notice shows. The
slice is indexed once per test session (no captions: the pages never need them) and each module
starts its own server on it. Import the fixtures: `from webdemo import browser, demo_server, ...`.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from blipsearch.demo import demo_assets, demo_rerank_itc_weight
from blipsearch.settings import Settings

from browser import Page, launched_chromium
from live_server import serving

DEMO = Path(__file__).resolve().parents[1] / "demo"
EVERY = 16
"""One product in 16 of the demo manifest: about 120 items from every category."""
MAX_UPLOAD_BYTES = 300_000
"""Small, so a test can build a file over the limit cheaply."""
API_KEY = "web-demo-key"
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 375, "height": 812}

__all__ = ["browser", "demo_catalog", "demo_server", "open_page"]
"""The fixtures a module gets with `from webdemo import *`."""

_indexed: dict[str, Any] = {}


def demo_rows() -> list[dict[str, str]]:
    with open(DEMO / "catalog" / "catalog.csv", encoding="utf-8", newline="") as handle:
        return [row for index, row in enumerate(csv.DictReader(handle)) if index % EVERY == 0]


def _index_once(root: Path) -> dict[str, Any]:
    """The slice's manifest (absolute image paths) and its indexed data directory."""
    if _indexed:
        return _indexed
    rows = demo_rows()
    manifest = root / "slice.csv"
    with manifest.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "image": str((DEMO / "catalog" / row["image"]).resolve())})
    assets = demo_assets(DEMO)
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLIPSEARCH_")} | {
        "BLIPSEARCH_DATA_DIR": str(root / "data"),
        "BLIPSEARCH_RETRIEVAL_MODEL": str(assets.retrieval),
        "BLIPSEARCH_CAPTION_MODEL": str(assets.caption),
        "BLIPSEARCH_DEVICE": "cpu",
        "BLIPSEARCH_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "blipsearch", "index", str(manifest), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    _indexed.update(root=root, rows=rows, manifest=manifest)
    return _indexed


@pytest.fixture(scope="module")
def demo_catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _indexed or _index_once(tmp_path_factory.mktemp("web-demo"))


def demo_settings(root: Path, **overrides: Any) -> Settings:
    assets = demo_assets(DEMO)
    values: dict[str, Any] = {
        "data_dir": root / "data",
        "retrieval_model": str(assets.retrieval),
        "caption_model": str(assets.caption),
        "device": "cpu",
        "dtype": "float32",
        "offline": True,
        "api_key": API_KEY,
        "max_image_bytes": MAX_UPLOAD_BYTES,
        "rerank_itc_weight": demo_rerank_itc_weight(assets),
        "demo_dir": DEMO,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="module")
def demo_server(demo_catalog: dict[str, Any]) -> Iterator[str]:
    from blipsearch.api.app import create_app

    with serving(create_app(demo_settings(demo_catalog["root"]))) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def open_page(browser: Any, demo_server: str) -> Iterator[Callable[..., Page]]:
    """A factory of pages at desktop (default) or phone size; every one is checked clean at the end."""
    contexts: list[Any] = []
    pages: list[Page] = []

    def make(phone: bool = False) -> Page:
        if phone:
            context = browser.new_context(
                viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
            )
        else:
            context = browser.new_context(viewport=DESKTOP)
        contexts.append(context)
        page = Page(context.new_page(), demo_server)
        pages.append(page)
        return page

    yield make
    for context in contexts:
        context.close()
