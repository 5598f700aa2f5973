"""The home page and the upload form in a real browser: examples from the catalog, focus, the skip
link, the icon, the demo-model notice, and a picture field that previews and refuses large files.

Debian's chromium (Playwright) against the real app on a demo slice with the demo model
(tests/webdemo.py), whose upload limit is small (webdemo.MAX_UPLOAD_BYTES).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from browser import Page, is_text_search, require_browser

require_browser()

from webdemo import *  # noqa: E402, F403  (the shared server and browser fixtures)
from webdemo import DEMO, MAX_UPLOAD_BYTES  # noqa: E402

DROP = """async ([selector, url, name]) => {
    const blob = await (await fetch(url)).blob();
    const data = new DataTransfer();
    data.items.add(new File([blob], name, { type: "image/png" }));
    document.querySelector(selector).dispatchEvent(
        new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
}"""


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_home_page_examples_focus_notice_and_icon(open_page: Callable[..., Page], phone: bool) -> None:
    page = open_page(phone=phone)
    with page.expect_response(lambda r: r.url.endswith("/v1/facets")) as facets_response:
        page.open()
    facets = facets_response.value.json()
    page.tid("examples-box").wait_for()
    shown = page.eval_on_selector_all("[data-testid=example]", "links => links.map(l => l.textContent)")
    expected = [("Browse " + e) if e in facets["categories"] else e for e in facets["examples"]]
    assert shown == expected and len(shown) >= 4
    assert page.evaluate("document.activeElement.id") == "q"  # type at once
    notice = page.tid("demo-notice")
    assert notice.is_visible() and "emoji only" in notice.inner_text()
    assert facets["model"]["demo"] is True
    # the icon is the server's own: fetched, found, same origin
    page.wait_for_load_state("networkidle")
    icon = page.evaluate("document.querySelector('link[rel~=icon]').href")
    assert icon == f"{page.base_url}/favicon.ico"
    assert page.request.get(icon).status == 200
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.shot(f"home-{'phone' if phone else 'desktop'}", full_page=False)
    page.assert_clean()


def test_an_example_runs_its_search_and_the_skip_link_lands_on_results(
    open_page: Callable[..., Page],
) -> None:
    page = open_page()
    page.open()
    page.tid("examples-box").wait_for()
    category = page.locator("[data-testid=example][data-kind=category]").first
    name = category.inner_text().removeprefix("Browse ")
    with page.expect_response(is_text_search) as response:
        category.click()
    assert response.value.ok
    page.wait_idle()
    assert {card["category"] for card in page.card_data()} == {name}

    page.tid("home-link").click()
    query = page.locator("[data-testid=example][data-kind=query]").first
    query.wait_for()
    with page.expect_response(is_text_search) as response:
        query.click()
    assert response.value.ok
    page.wait_idle()
    assert page.tid("search-input").input_value() == query.inner_text()

    page.tid("skip-link").focus()
    assert page.tid("skip-link").is_visible()  # shown when focused
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "results-heading"
    assert "#/?" in page.url  # the address (the search) is untouched
    page.assert_clean()


def test_upload_previews_the_picture_and_shows_the_limit(open_page: Callable[..., Page]) -> None:
    page = open_page()
    page.open("/#/upload")
    page.tid("upload-form").wait_for()
    page.wait_for_function("document.querySelector('[data-testid=upload-limit]').textContent !== ''")
    assert page.tid("upload-limit").inner_text() == "Up to 0.3 MB."
    picture = DEMO / "catalog" / "images" / "google" / "1f600.png"
    page.tid("upload-file").set_input_files(str(picture))
    page.tid("upload-preview").wait_for()
    page.wait_for_function(
        "(() => { const image = document.querySelector('[data-testid=upload-preview]');"
        " return image.src.startsWith('blob:') && image.complete && image.naturalWidth === 64; })()"
    )
    page.shot("upload-preview", full_page=False)

    # the drop target takes a picture too
    page.evaluate(DROP, ["[data-testid=upload-drop]", "/v1/items/2/image", "dropped.png"])
    page.wait_for_function(
        "document.querySelector('[data-testid=upload-file]').files[0]?.name === 'dropped.png'"
    )
    page.wait_for_function("document.querySelector('[data-testid=upload-preview]').naturalWidth > 0")
    page.assert_clean()


def test_a_picture_over_the_limit_is_refused_before_sending(
    open_page: Callable[..., Page], tmp_path: Path
) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES + 1))
    page = open_page()
    page.open("/#/upload")
    page.tid("upload-form").wait_for()
    page.wait_for_function("document.querySelector('[data-testid=upload-limit]').textContent !== ''")
    page.tid("upload-file").set_input_files(str(big))
    page.tid("upload-error").wait_for()
    assert "up to 0.3 MB" in page.tid("upload-error").inner_text()
    assert page.evaluate("document.querySelector('[data-testid=upload-file]').files.length") == 0
    assert page.tid("upload-preview").is_hidden()
    page.tid("upload-key").fill("web-demo-key")
    page.tid("upload-submit").click()
    assert "Choose a picture" in page.tid("upload-error").inner_text()

    # the same limit guards a search by image
    page.tid("home-link").click()
    page.tid("image-input").set_input_files(str(big))
    page.tid("error").wait_for()
    assert "up to 0.3 MB" in page.tid("error").inner_text()
    assert not [url for url in page.requests if "/v1/items" in url and url.endswith("/v1/items")]
    assert not [url for url in page.requests if "/v1/search/image" in url]
    page.assert_clean()
