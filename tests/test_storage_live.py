"""Live indexes: catch-up replays catalog changes idempotently; growth and tombstones ask to rebuild."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_writes import FileFacts, ItemWrite
from blipsearch.storage.live import IndexSet
from blipsearch.storage.schema import ItemStatus

FP = "blip-" + "e" * 32
DIM = 8


def _write(i: int, **changes: object) -> ItemWrite:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    fields: dict[str, object] = {
        "source": f"/p/{i}.jpg",
        "origin": "/p",
        "status": ItemStatus.INDEXED,
        "file": FileFacts(f"{i:064x}", 10, 1.0),
        "embedding": v / np.linalg.norm(v),
        "model_fingerprint": FP,
    }
    fields.update(changes)
    return ItemWrite(**fields)  # type: ignore[arg-type]


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    opened = Catalog.open(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.sqlite3'}"))
    yield opened
    opened.close()


def test_catch_up_is_idempotent_and_follows_deletes(tmp_path: Path, catalog: Catalog) -> None:
    index_set = IndexSet(tmp_path, catalog, fingerprint=FP, dim=DIM)
    live, report = index_set.open(writer=True)
    assert len(live.images) == 0 and set(report.rebuilt) == {"images", "texts"}
    ids = catalog.write([_write(i) for i in range(5)])
    assert live.catch_up(catalog) == 5 and len(live.images) == 5
    assert live.catch_up(catalog) == 0, "nothing new: nothing replayed"
    live.apply_items(catalog, ids, catalog.last_change_id())  # applying again changes nothing
    assert np.array_equal(live.images.ids(), np.sort(ids))
    catalog.delete_items(ids[:2])
    live.catch_up(catalog)
    assert np.array_equal(live.images.ids(), np.sort(ids[2:]))
    failed = catalog.write([_write(3, status=ItemStatus.FAILED, embedding=None, error="now broken")])
    live.catch_up(catalog)
    assert failed[0] not in live.images.ids().tolist()


def test_commit_records_the_change_position_and_a_reopen_replays_only_the_rest(
    tmp_path: Path, catalog: Catalog
) -> None:
    index_set = IndexSet(tmp_path, catalog, fingerprint=FP, dim=DIM)
    live, _ = index_set.open(writer=True)
    catalog.write([_write(i) for i in range(3)])
    live.catch_up(catalog)
    index_set.commit(live)
    assert index_set.manifests()["images"].last_change_id == catalog.last_change_id()  # type: ignore[union-attr]
    catalog.write([_write(i) for i in range(3, 5)])
    reopened, report = IndexSet(tmp_path, catalog, fingerprint=FP, dim=DIM).open(writer=False)
    assert report.caught_up_items == 2 and not report.rebuilt and len(reopened.images) == 5


def test_growth_past_the_kind_and_tombstones_ask_for_a_rebuild(tmp_path: Path, catalog: Catalog) -> None:
    small_budget = IndexSet(tmp_path, catalog, fingerprint=FP, dim=DIM, requested_kind="hnsw")
    live, _ = small_budget.open(writer=True)
    ids = catalog.write([_write(i) for i in range(10)])
    live.catch_up(catalog)
    assert small_budget.needs_rebuild(live) is None
    catalog.delete_items(ids[:4])
    live.catch_up(catalog)
    assert "compact" in (small_budget.needs_rebuild(live) or "")
    rebuilt = small_budget.rebuild()
    assert rebuilt.images.tombstone_count == 0 and len(rebuilt.images) == 6

    # Asking for IVF loads the committed HNSW generation and says what the rule wants now.
    ivf = IndexSet(tmp_path, catalog, fingerprint=FP, dim=DIM, requested_kind="ivf")
    live, _ = ivf.open(writer=True)
    assert live.images.spec.kind == "hnsw"
    assert "rule now says flat" in (ivf.needs_rebuild(live) or ""), "6 vectors are too few to train IVF"
    catalog.write([_write(i) for i in range(10, 20)])
    live.catch_up(catalog)
    assert "rule now says ivf" in (ivf.needs_rebuild(live) or "")
    assert ivf.rebuild().images.spec.kind == "ivf"


def test_a_new_data_directory_is_not_a_warning_but_lost_indexes_are(
    tmp_path: Path, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="blipsearch.storage.live")
    IndexSet(tmp_path, catalog, fingerprint=FP, dim=DIM).open(writer=False)
    fresh = [r for r in caplog.records if r.name == "blipsearch.storage.live" and r.levelname != "DEBUG"]
    created = [r for r in fresh if r.getMessage() == "index created"]
    assert len(created) == 2 and all(r.levelname == "INFO" for r in created)
    assert not [r for r in fresh if r.levelno >= logging.WARNING]

    caplog.clear()
    catalog.write([_write(i) for i in range(2)])
    IndexSet(tmp_path / "elsewhere", catalog, fingerprint=FP, dim=DIM).open(writer=False)
    lost = [r for r in caplog.records if r.name == "blipsearch.storage.live" and r.levelno >= logging.WARNING]
    assert len(lost) == 2 and all(r.getMessage() == "index rebuilt from catalog" for r in lost)
