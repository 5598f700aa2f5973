"""The FAISS store on a PostgreSQL catalog, which the `database_url` tests no longer reach (their
PostgreSQL has pgvector, so `auto` gives them pgvector): servers with their own data directories on
one catalog, each catching up from the change log and checkpointing into its own directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.store_choice import open_vector_store, writer_lock

from catalog_rows import FP, indexed_write, unit_vector

DIM = 8


def _catalog(tmp_path: Path, url: str) -> tuple[Settings, Catalog]:
    chosen = Settings(data_dir=tmp_path, database_url=url, vector_store="faiss")
    return chosen, Catalog.open(chosen)


def test_faiss_servers_on_one_postgresql_catalog_agree(tmp_path: Path, empty_postgres_url: str) -> None:
    settings, catalog = _catalog(tmp_path / "writer", empty_postgres_url)
    ids = catalog.write([indexed_write(f"/photos/{seed}.jpg", seed) for seed in range(6)])
    with writer_lock(settings, catalog, "index"):
        writer = open_vector_store(settings, catalog, fingerprint=FP, dim=DIM, writer=True)
        assert writer.finish_run().indexed_total == 6
    reader_settings, reader_catalog = _catalog(tmp_path / "reader", empty_postgres_url)
    reader = open_vector_store(reader_settings, reader_catalog, fingerprint=FP, dim=DIM, writer=False)

    catalog.delete_items([ids[0]])
    [added] = catalog.write([indexed_write("/photos/new.jpg", 40)])
    assert reader.refresh() == 2  # the deleted and the added item, from the change log
    with reader.searching():
        _, found = reader.images.search(unit_vector(40)[None, :], 6)
    assert found[0, 0] == added and ids[0] not in found[0].tolist()
    assert len(reader.images) == 6 and reader.pending_changes >= 2
    assert reader.checkpoint(), "a reader commits what it caught up into its own data directory"
    assert reader.pending_changes == 0
    assert (tmp_path / "reader" / "indexes").is_dir()
    np.testing.assert_allclose(reader.images.vector(added), unit_vector(40), atol=1e-6)
    state = reader.state()
    assert state["backend"] == "faiss" and state["items"] == 6 and state["generation"]["images"] >= 1
    catalog.close()
    reader_catalog.close()
