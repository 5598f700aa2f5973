"""`index status` and `index verify` for pgvector: the rows checked against the catalog."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine, text

from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import create_catalog_engine, ensure_schema
from blipsearch.storage.item_writes import ItemWrite, TextVector
from blipsearch.storage.pgvector_checks import pgvector_status, pgvector_verify
from blipsearch.storage.pgvector_store import PgvectorStore
from blipsearch.storage.schema import TEXT_SLOTS, ItemStatus

FP = "blip-" + "e" * 32
OTHER_FP = "blip-" + "f" * 32
DIM = 8


def _unit(seed: int, n: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def engine(empty_postgres_url: str) -> Iterator[Engine]:
    engine = create_catalog_engine(empty_postgres_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


def _write(catalog: Catalog, vectors: np.ndarray, fingerprint: str, prefix: str) -> list[int]:
    return catalog.write(
        [
            ItemWrite(
                source=f"/{prefix}/{n}.png",
                origin="/p",
                status=ItemStatus.INDEXED,
                embedding=v,
                model_fingerprint=fingerprint,
                texts=[TextVector(0, "title", f"t{n}", vectors[-1 - n])],
            )
            for n, v in enumerate(vectors)
        ]
    )


def test_status_counts_rows_per_model_and_verify_agrees(engine: Engine) -> None:
    catalog = Catalog(engine)
    _write(catalog, _unit(1, 12), FP, "a")
    _write(catalog, _unit(2, 5), OTHER_FP, "b")
    PgvectorStore(engine, FP, DIM).finish_run()
    status = pgvector_status(catalog)
    assert status["available"] is True
    assert status["vectors"] == {FP: {"images": 12, "texts": 12}, OTHER_FP: {"images": 5, "texts": 5}}
    assert sorted((i["fingerprint"], i["dim"], i["valid"]) for i in status["indexes"]) == [
        (FP, DIM, True),
        (FP, DIM, True),
    ]
    assert pgvector_verify(catalog, sample=100) == []


def test_verify_finds_drift_and_rebuild_repairs_it(engine: Engine) -> None:
    catalog = Catalog(engine)
    vectors = _unit(3, 30)
    ids = _write(catalog, vectors, FP, "a")
    store = PgvectorStore(engine, FP, DIM)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM item_vectors WHERE item_id = :i"), {"i": ids[0]})
        connection.execute(
            text("UPDATE text_vectors SET embedding = CAST(:e AS vector) WHERE vector_id = :v"),
            {"e": "[" + ",".join(["0.25"] * DIM) + "]", "v": ids[1] * TEXT_SLOTS},
        )
    problems = pgvector_verify(catalog, sample=100)
    assert len(problems) == 2
    assert "images" in problems[0] and "1 vectors missing" in problems[0]
    assert "texts" in problems[1] and "differ" in problems[1]
    with store.writer_lock("rebuild"):
        report = store.rebuild()
    assert report["image_vectors"] == 30 and report["text_vectors"] == 30
    assert pgvector_verify(catalog, sample=100) == []
    _scores, found = store.texts.search(vectors[-1:], 1)
    assert found[0, 0] == ids[0] * TEXT_SLOTS


def test_an_invalid_index_is_a_problem(engine: Engine) -> None:
    catalog = Catalog(engine)
    _write(catalog, _unit(4, 3), FP, "a")
    store = PgvectorStore(engine, FP, DIM, writer=True)
    with engine.begin() as connection:  # what an interrupted CREATE INDEX CONCURRENTLY leaves
        connection.execute(
            text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = CAST(:n AS regclass)"),
            {"n": store.images.index_name},
        )
    assert any("invalid" in problem for problem in pgvector_verify(catalog))
    assert store.images.search(_unit(4, 1), 3)[1].min() >= 0  # exact meanwhile
    assert store.images.paths == {"exact": 1}
    PgvectorStore(engine, FP, DIM, writer=True)  # a writer rebuilds it
    assert pgvector_verify(catalog) == []


def test_without_the_tables_status_and_verify_say_so(tmp_path: object) -> None:
    sqlite = create_catalog_engine(f"sqlite:///{tmp_path}/c.sqlite3")
    ensure_schema(sqlite)
    catalog = Catalog(sqlite)
    assert pgvector_status(catalog) == {"backend": "pgvector", "available": False}
    assert "missing" in pgvector_verify(catalog)[0]
    sqlite.dispose()
