"""/docs and /redoc render in a real browser with every request going to the server itself.

Debian's chromium driven by Playwright (as in tests/test_web.py) opens both pages against the real
app on a loopback port, waits until Swagger UI and ReDoc show the `/v1/search` operation, and
fails on any request to another origin or any Content-Security-Policy violation: the pages must
work on a machine without internet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from browser import launched_chromium, require_browser
from test_api_docs import docs_settings

require_browser()


@pytest.fixture
def base_url(tmp_path: Path, tiny_checkpoints, api_server: Callable[..., str]) -> str:  # type: ignore[no-untyped-def]
    return api_server(docs_settings(tmp_path / "data", tiny_checkpoints))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


class RecordedPage:
    """A page that records every request it makes and every script error or CSP violation."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                self.errors.append(message.text)
                if message.type == "error" and "Content Security Policy" in message.text
                else None
            ),
        )

    def wait_for(self, expression: str, timeout: float = 60.0) -> None:
        """Polls through `evaluate`: Playwright's wait_for_function needs eval, which the CSP forbids."""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout:.0f} s: {expression}")
            self.page.wait_for_timeout(50)


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
        page = RecordedPage(context.new_page())
        page.page.goto(base_url + path)
        page.wait_for(RENDERED[path])
        page.page.wait_for_load_state("networkidle")
        origin = urlsplit(base_url)
        elsewhere = [
            url
            for url in page.requests
            if (urlsplit(url).scheme, urlsplit(url).netloc) != (origin.scheme, origin.netloc)
            and not url.startswith(("blob:", "data:"))
        ]
        assert not elsewhere, elsewhere
        assert f"{base_url}/openapi.json" in page.requests
        assert not page.errors, page.errors
        favicon = page.page.evaluate("document.querySelector('link[rel~=\"icon\"]').href")
        assert favicon == f"{base_url}/favicon.ico"
    finally:
        context.close()
