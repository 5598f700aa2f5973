"""/docs and /redoc render in a real browser with every request going to the server itself.

Debian's chromium driven by Playwright (as in tests/test_web.py) opens both pages against the real
app on a loopback port, waits until Swagger UI and ReDoc show the `/v1/search` operation, and
fails on any request to another origin or any Content-Security-Policy violation: the pages must
work on a machine without internet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from browser import Page, launched_chromium, require_browser
from test_api_docs import docs_settings

require_browser()


@pytest.fixture
def base_url(tmp_path: Path, tiny_checkpoints, api_server: Callable[..., str]) -> str:  # type: ignore[no-untyped-def]
    return api_server(docs_settings(tmp_path / "data", tiny_checkpoints))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


# What shows that each library has rendered the operations from /openapi.json.
RENDERED = {
    "/docs": (
        "[...document.querySelectorAll('.opblock .opblock-summary-path')]"
        ".some((node) => node.textContent.trim() === '/v1/search')"
    ),
    "/redoc": (
        "[...document.querySelectorAll('[data-section-id^=\"operation/\"]')].length > 0"
        " && document.body.innerText.includes('/v1/search')"
    ),
}


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_page_renders_from_the_server_alone(browser: Any, base_url: str, path: str) -> None:
    context = browser.new_context()
    try:
        page = Page(context.new_page(), base_url)
        page.page.goto(base_url + path)
        page.wait_for_function(RENDERED[path])
        page.page.wait_for_load_state("networkidle")
        page.assert_clean()  # no other origin, no CSP violation or script error, no 404 or 5xx
        assert f"{base_url}/openapi.json" in page.requests
        favicon = page.page.evaluate("document.querySelector('link[rel~=\"icon\"]').href")
        assert favicon == f"{base_url}/favicon.ico"
    finally:
        context.close()
