"""The item page in a real browser: a large picture, the lightbox, details, texts, bad addresses.

The demo catalog's pictures are 64 px, so a page that draws them at their own size fails here.
Debian's chromium (Playwright) against the real app on a demo slice (tests/webdemo.py).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from browser import Page, require_browser

require_browser()

from webdemo import *  # noqa: E402, F403  (the shared server and browser fixtures)


def open_item(page: Page, item_id: str = "1") -> None:
    page.open(f"/#/item/{item_id}")
    page.wait_item(item_id)
    page.wait_for_function(
        "(() => { const image = document.querySelector('[data-testid=item-image]');"
        " return image.complete && image.naturalWidth > 0; })()"
    )


def rendered_width(page: Page, test_id: str) -> float:
    return float(
        page.evaluate(f"document.querySelector('[data-testid={test_id}]').getBoundingClientRect().width")
    )


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_the_picture_is_drawn_large_and_crisp(open_page: Callable[..., Page], phone: bool) -> None:
    page = open_page(phone=phone)
    open_item(page)
    natural = page.evaluate("document.querySelector('[data-testid=item-image]').naturalWidth")
    assert natural == 64  # the demo catalog's own picture, not a rescaled copy
    width = rendered_width(page, "item-image")
    assert width >= (300 if phone else 400)
    assert page.evaluate(
        "getComputedStyle(document.querySelector('[data-testid=item-image]')).imageRendering"
    ) == ("pixelated")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.wait_idle()
    page.shot(f"item-{'phone' if phone else 'desktop'}", full_page=False)
    page.assert_clean()


def test_the_lightbox_opens_and_closes_from_the_keyboard(open_page: Callable[..., Page]) -> None:
    page = open_page()
    open_item(page)
    page.tid("item-zoom").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('[data-testid=lightbox]').open")
    page.wait_for_function(
        "(() => { const image = document.querySelector('[data-testid=lightbox-image]');"
        " return image.complete && image.naturalWidth > 0; })()"
    )
    assert rendered_width(page, "lightbox-image") > rendered_width(page, "item-image")
    # focus is inside the dialog and stays there
    for _ in range(4):
        assert page.evaluate("!!document.activeElement.closest('[data-testid=lightbox]')")
        page.keyboard.press("Tab")
    page.shot("lightbox", full_page=False)
    page.keyboard.press("Escape")
    page.wait_for_function("!document.querySelector('[data-testid=lightbox]').open")
    # Escape closed only the lightbox: still on the item, focus back on the picture
    assert page.tid("item-view").is_visible()
    assert page.evaluate("document.activeElement.dataset.testid") == "item-zoom"

    page.tid("item-zoom").click()
    page.wait_for_function("document.querySelector('[data-testid=lightbox]').open")
    page.tid("lightbox-close").click()
    page.wait_for_function("!document.querySelector('[data-testid=lightbox]').open")
    page.assert_clean()


def test_scores_show_only_with_details_on_which_is_remembered(open_page: Callable[..., Page]) -> None:
    page = open_page()
    open_item(page)
    page.tid("similar-results").get_by_test_id("result-card").first.wait_for()
    first_similar = page.tid("similar-results").get_by_test_id("result-card").first
    toggle = page.tid("item-details-toggle")
    assert toggle.get_attribute("aria-pressed") == "false"
    assert first_similar.get_by_test_id("score-itc").is_hidden()
    assert "Item id" not in page.tid("item-meta").inner_text()

    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "true"
    assert first_similar.get_by_test_id("score-itc").is_visible()
    assert "Item id" in page.tid("item-meta").inner_text()

    page.reload()
    page.wait_item("1")
    assert page.tid("item-details-toggle").get_attribute("aria-pressed") == "true"
    page.tid("item-details-toggle").click()  # and off again
    assert page.tid("item-details-toggle").get_attribute("aria-pressed") == "false"
    page.assert_clean()


def test_catalog_texts_that_match_come_best_first(open_page: Callable[..., Page]) -> None:
    page = open_page()
    open_item(page)
    with page.expect_response(lambda r: "/v1/items/1/texts" in r.url) as response:
        page.tid("item-texts-box").locator("summary").click()
    assert response.value.ok
    page.tid("item-text").first.wait_for()
    scores = [
        float(value)
        for value in page.eval_on_selector_all(
            "[data-testid=item-text]", "items => items.map(i => i.dataset.score)"
        )
    ]
    hits = response.value.json()["hits"]
    assert len(scores) == len(hits) >= 2
    assert scores == sorted(scores, reverse=True)
    page.assert_clean()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("abc", "“abc” is not an item number"),
        ("0", "“0” is not an item number"),
        ("999999", "There is no item 999999"),
    ],
)
def test_a_bad_or_unknown_item_gets_a_human_message(
    open_page: Callable[..., Page], address: str, message: str
) -> None:
    page = open_page()
    page.open(f"/#/item/{address}")
    page.tid("item-error").wait_for()
    text = page.tid("item-error").inner_text()
    assert message in text and "{" not in text
    assert page.tid("item-error-home").get_attribute("href") == "#/"
    page.assert_clean(expected_404=(f"/v1/items/{address}",))


def test_more_like_an_item_is_an_address_that_survives_a_reload(open_page: Callable[..., Page]) -> None:
    page = open_page()
    open_item(page, "2")
    with page.expect_response(lambda r: "/v1/items/2/similar" in r.url and "k=20" in r.url):
        page.tid("item-like").click()
    page.wait_idle()
    assert page.url.endswith("#/?like=2")
    first = page.card_data()
    assert first and "2" not in [card["itemId"] for card in first]
    assert page.tid("chip").first.inner_text().startswith("More like item 2")
    assert page.tid("sort-field").is_hidden()  # similarity has one order

    page.reload()
    page.wait_for_function("document.querySelectorAll('[data-testid=result-card]').length > 0")
    page.wait_idle()
    assert page.card_data() == first
    page.assert_clean()
