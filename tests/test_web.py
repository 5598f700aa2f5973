"""The web UI in a real browser: Debian's chromium driven by Playwright against the real API.

A generated product catalog is indexed with the tiny checkpoints through the CLI, the real app
serves it on a loopback port, and the browser does what a person does: searches by text and by
image, filters, pages, opens an item, follows "More like this", asks a question, adds an item with
the API key and finds it, and uses the UI at phone width and from the keyboard. Screenshots go to
`tests/artifacts/web-*.png`.

Needs `/usr/bin/chromium` (`apt-get install -y --no-install-recommends chromium`; `.ci/run` installs
it) and the `playwright` package (dev extra). Playwright's own browser download is never used.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from browser import Page, is_text_search, launched_chromium, require_browser, search_body
from imagesets import TEST_MAX_PIXELS, write_valid_images
from live_server import serving

API_KEY = "test-key"
ITEMS = 24  # more than one page of 20, so "More results" has a second page
QUERY_IMAGE = 6  # a JPEG among the generated files


require_browser()


# -------------------------------------------------------------------------------------------
# The server: an indexed catalog and the real app on a free loopback port


@pytest.fixture(scope="module")
def _clean_environment() -> Iterator[None]:
    """The module's server and indexer see only the settings given here, not the caller's shell."""
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith("BLIPSEARCH_"):
                patch.delenv(key)
        yield


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoints, _clean_environment) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("webshop")
    paths = write_valid_images(root, ITEMS, seed=7, size=(200, 160))
    with open(root / "products.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "sku", "title", "description", "brand", "category", "price", "tags"])
        for index, path in enumerate(paths):
            writer.writerow(
                [
                    path.relative_to(root).as_posix(),
                    f"WEB-{index:03d}",
                    f"product {index}",
                    f"A generated picture, number {index}.",
                    ["acme", "Quokkaware", "Zephyr"][index % 3],
                    ["bags", "shoes"][index % 2],
                    10 + index * 5,
                    "red|summer" if index % 4 == 0 else "blue",
                ]
            )
    env = {
        "BLIPSEARCH_DATA_DIR": str(root / "data"),
        "BLIPSEARCH_RETRIEVAL_MODEL": str(tiny_checkpoints.retrieval),
        "BLIPSEARCH_CAPTION_MODEL": str(tiny_checkpoints.caption),
        "BLIPSEARCH_VQA_MODEL": str(tiny_checkpoints.vqa),
        "BLIPSEARCH_DEVICE": "cpu",
        "BLIPSEARCH_OFFLINE": "1",
        "BLIPSEARCH_MAX_IMAGE_PIXELS": str(TEST_MAX_PIXELS),
    }
    # Captions are stored at index time: captions generated on demand by the first page of a
    # search enter the keyword documents and change the hybrid ranking that the next page sees.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "blipsearch",
            "index",
            str(root / "products.csv"),
            "--captions",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    upload = root / "upload.png"
    Image.new("RGB", (120, 90), (30, 160, 90)).save(upload)
    return {"root": root, "paths": paths, "upload": upload}


def server_settings(catalog: dict[str, Any], tiny_checkpoints, **overrides: Any) -> Any:
    from blipsearch.settings import Settings

    values: dict[str, Any] = {
        "data_dir": catalog["root"] / "data",
        "retrieval_model": str(tiny_checkpoints.retrieval),
        "caption_model": str(tiny_checkpoints.caption),
        "vqa_model": str(tiny_checkpoints.vqa),
        "device": "cpu",
        "dtype": "float32",
        "offline": True,
        "max_image_pixels": TEST_MAX_PIXELS,
        "api_key": API_KEY,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="module")
def base_url(catalog: dict[str, Any], tiny_checkpoints) -> Iterator[str]:
    from blipsearch.api.app import create_app

    with serving(create_app(server_settings(catalog, tiny_checkpoints))) as base:
        yield base


# -------------------------------------------------------------------------------------------
# The browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Any, base_url: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    wrapped = Page(context.new_page(), base_url)
    yield wrapped
    context.close()


@pytest.fixture
def phone(browser: Any, base_url: str) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    wrapped = Page(context.new_page(), base_url)
    yield wrapped
    context.close()


# -------------------------------------------------------------------------------------------
# The tests


def test_text_search_shows_cards_scores_captions_and_pages(page: Page) -> None:
    page.open()
    assert page.tid("search-input").get_attribute("id") == "q"
    assert page.page.locator("label[for=q]").inner_text() == "Search images by text"
    page.search("a picture of a product")
    page.tid("option-details").check()  # scores are for those who ask for them

    cards = page.cards()
    assert cards.count() == 20
    page.assert_thumbnails_loaded(count=6)
    first = cards.first
    assert first.get_by_test_id("result-title").inner_text().startswith("product ")
    assert float(first.get_by_test_id("score-itc").locator("strong").inner_text()) <= 1.0
    # re-ranked by default: the shortlist has ITM probabilities; captions are asked for by default
    assert 0.0 <= float(first.get_by_test_id("score-itm").locator("strong").inner_text()) <= 1.0
    assert first.get_by_test_id("result-caption").inner_text().strip()
    assert "re-ranked by ITM" in page.tid("summary").inner_text()
    page.shot("search")

    # "More results" appends the next page (next_offset) without repeating an item
    with page.expect_response(lambda r: is_text_search(r) and search_body(r).get("offset") in (20, "20")):
        page.tid("more-results").click()
    page.wait_idle()
    ids = [card["itemId"] for card in page.card_data()]
    assert len(ids) == ITEMS and len(set(ids)) == ITEMS
    assert page.tid("more-results").is_hidden()  # the last page has no next_offset
    page.assert_clean()


def test_filters_come_from_the_facets_and_narrow_the_results(page: Page) -> None:
    page.open()
    options = page.tid("filter-category").locator("option").all_inner_texts()
    assert options == ["Any category", "bags", "shoes"]
    assert "Quokkaware" in page.tid("filter-brand").locator("option").all_inner_texts()
    page.search("product")

    with page.expect_response(is_text_search) as response:
        page.tid("filter-category").select_option("shoes")
    assert response.value.ok
    assert search_body(response.value)["filters"] == [{"field": "category", "op": "eq", "value": "shoes"}]
    page.wait_idle()
    cards = page.card_data()
    assert cards and all(card["category"] == "shoes" for card in cards)

    with page.expect_response(is_text_search) as response:
        page.tid("filter-price-max").fill("50")
        page.tid("filter-price-max").press("Enter")
    assert response.value.ok
    assert {"field": "price", "op": "le", "value": "50"} in search_body(response.value)["filters"]
    page.wait_idle()
    cards = page.card_data()
    assert cards and all(card["category"] == "shoes" and float(card["price"]) <= 50 for card in cards)
    assert [chip.split("\n")[0] for chip in page.tid("chip").all_inner_texts()] == [
        "Category: shoes",
        "Price up to 50",
    ]
    page.shot("filters")

    # Clear puts every filter back and searches again
    with page.expect_response(lambda r: is_text_search(r) and not search_body(r).get("filters")):
        page.tid("filters-clear").click()
    page.wait_idle()
    assert page.cards().count() == 20
    page.assert_clean()


def test_image_search_by_file_input(page: Page, catalog: dict[str, Any]) -> None:
    page.open()
    with page.expect_response(lambda r: "/v1/search/image" in r.url) as response:
        page.tid("image-input").set_input_files(str(catalog["paths"][QUERY_IMAGE]))
    assert response.value.ok, response.value.text()
    page.wait_idle()
    assert page.tid("image-query").is_visible()
    assert catalog["paths"][QUERY_IMAGE].name in page.tid("image-query-name").inner_text()
    # the same picture is its own nearest neighbour
    assert page.cards().first.get_by_test_id("result-title").inner_text() == f"product {QUERY_IMAGE}"
    assert page.cards().first.get_by_test_id("score-itm").count() == 0  # image to image: ITC only
    page.assert_thumbnails_loaded()
    page.shot("image-search")

    page.tid("image-clear").click()
    assert page.tid("image-query").is_hidden() and page.cards().count() == 0
    page.assert_clean()


DROP_OR_PASTE = """async ([kind, url]) => {
    const blob = await (await fetch(url)).blob();
    const data = new DataTransfer();
    data.items.add(new File([blob], "query.jpg", { type: "image/jpeg" }));
    if (kind === "drop") {
        document.querySelector("main").dispatchEvent(
            new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
    } else {
        document.querySelector("main").dispatchEvent(
            new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
    }
}"""


@pytest.mark.parametrize("kind", ["drop", "paste"])
def test_image_search_by_drop_and_paste(page: Page, kind: str) -> None:
    page.open()
    page.search("product")
    target = page.card_data()[3]
    url = f"/v1/items/{target['itemId']}/thumbnail?size=512"
    with page.expect_response(lambda r: "/v1/search/image" in r.url) as response:
        page.evaluate(DROP_OR_PASTE, [kind, url])
    assert response.value.ok, response.value.text()
    page.wait_idle()
    assert page.tid("image-query").is_visible()
    assert page.card_data()[0]["itemId"] == target["itemId"]
    page.assert_clean()


def test_item_page_more_like_this_and_question(page: Page) -> None:
    page.open()
    page.search("product 5")
    first = page.card_data()[0]
    page.cards().first.get_by_test_id("result-link").click()
    page.wait_item(first["itemId"])

    assert page.tid("item-view").is_visible() and page.tid("search-view").is_hidden()
    assert page.tid("item-title").inner_text()
    meta = page.tid("item-meta").inner_text()
    assert first["sku"] in meta and "Category" in meta and "Brand" in meta
    assert page.page.evaluate("document.activeElement.dataset.testid") == "item-title"
    page.wait_for_function(
        "() => { const image = document.querySelector('[data-testid=item-image]');"
        " return image.complete && image.naturalWidth > 0; }"
    )

    # More like this: other items, never the item itself
    similar = page.card_data("similar-results")
    assert similar and first["itemId"] not in [card["itemId"] for card in similar]
    page.assert_thumbnails_loaded("similar-results")

    # a question (the tiny VQA model answers with noise, but it answers)
    assert page.tid("ask-form").is_visible()
    with page.expect_response(lambda r: r.url.endswith("/ask")) as response:
        page.tid("ask-input").fill("what colour is it?")
        page.tid("ask-input").press("Enter")
    assert response.value.ok, response.value.text()
    answer = response.value.json()["answer"]
    page.wait_for_function("document.querySelector('[data-testid=ask-answer-text]') !== null")
    assert page.tid("ask-answer-text").inner_text() == answer.strip()
    page.shot("item")

    # the catalog texts closest to the picture (image to texts), loaded when unfolded
    with page.expect_response(lambda r: f"/v1/items/{first['itemId']}/texts" in r.url) as response:
        page.tid("item-texts-box").locator("summary").click()
    assert response.value.ok, response.value.text()
    page.tid("item-text").first.wait_for()
    assert page.tid("item-text").count() == len(response.value.json()["hits"])

    # follow "More like this" to another item
    target = similar[0]["itemId"]
    page.tid("similar-results").get_by_test_id("result-link").first.click()
    page.wait_item(target)
    assert similar[0]["sku"] in page.tid("item-meta").inner_text()
    assert target not in [card["itemId"] for card in page.card_data("similar-results")]

    # Escape goes back through the history: the first item, then the results
    page.keyboard.press("Escape")
    page.wait_item(first["itemId"])
    page.keyboard.press("Escape")
    page.wait_for_function("!document.querySelector('[data-testid=search-view]').hidden")
    assert page.cards().count() > 0
    page.assert_clean()


def test_no_question_box_without_a_vqa_model(
    browser: Any, base_url: str, api_server, catalog: dict[str, Any], tiny_checkpoints
) -> None:
    """A second server on the same catalog, without VQA: the item page has no question box."""
    url = api_server(server_settings(catalog, tiny_checkpoints, vqa_model=None))
    context = browser.new_context()
    try:
        page = Page(context.new_page(), url)
        with page.expect_response(lambda r: r.url.endswith("/v1/facets")) as facets:
            page.open("/#/item/1")
        assert facets.value.json()["vqa"] is False
        page.wait_item("1")
        page.wait_for_load_state("networkidle")
        assert page.tid("ask-form").is_hidden()
        page.assert_clean()
    finally:
        context.close()


def test_unknown_item_shows_the_api_error(page: Page) -> None:
    page.open("/#/item/999999")
    page.tid("item-error").wait_for()
    assert "There is no item 999999" in page.tid("item-error").inner_text()
    page.assert_clean(expected_404=("/v1/items/999999",))


def test_search_error_shows_the_api_message(page: Page) -> None:
    page.open()
    with page.expect_response(is_text_search) as response:
        page.tid("search-input").fill("x" * 1001)  # over max_query_chars
        page.tid("search-input").press("Enter")
    assert response.value.status == 400
    message = response.value.json()["error"]["message"]
    page.tid("error").wait_for()
    assert page.tid("error").inner_text() == message
    page.assert_clean()


def test_upload_with_the_key_then_find_it_by_sku(page: Page, catalog: dict[str, Any]) -> None:
    page.open("/#/upload")
    page.tid("upload-form").wait_for()
    form = {
        "upload-title": "Green web-test tote",
        "upload-sku": "WEB-UPLOAD-77",
        "upload-category": "bags",
        "upload-brand": "Zephyr",
        "upload-price": "42.50",
        "upload-currency": "EUR",
        "upload-tags": "green, tote",
        "upload-description": "Added from the browser test.",
    }
    page.tid("upload-file").set_input_files(str(catalog["upload"]))
    for test_id, value in form.items():
        page.tid(test_id).fill(value)

    # a wrong key: the API's message is shown, nothing is added
    page.tid("upload-key").fill("wrong-key")
    with page.expect_response(lambda r: r.url.endswith("/v1/items")) as response:
        page.tid("upload-submit").click()
    assert response.value.status == 401
    page.tid("upload-error").wait_for()
    assert response.value.json()["error"]["message"] in page.tid("upload-error").inner_text()

    page.tid("upload-key").fill(API_KEY)
    with page.expect_response(lambda r: r.url.endswith("/v1/items")) as response:
        page.tid("upload-submit").click()
    assert response.value.status == 201, response.value.text()
    item = response.value.json()
    page.tid("upload-result").wait_for()
    assert page.tid("upload-error").is_hidden()
    assert "Green web-test tote" in page.tid("upload-result").inner_text()
    assert page.evaluate("sessionStorage.getItem('blipsearch.apiKey')") == API_KEY
    page.shot("upload")

    # already searchable: keyword mode finds the SKU whole
    page.tid("home-link").click()
    page.tid("option-mode").select_option("keyword")
    page.search("WEB-UPLOAD-77")
    first = page.card_data()[0]
    assert first["sku"] == "WEB-UPLOAD-77" and first["itemId"] == str(item["item_id"])
    page.assert_thumbnails_loaded(count=1)
    page.shot("found-upload")
    page.assert_clean()


def test_keyboard_enter_searches_tab_reaches_results_escape_closes(page: Page) -> None:
    page.open()
    page.tid("search-input").focus()
    page.keyboard.type("product")
    with page.expect_response(is_text_search):
        page.keyboard.press("Enter")
    page.wait_idle()
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.testid") == "result-link":
            break
    else:
        pytest.fail("Tab never reached a result")
    focused = page.evaluate("document.activeElement.dataset.itemId")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    page.keyboard.press("Enter")
    page.wait_item(focused)
    page.keyboard.press("Escape")
    page.wait_for_function("!document.querySelector('[data-testid=search-view]').hidden")
    # focus returns to the card that opened the item
    assert page.evaluate("document.activeElement.dataset.itemId") == focused
    page.assert_clean()


def test_phone_width_has_no_horizontal_scroll(phone: Page) -> None:
    phone.open()
    phone.search("a picture of a product")
    phone.assert_thumbnails_loaded(count=2)
    columns = phone.evaluate(
        "getComputedStyle(document.querySelector('[data-testid=results]'))"
        ".gridTemplateColumns.split(' ').length"
    )
    assert 1 <= columns <= 2
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    phone.shot("mobile-search", full_page=False)

    phone.cards().first.get_by_test_id("result-link").click()
    phone.wait_idle()
    phone.tid("item-title").wait_for()
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    phone.shot("mobile-item")

    phone.open("/#/upload")
    phone.tid("upload-form").wait_for()
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    phone.assert_clean()
