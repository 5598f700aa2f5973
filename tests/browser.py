"""Debian's chromium driven by Playwright, shared by the browser test modules (test_web*.py).

Skipping is for a developer's machine without a browser; under CI (.ci/run sets CI=1) a missing tool
must fail the run, or the web UI would go untested while the run looks green.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("BLIPSEARCH_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


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


def is_text_search(response: Any) -> bool:
    """A text search or browse: GET /v1/search or its JSON twin, POST /v1/search/query."""
    path = response.url.split("?")[0]
    return path.endswith(("/v1/search", "/v1/search/query"))


def search_body(response: Any) -> dict[str, Any]:
    """What a text search asked for, whichever of the two forms it took (JSON body or query string)."""
    from urllib.parse import parse_qs, urlsplit

    if response.request.method == "POST":
        return dict(response.request.post_data_json)
    params = parse_qs(urlsplit(response.url).query)
    body: dict[str, Any] = {name: values[-1] for name, values in params.items() if name != "filter"}
    body["filter"] = params.get("filter", [])
    return body


class Page:
    """A Playwright page that also records every request, uncaught script errors, 404s and 5xx.

    `assert_clean` fails on a request to another origin (the UI must work offline), a 404 (a missing
    file, an icon, a wrong link) unless the test expects that URL's 404, or a server error.
    """

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.script_errors: list[str] = []
        self.server_errors: list[str] = []
        self.requests: list[str] = []
        self.not_found: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on(
            "response",
            lambda response: self.not_found.append(response.url) if response.status == 404 else None,
        )
        page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        # The server's Content-Security-Policy is in force: a violation by the UI is a failure.
        page.on(
            "console",
            lambda message: (
                self.script_errors.append(message.text)
                if message.type == "error" and "Content Security Policy" in message.text
                else None
            ),
        )
        page.on(
            "response",
            lambda response: (
                self.server_errors.append(f"{response.status} {response.url}")
                if response.status >= 500
                else None
            ),
        )
        page.set_default_timeout(60_000)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.page, name)

    def wait_for_function(self, expression: str, arg: Any = None, timeout: float = 60.0) -> None:
        """Poll `expression` until it is truthy.

        Playwright's own wait_for_function compiles the predicate inside the page, which the UI's
        Content-Security-Policy (no eval) forbids; `evaluate` runs through the DevTools protocol.
        """
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(expression, arg):
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout:.0f} s: {expression}")
            self.page.wait_for_timeout(50)

    def tid(self, test_id: str) -> Any:
        return self.page.get_by_test_id(test_id)

    def open(self, path: str = "/") -> None:
        self.page.goto(self.base_url + path)
        # the module has started and the filters have been built from the facets
        self.wait_for_function(
            "document.documentElement.dataset.ready === 'true' && !!document.documentElement.dataset.facets"
        )

    def search(self, text: str) -> None:
        with self.page.expect_response(is_text_search) as response:
            self.tid("search-input").fill(text)
            self.tid("search-input").press("Enter")
        assert response.value.ok, response.value.text()
        self.wait_idle()

    def wait_idle(self) -> None:
        """Every loading indicator is gone (none of the searches or loads is in flight)."""
        self.wait_for_function("[...document.querySelectorAll('.status')].every((node) => node.hidden)")

    def wait_item(self, item_id: str) -> None:
        """The item view shows this item, loaded."""
        self.page.wait_for_url(f"**/#/item/{item_id}")
        self.page.wait_for_selector(f'[data-testid="item"][data-item-id="{item_id}"]:not([hidden])')
        self.wait_idle()

    def cards(self, grid: str = "results") -> Any:
        return self.tid(grid).get_by_test_id("result-card")

    def card_data(self, grid: str = "results") -> list[dict[str, str]]:
        return self.page.eval_on_selector_all(
            f'[data-testid="{grid}"] [data-testid="result-card"]', "cards => cards.map(c => ({...c.dataset}))"
        )

    def assert_thumbnails_loaded(self, grid: str = "results", count: int = 4) -> None:
        """The first `count` thumbnails really decoded (naturalWidth > 0), not just exist."""
        self.wait_for_function(
            """([grid, count]) => {
                const images = [...document.querySelectorAll(`[data-testid="${grid}"] img`)].slice(0, count);
                return images.length > 0 && images.every((image) => image.complete && image.naturalWidth > 0);
            }""",
            arg=[grid, count],
        )

    def shot(self, name: str, full_page: bool = True) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        if full_page:  # from the top, or the sticky header is drawn where the page was scrolled to
            self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(ARTIFACTS / f"web-{name}.png"), full_page=full_page)

    def assert_clean(self, expected_404: tuple[str, ...] = ()) -> None:
        assert not self.script_errors, self.script_errors
        assert not self.server_errors, self.server_errors
        elsewhere = [
            url
            for url in self.requests
            if not (url == self.base_url or url.startswith(self.base_url + "/"))
            and not url.startswith(("blob:", "data:"))
        ]
        assert not elsewhere, f"requests left the server's origin: {elsewhere}"
        missing = [
            url
            for url in self.not_found
            if not url.startswith(tuple(self.base_url + p for p in expected_404))
        ]
        assert not missing, f"404 answers: {missing}"
