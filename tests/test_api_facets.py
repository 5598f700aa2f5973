"""GET /v1/facets: example queries from the catalog itself, the demo-model notice, the upload limit.

The examples are computed on SQLite and PostgreSQL from the same rows and must agree; the demo
notice is checked against the real shipped demo model (also copied elsewhere: it is recognised by
its fingerprint, not its path) and against the tiny test model, which is not the demo.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from test_api import shop  # noqa: F401  (a real indexed catalog behind a real server)

from blipsearch.api.facets import catalog_examples, short_title
from blipsearch.demo import is_demo_model
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_writes import ItemMetadata
from blipsearch.storage.schema import Item, ItemStatus

from catalog_rows import indexed_write

DEMO = Path(__file__).resolve().parents[1] / "demo"


@pytest.fixture
def catalog(tmp_path: Path, database_url: str) -> Iterator[Catalog]:
    opened = Catalog.open(Settings(data_dir=tmp_path, database_url=database_url))
    yield opened
    opened.close()


ROWS = [
    ("Red apple (Noto)", "Food & Drink"),
    ("A very long product title that nobody would type as a query", "Food & Drink"),
    ("Green apple (Noto)", "Food & Drink"),
    ("Dog face (Noto)", "Animals & Nature"),
    ("Cat (Noto)", "Animals & Nature"),
    ("Flag: France", "Flags"),
    ("Rocket", None),
    ("12345", "Flags"),
]


def test_short_titles_drop_a_trailing_parenthesis_and_refuse_long_or_letterless_ones() -> None:
    assert short_title("Red apple (Noto)") == "Red apple"
    assert short_title("  Flag:   France ") == "Flag: France"
    assert short_title("A very long product title that nobody would type") is None
    assert short_title("12345") is None and short_title("") is None and short_title(None) is None


def test_examples_are_the_largest_categories_then_one_short_title_each(catalog: Catalog) -> None:
    writes = [
        indexed_write(f"/p/{n}.png", n + 1, metadata=ItemMetadata(title=title, category=category))
        for n, (title, category) in enumerate(ROWS)
    ]
    hidden = indexed_write("/p/pending.png", 99, metadata=ItemMetadata(title="Hidden", category="Unindexed"))
    writes.append(replace(hidden, status=ItemStatus.PENDING, embedding=None, model_fingerprint=None))
    catalog.write(writes)
    indexed = Item.status == ItemStatus.INDEXED.value
    with catalog.sessions() as session:
        first = catalog_examples(session, indexed)
        again = catalog_examples(session, indexed)
    # 3 in Food & Drink, 2 each in Animals & Nature and Flags (ties by name); a pending item never counts
    assert first == [
        "Food & Drink",
        "Animals & Nature",
        "Flags",
        "Red apple",
        "Dog face",
        "Flag: France",
    ]
    assert again == first


def test_a_catalog_without_categories_gives_short_titles_in_item_order(catalog: Catalog) -> None:
    titles = ["Blue mug (Acme)", "Blue mug", "Kettle", "x" * 40, "Lamp", "Chair", "Desk", "Sofa", "Rug"]
    catalog.write(
        [indexed_write(f"/p/{n}.png", n + 1, metadata=ItemMetadata(title=t)) for n, t in enumerate(titles)]
    )
    with catalog.sessions() as session:
        examples = catalog_examples(session, Item.status == ItemStatus.INDEXED.value)
    assert examples == ["Blue mug", "Kettle", "Lamp", "Chair", "Desk", "Sofa"]


def test_the_shipped_demo_model_is_recognised_by_its_fingerprint_wherever_it_lies(tmp_path: Path) -> None:
    settings = Settings(device="cpu", offline=True)
    demo = RetrievalModel.load(str(DEMO / "model" / "retrieval"), settings)
    config = demo.checkpoint.model.config
    assert is_demo_model(demo.fingerprint, config, DEMO)
    copy = tmp_path / "demo-copy"
    shutil.copytree(DEMO / "model" / "retrieval", copy / "model" / "retrieval")
    assert is_demo_model(demo.fingerprint, config, copy)
    # same architecture and config, other weights: not the demo model
    assert not is_demo_model("blip-" + "0" * 32, config, DEMO)
    # no demo folder at all (an installed package without the checkout)
    assert not is_demo_model(demo.fingerprint, config, tmp_path / "nowhere")


def test_the_tiny_model_is_not_the_demo(retrieval: RetrievalModel) -> None:
    assert not is_demo_model(retrieval.fingerprint, retrieval.checkpoint.model.config, DEMO)


@pytest.fixture
def client(shop, api_server: Callable[..., str]) -> Iterator[httpx.Client]:  # noqa: F811
    settings, _ = shop
    with httpx.Client(base_url=api_server(settings), timeout=60) as session:
        yield session


def test_facets_over_http_carry_examples_model_notice_and_upload_limit(client: httpx.Client) -> None:
    facets = client.get("/v1/facets").json()
    # the shop: categories bags (3 items) and shoes (3), titles "product N" in item order
    assert facets["examples"] == ["bags", "shoes", "product 0", "product 1"]
    assert facets["model"] == {"demo": False, "note": None}
    assert facets["max_upload_bytes"] == 2_000_000
    assert client.get("/v1/facets").json() == facets


def test_facets_on_the_demo_model_carry_the_notice(tmp_path: Path, api_server: Callable[..., str]) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        retrieval_model=str(DEMO / "model" / "retrieval"),
        device="cpu",
        offline=True,
        rerank=False,
    )
    with httpx.Client(base_url=api_server(settings), timeout=60) as session:
        facets = session.get("/v1/facets").json()
    assert facets["model"]["demo"] is True
    assert "emoji only" in facets["model"]["note"]
    assert facets["examples"] == [] and facets["items"] == 0
