"""Debian's chromium driven by Playwright, shared by the browser test modules (test_web*.py).

Skipping is for a developer's machine without a browser; under CI (.ci/run sets CI=1) a missing tool
must fail the run, or the web UI would go untested while the run looks green.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("BLIPSEARCH_TEST_CHROMIUM", "/usr/bin/chromium"))


def _missing_browser_tools() -> str | None:
    """Why a module cannot drive a browser here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"the playwright package is missing ({exc}): pip install -e '.[dev]'"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium"
    return None


def require_browser() -> None:
    """Call at a browser test module's top, before importing playwright."""
    missing = _missing_browser_tools()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing, allow_module_level=True)


@contextmanager
def launched_chromium() -> Iterator[Any]:
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()
