"""The catalog schema and its migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError

from blipsearch.storage.database import (
    create_catalog_engine,
    current_revision,
    ensure_schema,
    head_revision,
    include_object,
    session_factory,
    table_names,
    upgrade_database,
)
from blipsearch.storage.schema import Base, Change, Item, ItemTag


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_catalog_engine(database_url)
    yield engine
    engine.dispose()


def test_fresh_database_migrates_to_head(engine: Engine) -> None:
    assert current_revision(engine) is None
    ensure_schema(engine)
    assert current_revision(engine) == head_revision() is not None
    assert {"items", "item_tags", "changes", "alembic_version"} <= table_names(engine)
    ensure_schema(engine)  # idempotent
    assert current_revision(engine) == head_revision()


def test_migrations_match_the_orm_models(engine: Engine) -> None:
    upgrade_database(engine)
    with engine.connect() as connection:
        # The keyword and vector tables have no ORM model; env.py excludes them the same way.
        opts = {"compare_type": True, "include_object": include_object}
        context = MigrationContext.configure(connection, opts=opts)
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_downgrade_to_base_and_back(engine: Engine) -> None:
    upgrade_database(engine)
    from alembic import command
    from blipsearch.storage.database import _alembic_config

    with engine.begin() as connection:
        config = _alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert not {"items", "item_tags", "changes", "item_search"} & table_names(engine)
    upgrade_database(engine)
    assert {"items", "item_search"} <= table_names(engine)


def test_item_round_trip(engine: Engine) -> None:
    ensure_schema(engine)
    vector = np.random.default_rng(0).standard_normal(256).astype(np.float16)
    with session_factory(engine)() as session:
        item = Item(
            source="/photos/shoe.jpg",
            content_hash="ab" * 32,
            external_id="SKU-1",
            status="indexed",
            title="Trail shoe",
            category="shoes",
            brand="Acme",
            price=Decimal("49.90"),
            currency="EUR",
            attributes={"colour": "red", "sizes": [40, 41]},
            embedding=vector.tobytes(),
            embedding_dtype="float16",
            embedding_dim=256,
            model_fingerprint="blip-x",
        )
        item.tags = [ItemTag(tag="outdoor"), ItemTag(tag="running")]
        session.add(item)
        session.add(Change(item_id=1, op="upsert"))
        session.commit()
        item_id = item.id
    with session_factory(engine)() as session:
        stored = session.get(Item, item_id)
        assert stored is not None
        assert stored.price == Decimal("49.90")
        assert stored.attributes == {"colour": "red", "sizes": [40, 41]}
        assert [t.tag for t in stored.tags] == ["outdoor", "running"]
        assert stored.created_at is not None and stored.updated_at is not None
        restored = np.frombuffer(stored.embedding or b"", dtype=np.float16)
        np.testing.assert_array_equal(restored, vector)
        tagged = session.scalars(select(ItemTag.item_id).where(ItemTag.tag == "running")).all()
        assert tagged == [item_id]


def test_constraints_hold(engine: Engine) -> None:
    ensure_schema(engine)
    make = session_factory(engine)
    with make() as session:
        session.add(Item(source="/a.jpg"))
        session.commit()
    for bad in (
        Item(source="/a.jpg"),
        Item(source="/b.jpg", status="exploded"),
        Item(source="/c.jpg", price=Decimal("-1")),
    ):
        with make() as session:
            session.add(bad)
            with pytest.raises(IntegrityError):
                session.commit()


def test_deleting_an_item_deletes_its_tags(engine: Engine) -> None:
    ensure_schema(engine)
    with session_factory(engine)() as session:
        item = Item(source="/t.jpg", tags=[ItemTag(tag="x")])
        session.add(item)
        session.commit()
        session.execute(text("DELETE FROM items"))
        session.commit()
        assert session.scalars(select(ItemTag)).all() == []


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    engine = create_catalog_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'c.sqlite3'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()
