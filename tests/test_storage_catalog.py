"""Item writes and reads: one transaction and one change per item, statuses, reuse by content."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.catalog_access import CHANGE_LOG_LOCK
from blipsearch.storage.item_writes import ItemMetadata, ItemWrite, TextVector
from blipsearch.storage.schema import TEXT_SLOTS, ItemStatus

from catalog_rows import FP, indexed_write, unit_vector


@pytest.fixture
def catalog(tmp_path: Path, database_url: str) -> Catalog:
    opened = Catalog.open(Settings(data_dir=tmp_path, database_url=database_url))
    yield opened
    opened.close()


def test_a_batch_write_records_one_change_per_item_and_is_replayable(catalog: Catalog) -> None:
    meta = ItemMetadata(external_id="SKU-1", title="Red shoe", price=Decimal("9.99"), tags=("b", "a", "a"))
    texts = [TextVector(0, "title", "Red shoe", unit_vector(9))]
    ids = catalog.write(
        [indexed_write("/photos/1.png", 1, metadata=meta, texts=texts), indexed_write("/photos/2.png", 2)]
    )
    assert len(set(ids)) == 2
    changed, last = catalog.changed_items_since(0)
    assert changed == sorted(ids) and last == catalog.last_change_id() == 2

    image_ids, image_vectors, text_ids, _ = catalog.vectors_for_items(ids, FP)
    assert image_ids.tolist() == sorted(ids)
    assert np.allclose(image_vectors[0], unit_vector(1))
    assert text_ids.tolist() == [ids[0] * TEXT_SLOTS]
    item = catalog.items_by_sources(["/photos/1.png"])["/photos/1.png"]
    assert [t.tag for t in item.tags] == ["a", "b"] and item.price == Decimal("9.99")

    catalog.write([indexed_write("/photos/1.png", 3)])  # same source: an update, not a new item
    assert catalog.items_by_sources(["/photos/1.png"])["/photos/1.png"].id == ids[0]
    assert catalog.changed_items_since(2) == ([ids[0]], 3)


def test_failed_missing_and_deleted_items_leave_the_index_content(catalog: Catalog) -> None:
    a, b, c = catalog.write([indexed_write(f"/photos/{n}.png", n) for n in range(3)])
    catalog.write(
        [ItemWrite(source="/photos/0.png", origin="/photos", status=ItemStatus.FAILED, error="bad")]
    )
    catalog.mark_missing([b])
    catalog.delete_items([c])
    image_ids, *_ = catalog.vectors_for_items([a, b, c], FP)
    assert image_ids.tolist() == []
    assert catalog.status_counts() == {"pending": 0, "indexed": 0, "failed": 1, "missing": 1}
    assert catalog.indexed_ids(FP).tolist() == []
    assert catalog.vectors_for_items([b], "blip-other")[0].tolist() == []
    assert catalog.sources_in_origin("/photos") == {
        "/photos/0.png": (a, "failed"),
        "/photos/1.png": (b, "missing"),
    }
    assert catalog.changed_items_since(3)[0] == [a, b, c]


def test_embeddings_are_reused_by_content_hash_for_the_same_model_only(catalog: Catalog) -> None:
    catalog.write([indexed_write("/photos/1.png", 1)])
    found = catalog.embeddings_by_hash([f"{1:064x}", f"{2:064x}"], FP)
    assert list(found) == [f"{1:064x}"] and np.allclose(found[f"{1:064x}"][0], unit_vector(1))
    assert catalog.embeddings_by_hash([f"{1:064x}"], "blip-other") == {}


def test_an_embedding_without_its_model_is_refused(catalog: Catalog) -> None:
    write = indexed_write("/p/x.png", 1)
    write.model_fingerprint = None
    with pytest.raises(ValueError, match="fingerprint"):
        catalog.write([write])


def test_change_ids_become_visible_in_their_order(catalog: Catalog, database_url: str) -> None:
    """A server catching up reads "changes after the last id I applied": an id that commits after a
    later one would be skipped for good. On PostgreSQL (a sequence) a writer that asks for ids
    while another writer's are uncommitted waits for that commit; SQLite has one writer anyway."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serializes writers itself")
    (first,) = catalog.write([indexed_write("/photos/a.png", 1)])
    before = catalog.last_change_id()
    later: list[int] = []
    with catalog.sessions() as session, session.begin():
        catalog._record_changes(session, [first])  # a write in progress: its change id is taken
        session.flush()
        writer = threading.Thread(
            target=lambda: later.extend(catalog.write([indexed_write("/photos/b.png", 2)]))
        )
        writer.start()
        deadline = time.monotonic() + 60
        while not _waiting_on_the_change_log(catalog):
            assert time.monotonic() < deadline, "the second writer took a change id without waiting"
            assert writer.is_alive() and not later, "the second writer committed before the first"
            time.sleep(0.02)
        assert catalog.last_change_id() == before
    writer.join(timeout=60)
    assert later, "the second writer never finished"
    changed, last = catalog.changed_items_since(before)
    assert changed == sorted([first, *later]) and last == before + 2


def _waiting_on_the_change_log(catalog: Catalog) -> bool:
    with catalog.sessions() as session:
        waiting = session.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND classid = :a AND objid = :b"
            ),
            {"a": CHANGE_LOG_LOCK[0], "b": CHANGE_LOG_LOCK[1]},
        ).scalar_one()
    return bool(waiting)
