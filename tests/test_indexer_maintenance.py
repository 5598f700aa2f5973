"""`index status` and `index verify` on a catalog written directly: verify must catch every fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blipsearch.indexer.maintenance import index_status, verify
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_writes import FileFacts, ItemWrite
from blipsearch.storage.live import IMAGES, TEXTS, IndexSet
from blipsearch.storage.schema import ItemStatus
from blipsearch.storage.snapshots import IndexStore

FP = "blip-" + "d" * 32
DIM = 8


def _vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def indexed(tmp_path: Path, database_url: str) -> tuple[Settings, Catalog, IndexSet, list[int]]:
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    catalog = Catalog.open(settings)
    ids = catalog.write(
        [
            ItemWrite(
                source=f"/photos/{i}.jpg",
                origin="/photos",
                status=ItemStatus.INDEXED,
                file=FileFacts(f"{i:064x}", 10, 1.0, "JPEG", 4, 4),
                embedding=_vector(i),
                model_fingerprint=FP,
            )
            for i in range(6)
        ]
        + [
            ItemWrite(
                source="/photos/bad.jpg",
                origin="/photos",
                status=ItemStatus.FAILED,
                error="bad.jpg is truncated.",
                file=FileFacts("", 3, 1.0),
            )
        ]
    )
    index_set = IndexSet(tmp_path, catalog, fingerprint=FP, dim=DIM)
    index_set.open(writer=True)
    yield settings, catalog, index_set, ids[:6]
    catalog.close()


def _tamper(index_set: IndexSet, change) -> None:  # type: ignore[no-untyped-def]
    """Commit a damaged images index, as a buggy writer would."""
    store = IndexStore(index_set.directory, IMAGES)
    loaded = store.load(FP)
    assert loaded is not None
    index, manifest = loaded
    change(index)
    store.commit(index, last_change_id=manifest.last_change_id, model_fingerprint=FP)


def test_clean_catalog_and_index_verify_and_report_status(indexed) -> None:
    settings, catalog, _, _ = indexed
    report = verify(settings, catalog)
    assert report.ok and report.checked["images_vectors"] == 6 and report.checked["items"] == 7
    status = index_status(settings, catalog)
    assert status["items"]["indexed"] == 6 and status["items"]["failed"] == 1
    assert status["indexes"]["images"]["state"] == "current"
    assert status["failures"][0]["error"] == "bad.jpg is truncated."


def test_verify_reports_phantom_missing_and_changed_vectors(indexed) -> None:
    settings, catalog, index_set, ids = indexed
    _tamper(index_set, lambda index: index.add(np.array([999]), _vector(99)[None, :]))
    assert any("phantom" in p and "999" in p for p in verify(settings, catalog).problems)

    _tamper(index_set, lambda index: index.remove(np.array([999, ids[0]])))
    assert any("missing" in p and str(ids[0]) in p for p in verify(settings, catalog).problems)

    _tamper(index_set, lambda index: index.add(np.array([ids[0]]), _vector(123)[None, :]))
    assert any("vectors differ" in p for p in verify(settings, catalog).problems)


def test_an_index_never_committed_is_a_note_not_a_problem(indexed) -> None:
    """A writer killed before its first checkpoint of one index leaves only the other one; SQL
    still holds every vector and the next open builds the missing index from it."""
    settings, catalog, index_set, _ = indexed
    store = IndexStore(index_set.directory, TEXTS)
    store.discard()
    assert store.read_manifest() is None
    report = verify(settings, catalog)
    assert report.ok, report.problems
    assert any("texts index: no committed generation" in note for note in report.notes)
    live, opened = index_set.open(writer=True)
    assert "texts" in opened.rebuilt and len(live.images) == 6
    after = verify(settings, catalog)
    assert after.ok and not any("no committed generation" in note for note in after.notes)


def test_verify_reports_duplicate_ids(indexed) -> None:
    settings, catalog, index_set, ids = indexed
    # Bypass the upsert: the raw FAISS index takes the same id twice.
    _tamper(index_set, lambda index: index._index.add_with_ids(_vector(1)[None, :], np.array([ids[1]])))
    assert any("more than once" in p for p in verify(settings, catalog).problems)


def test_verify_reports_an_unreadable_index(indexed) -> None:
    settings, catalog, index_set, _ = indexed
    manifest = IndexStore(index_set.directory, IMAGES).read_manifest()
    assert manifest is not None
    (index_set.directory / manifest.file).write_bytes(b"garbage")
    problems = verify(settings, catalog).problems
    assert any("images index" in p for p in problems)


def test_rebuild_repairs_what_verify_found(indexed) -> None:
    settings, catalog, index_set, _ = indexed
    _tamper(index_set, lambda index: index.add(np.array([999]), _vector(99)[None, :]))
    assert not verify(settings, catalog).ok
    live = index_set.rebuild()
    assert (live.images.spec.kind, len(live.images)) == ("flat", 6)
    assert verify(settings, catalog).ok
