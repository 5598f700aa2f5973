"""Which vector store a process gets: the setting, and what the catalog's database can do."""

from __future__ import annotations

from pathlib import Path

import pytest

from blipsearch.errors import ConfigError, IndexLockedError
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.faiss_store import FaissStore
from blipsearch.storage.lock import WriterLock
from blipsearch.storage.pgvector_store import PgvectorStore
from blipsearch.storage.store_choice import chosen_backend, open_vector_store, writer_lock

from catalog_rows import FP

DIM = 8


def _catalog(tmp_path: Path, url: str, **settings: object) -> tuple[Settings, Catalog]:
    chosen = Settings(data_dir=tmp_path, database_url=url, **settings)  # type: ignore[arg-type]
    return chosen, Catalog.open(chosen)


def test_auto_follows_the_database(tmp_path: Path, empty_postgres_url: str) -> None:
    settings, catalog = _catalog(tmp_path / "a", f"sqlite:///{tmp_path / 'c.sqlite3'}")
    assert chosen_backend(settings, catalog) == "faiss"
    store = open_vector_store(settings, catalog, fingerprint=FP, dim=DIM, writer=False)
    assert isinstance(store, FaissStore)
    catalog.close()

    settings, catalog = _catalog(tmp_path / "b", empty_postgres_url)
    assert chosen_backend(settings, catalog) == "pgvector"
    assert isinstance(
        open_vector_store(settings, catalog, fingerprint=FP, dim=DIM, writer=False), PgvectorStore
    )
    catalog.close()

    settings, catalog = _catalog(tmp_path / "c", empty_postgres_url, vector_store="faiss")
    assert chosen_backend(settings, catalog) == "faiss"
    catalog.close()


def test_pgvector_where_it_cannot_run_is_a_clear_error(tmp_path: Path) -> None:
    settings, catalog = _catalog(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", vector_store="pgvector")
    with pytest.raises(ConfigError, match="pgvector"):
        open_vector_store(settings, catalog, fingerprint=FP, dim=DIM, writer=False)
    catalog.close()


def test_writer_lock_follows_the_backend(tmp_path: Path, empty_postgres_url: str) -> None:
    settings, catalog = _catalog(tmp_path, empty_postgres_url)
    with writer_lock(settings, catalog, "first"):
        with pytest.raises(IndexLockedError), writer_lock(settings, catalog, "second"):
            pass
        with WriterLock(tmp_path, "a file lock is not the pgvector writers' lock"):
            pass
    faiss_settings = settings.model_copy(update={"vector_store": "faiss"})
    with writer_lock(faiss_settings, catalog, "faiss writer"), pytest.raises(IndexLockedError):
        WriterLock(tmp_path, "second").acquire()
    catalog.close()
