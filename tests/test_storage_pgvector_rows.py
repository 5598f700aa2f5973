"""The pgvector rows follow every catalog write, and the tables appear only where pgvector exists."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import (
    create_catalog_engine,
    current_revision,
    ensure_schema,
    head_revision,
    table_names,
    upgrade_database,
)
from blipsearch.storage.item_writes import ItemWrite, TextVector
from blipsearch.storage.pgvector_rows import (
    NEGATIVE_RECHECK_SECONDS,
    VectorRows,
    install_vector_tables,
    parse_vector,
    vector_literal,
)
from blipsearch.storage.schema import TEXT_SLOTS, ItemStatus

from catalog_rows import FP, indexed_write, unit_vector

OTHER_FP = "blip-" + "b" * 32
PLAIN_POSTGRES_URL = os.environ.get(
    "BLIPSEARCH_TEST_PLAIN_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
"""A PostgreSQL without pgvector (the machine's own PostgreSQL 15 here)."""


@pytest.fixture
def pg_engine(empty_postgres_url: str) -> Iterator[Engine]:
    engine = create_catalog_engine(empty_postgres_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


def _downgrade(engine: Engine, revision: str) -> None:
    from alembic import command
    from blipsearch.storage.database import _alembic_config

    with engine.begin() as connection:
        config = _alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def image_rows(engine: Engine) -> dict[int, tuple[str, np.ndarray]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT item_id, model_fingerprint, embedding::text FROM item_vectors")
        )
        return {int(i): (str(fp), parse_vector(v)) for i, fp, v in rows}


def text_rows(engine: Engine) -> dict[int, tuple[int, str, np.ndarray]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT vector_id, item_id, model_fingerprint, embedding::text FROM text_vectors")
        )
        return {int(v): (int(i), str(fp), parse_vector(e)) for v, i, fp, e in rows}


def _texts(seed: int, slots: tuple[int, ...] = (0, 2)) -> list[TextVector]:
    kinds = {0: "title", 1: "description", 2: "caption"}
    return [
        TextVector(slot, kinds[slot], f"text {seed} {slot}", unit_vector(seed * 100 + slot)) for slot in slots
    ]


def test_literal_round_trips_float32_exactly() -> None:
    vector = np.random.default_rng(3).standard_normal(64).astype(np.float32) * 1e-3
    assert np.array_equal(parse_vector(vector_literal(vector)), vector)


def test_rows_follow_writes_status_changes_and_deletes(pg_engine: Engine) -> None:
    catalog = Catalog(pg_engine)
    a, b, c = catalog.write([indexed_write(f"/p/{n}.png", n, texts=_texts(n)) for n in (1, 2, 3)])
    images = image_rows(pg_engine)
    assert set(images) == {a, b, c}
    for item_id, seed in ((a, 1), (b, 2), (c, 3)):
        assert images[item_id][0] == FP
        assert np.array_equal(images[item_id][1], unit_vector(seed))
    texts = text_rows(pg_engine)
    assert set(texts) == {i * TEXT_SLOTS + s for i in (a, b, c) for s in (0, 2)}
    assert np.array_equal(texts[b * TEXT_SLOTS + 2][2], unit_vector(202))
    assert texts[b * TEXT_SLOTS + 2][:2] == (b, FP)

    catalog.mark_missing([b])
    assert set(image_rows(pg_engine)) == {a, c}
    assert {v // TEXT_SLOTS for v in text_rows(pg_engine)} == {a, c}

    catalog.write([indexed_write("/p/2.png", 2)])  # back, texts kept (None keeps them)
    assert set(image_rows(pg_engine)) == {a, b, c}
    assert {v // TEXT_SLOTS for v in text_rows(pg_engine)} == {a, b, c}

    catalog.write([ItemWrite(source="/p/3.png", origin="/photos", status=ItemStatus.FAILED, error="bad")])
    assert set(image_rows(pg_engine)) == {a, b}
    assert {v // TEXT_SLOTS for v in text_rows(pg_engine)} == {a, b}

    catalog.delete_items([a])
    assert set(image_rows(pg_engine)) == {b}
    assert {v // TEXT_SLOTS for v in text_rows(pg_engine)} == {b}


def test_model_change_and_text_slots(pg_engine: Engine) -> None:
    catalog = Catalog(pg_engine)
    (item,) = catalog.write([indexed_write("/p/1.png", 1, texts=_texts(1, (0, 1, 2)))])
    new_vector = unit_vector(77)
    catalog.write(
        [
            ItemWrite(
                source="/p/1.png",
                origin="/photos",
                status=ItemStatus.INDEXED,
                embedding=new_vector,
                model_fingerprint=OTHER_FP,
                texts=[TextVector(0, "title", "text 1 0", unit_vector(5))],
            )
        ]
    )
    assert image_rows(pg_engine)[item][0] == OTHER_FP
    assert np.array_equal(image_rows(pg_engine)[item][1], new_vector)
    texts = text_rows(pg_engine)
    assert set(texts) == {item * TEXT_SLOTS}  # slots 1 and 2 were dropped by the write
    assert texts[item * TEXT_SLOTS][1] == OTHER_FP

    catalog.store_captions({item: "a caption"}, "cap-fp", {item: unit_vector(9)}, OTHER_FP)
    assert np.array_equal(text_rows(pg_engine)[item * TEXT_SLOTS + 2][2], unit_vector(9))
    stored = catalog.store_synthetic_texts({item: [("synthetic one", unit_vector(10), "gen-fp")]}, OTHER_FP)
    assert stored == 1
    assert np.array_equal(text_rows(pg_engine)[item * TEXT_SLOTS + 8][2], unit_vector(10))
    catalog.store_captions({item: "caption without vector"}, "cap-fp")
    assert item * TEXT_SLOTS + 2 not in text_rows(pg_engine)


def test_float16_storage_gives_the_blobs_values(pg_engine: Engine) -> None:
    catalog = Catalog(pg_engine, embedding_storage="float16")
    (item,) = catalog.write([indexed_write("/p/1.png", 1)])
    expected = unit_vector(1).astype(np.float16).astype(np.float32)
    assert np.array_equal(image_rows(pg_engine)[item][1], expected)


def test_sqlite_catalog_has_no_vector_tables(tmp_path: object) -> None:
    engine = create_catalog_engine(f"sqlite:///{tmp_path}/catalog.sqlite3")
    ensure_schema(engine)
    catalog = Catalog(engine)
    assert catalog.write([indexed_write("/p/1.png", 1)])
    assert not {"item_vectors", "text_vectors"} & table_names(engine)
    with engine.begin() as connection:
        assert install_vector_tables(connection) is False
    engine.dispose()


def test_migration_backfills_existing_items(pg_engine: Engine) -> None:
    _downgrade(pg_engine, "0008")
    assert not {"item_vectors", "text_vectors"} & table_names(pg_engine)
    catalog = Catalog(pg_engine)
    a, b = catalog.write([indexed_write(f"/p/{n}.png", n, texts=_texts(n)) for n in (1, 2)])
    catalog.mark_missing([b])
    upgrade_database(pg_engine)
    assert set(image_rows(pg_engine)) == {a}
    assert np.array_equal(image_rows(pg_engine)[a][1], unit_vector(1))
    assert set(text_rows(pg_engine)) == {a * TEXT_SLOTS, a * TEXT_SLOTS + 2}


def _schema(engine: Engine) -> dict[str, object]:
    inspector = inspect(engine)
    result: dict[str, object] = {}
    for table in ("item_vectors", "text_vectors"):
        result[table] = (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            inspector.get_pk_constraint(table),
            sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
            sorted(
                (f["name"], f["referred_table"], str(f["options"])) for f in inspector.get_foreign_keys(table)
            ),
        )
    return result


def test_install_later_equals_the_migration_and_is_idempotent(pg_engine: Engine) -> None:
    migrated = _schema(pg_engine)
    _downgrade(pg_engine, "0008")
    catalog = Catalog(pg_engine)
    (a,) = catalog.write([indexed_write("/p/1.png", 1, texts=_texts(1))])
    with pg_engine.begin() as connection:
        assert install_vector_tables(connection) is True
    assert _schema(pg_engine) == migrated
    assert set(image_rows(pg_engine)) == {a}
    with pg_engine.begin() as connection:
        assert install_vector_tables(connection) is True  # again: nothing breaks, nothing doubles
    assert set(image_rows(pg_engine)) == {a}
    assert set(text_rows(pg_engine)) == {a * TEXT_SLOTS, a * TEXT_SLOTS + 2}
    assert current_revision(pg_engine) == "0008"


def test_writer_notices_tables_installed_while_it_runs(pg_engine: Engine) -> None:
    _downgrade(pg_engine, "0008")
    now = [0.0]
    catalog = Catalog(pg_engine)
    catalog.vector_rows = VectorRows("postgresql", clock=lambda: now[0])
    (a,) = catalog.write([indexed_write("/p/1.png", 1)])  # looks once: no tables
    with pg_engine.begin() as connection:
        install_vector_tables(connection)
    with pg_engine.begin() as connection:
        connection.execute(text("DELETE FROM item_vectors"))
    catalog.write([indexed_write("/p/1.png", 1)])
    assert image_rows(pg_engine) == {}  # still trusting its first look
    now[0] += NEGATIVE_RECHECK_SECONDS
    catalog.write([indexed_write("/p/1.png", 1)])
    assert set(image_rows(pg_engine)) == {a}


@pytest.fixture
def plain_postgres() -> Iterator[str]:
    """A fresh database on a PostgreSQL without the vector extension."""
    admin = create_engine(PLAIN_POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            has_vector = connection.execute(
                text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
            ).scalar()
            if has_vector:
                pytest.skip("this PostgreSQL has pgvector; the test needs one without")
            name = f"blipsearch_plain_{uuid.uuid4().hex[:8]}"
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except pytest.skip.Exception:
        raise
    except Exception as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL without pgvector at {PLAIN_POSTGRES_URL}: {exc}")
    from sqlalchemy.engine import make_url

    yield make_url(PLAIN_POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_postgresql_without_pgvector_migrates_cleanly(plain_postgres: str) -> None:
    engine = create_catalog_engine(plain_postgres)
    ensure_schema(engine)
    assert current_revision(engine) == head_revision()
    assert "items" in table_names(engine)
    assert not {"item_vectors", "text_vectors"} & table_names(engine)
    catalog = Catalog(engine)
    assert catalog.write([indexed_write("/p/1.png", 1)])
    catalog.delete_items(catalog.indexed_ids(FP).tolist())
    with engine.begin() as connection:
        assert install_vector_tables(connection) is False
    _downgrade(engine, "0008")
    upgrade_database(engine)
    engine.dispose()
