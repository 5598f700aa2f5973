"""Exact-match keys: one normal form, kept by every write and filled by migration 0008, looked up
the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from sqlalchemy import select

from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import upgrade_database
from blipsearch.storage.item_writes import ItemMetadata, ItemWrite
from blipsearch.storage.match_keys import MAX_KEY_CHARS, match_key
from blipsearch.storage.schema import Item, ItemStatus

MIGRATION = Path(__file__).resolve().parent.parent / "alembic" / "versions" / "0008_item_match_keys.py"
SAMPLES = [
    None,
    "",
    "   ",
    "  NOTO-1F34E ",
    "Red   Apple\t(Noto)",
    "Cafe\u0301 Crème",  # decomposed é: NFC makes it equal to the composed form
    "Café crème",
    "STRASSE Straße",
    "İstanbul",
    "x" * (MAX_KEY_CHARS + 1),
]


def _frozen_match_key():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("migration_0008", MIGRATION)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.match_key


def test_the_normal_form_ignores_case_whitespace_and_composition() -> None:
    assert match_key("  NOTO-1F34E ") == "noto-1f34e"
    assert match_key("Red   Apple\t(Noto)") == "red apple (noto)"
    assert match_key("Cafe\u0301 Crème") == match_key("café CRÈME")
    assert match_key(None) is None and match_key("   ") is None
    assert match_key("x" * (MAX_KEY_CHARS + 1)) is None


def test_the_migration_uses_the_same_normal_form() -> None:
    frozen = _frozen_match_key()
    assert [frozen(text) for text in SAMPLES] == [match_key(text) for text in SAMPLES]


def _write(source: str, **metadata: object) -> ItemWrite:
    return ItemWrite(source=source, origin="/m", status=ItemStatus.INDEXED, metadata=ItemMetadata(**metadata))  # type: ignore[arg-type]


@pytest.fixture
def catalog(tmp_path: Path, database_url: str) -> Catalog:
    opened = Catalog.open(Settings(data_dir=tmp_path / "data", database_url=database_url))
    yield opened
    opened.close()


def test_exact_matches_on_both_databases(catalog: Catalog) -> None:
    ids = catalog.write(
        [
            _write("/p/1.png", external_id="AB-1234", title="Trailblazer hiking boot", brand="Acme"),
            _write("/p/2.png", external_id="ab-12345", title="AB-1234", brand="Other"),
            _write("/p/3.png", external_id="C-1", title="Café Crème", brand="ab-1234"),
        ]
    )
    assert catalog.exact_matches(" ab-1234 ", 10) == [(ids[0], "sku"), (ids[1], "title"), (ids[2], "brand")]
    assert catalog.exact_matches("TRAILBLAZER  hiking\tboot", 10) == [(ids[0], "title")]
    assert catalog.exact_matches("Cafe\u0301 crème", 10) == [(ids[2], "title")]
    assert catalog.exact_matches("trailblazer", 10) == [], "a part of a title is not an exact match"
    assert catalog.exact_matches("ab-1234", 10, allowed_ids=[ids[1], ids[2]]) == [
        (ids[1], "title"),
        (ids[2], "brand"),
    ]
    assert catalog.exact_matches("ab-1234", 1) == [(ids[0], "sku")]
    assert catalog.exact_matches("ab-1234", 10, allowed_ids=[]) == []
    catalog.write([_write("/p/1.png", external_id="AB-9", title="Renamed", brand="Acme")])
    assert catalog.exact_matches("ab-1234", 10) == [(ids[1], "title"), (ids[2], "brand")], (
        "writes keep the keys"
    )
    catalog.write([ItemWrite(source="/p/2.png", origin="/m", status=ItemStatus.FAILED, error="gone")])
    assert catalog.exact_matches("ab-1234", 10) == [(ids[2], "brand")], "only indexed items match"


def test_the_migration_fills_the_keys_of_existing_rows(catalog: Catalog) -> None:
    from alembic import command
    from blipsearch.storage.database import _alembic_config

    catalog.write([_write("/p/1.png", external_id=" Q-7 ", title="Red  Apple", brand="Noto")])
    engine = catalog.engine
    with engine.begin() as connection:
        config = _alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
    upgrade_database(engine)
    with catalog.sessions() as session:
        keys = session.execute(select(Item.sku_key, Item.title_key, Item.brand_key)).all()
    assert [tuple(row) for row in keys] == [("q-7", "red apple", "noto")]
