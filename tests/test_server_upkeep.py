"""What a server looks after besides requests (issue 26, items 8 and 9; issue 29's shared store).

- Crash litter in uploads/ (files no item names, unfinished .tmp files): reported by `index verify`,
  removed at server start, but never an upload another live server has in flight; in a shared
  image store, only litter older than IN_FLIGHT_SECONDS, since servers elsewhere hold no local lock.
- The API's writes are committed as index generations in the background (after N changes or T
  seconds), so a restart does not replay them all. The clock is injected: no sleeping.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from blipsearch.api.upkeep import ServerUpkeep
from blipsearch.indexer.items import ItemWriter
from blipsearch.indexer.maintenance import index_status, verify
from blipsearch.indexer.upload_files import IN_FLIGHT_SECONDS, UploadFolder, check_litter
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.checkpoint import Checkpointer
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.image_store import open_image_store
from blipsearch.storage.item_writes import ItemMetadata
from blipsearch.storage.live import IndexSet
from blipsearch.storage.lock import WriterLock

from imagesets import noise_png

KEY = "upkeep-key"


png = functools.partial(noise_png, size=(48, 48))


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(database_url: str, indexer_settings) -> Settings:
    """FAISS on both databases: checkpoints are what a FAISS server does (pgvector has none)."""
    return indexer_settings(database_url, api_key=KEY, vector_store="faiss")


@pytest.fixture
def service(settings: Settings, retrieval: RetrievalModel) -> Iterator[SearchService]:
    catalog = Catalog.open(settings)
    IndexSet(settings.data_dir, catalog, fingerprint=retrieval.fingerprint, dim=retrieval.embedding_dim).open(
        writer=True
    )
    engine = SearchService(settings, retrieval, catalog)
    yield engine
    engine.close()


def _replayed_at_open(settings: Settings, service: SearchService) -> int:
    """Items a fresh server would replay from the change log at start."""
    fresh = IndexSet(
        settings.data_dir,
        service.catalog,
        fingerprint=service.model.fingerprint,
        dim=service.model.embedding_dim,
    )
    _, report = fresh.open(writer=False)
    assert not report.rebuilt
    return report.caught_up_items


# item 9: checkpoints --------------------------------------------------------------------------


def test_api_writes_are_committed_after_n_changes(settings: Settings, service: SearchService) -> None:
    writer = ItemWriter(settings, service.model, service.catalog)
    checkpoints = Checkpointer(service, changes=3, seconds=3600, clock=Ticks())
    first = writer.add(png(1), ItemMetadata(title="one"))
    writer.add(png(2), ItemMetadata())
    assert not checkpoints.tick()
    assert _replayed_at_open(settings, service) == 2
    writer.delete(first)
    assert checkpoints.tick() and checkpoints.committed == 1
    assert _replayed_at_open(settings, service) == 0
    assert index_status(settings, service.catalog)["indexes"]["images"]["state"] == "current"
    report = verify(settings, service.catalog)
    assert report.ok and report.checked["images_vectors"] == 1, report.as_dict()
    assert not checkpoints.tick()  # nothing new


def test_api_writes_are_committed_after_t_seconds(settings: Settings, service: SearchService) -> None:
    writer = ItemWriter(settings, service.model, service.catalog)
    ticks = Ticks()
    checkpoints = Checkpointer(service, changes=1000, seconds=30, clock=ticks)
    writer.add(png(3), ItemMetadata())
    assert not checkpoints.tick()
    ticks.now += 29
    assert not checkpoints.tick()
    ticks.now += 1
    assert checkpoints.tick()
    assert _replayed_at_open(settings, service) == 0


def test_no_checkpoint_while_another_writer_holds_the_data_directory(
    settings: Settings, service: SearchService
) -> None:
    writer = ItemWriter(settings, service.model, service.catalog)
    checkpoints = Checkpointer(service, changes=1, seconds=3600, clock=Ticks())
    writer.add(png(4), ItemMetadata())
    with WriterLock(settings.data_dir, "an indexer run"):
        assert not checkpoints.tick()  # that writer's own checkpoints carry these changes
    assert _replayed_at_open(settings, service) == 1
    assert checkpoints.tick()
    assert _replayed_at_open(settings, service) == 0


def test_a_server_checkpoints_uploads_in_the_background(
    settings: Settings, api_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"api_checkpoint_changes": 2})
    with httpx.Client(base_url=api_server(settings), timeout=60, headers={"X-API-Key": KEY}) as client:
        for seed in (5, 6):
            assert (
                client.post("/v1/items", files={"file": ("a.png", png(seed), "image/png")}).status_code == 201
            )
        catalog = Catalog.open(settings)
        deadline = time.monotonic() + 60
        while True:
            status = index_status(settings, catalog)["indexes"]["images"]
            if status["state"] == "current" and status["vectors"] == 2:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        catalog.close()


# item 8: uploads litter -----------------------------------------------------------------------


def _litter(settings: Settings) -> tuple[Path, Path]:
    folder = settings.data_dir / "uploads" / "ab"
    folder.mkdir(parents=True, exist_ok=True)
    orphan = folder / "ab12-deadbeef.png"
    orphan.write_bytes(png(7))
    temporary = folder / ".ab34-cafebabe.png.tmp"
    temporary.write_bytes(b"half an upload")
    return orphan, temporary


def test_verify_reports_crash_litter_and_a_server_start_removes_it(
    settings: Settings, service: SearchService
) -> None:
    writer = ItemWriter(settings, service.model, service.catalog)
    kept = writer.add(png(8), ItemMetadata())
    source = service.catalog.items_by_ids([kept])[0].source
    assert source.startswith("upload:"), "an upload's source names the store, not a path of one machine"
    kept_file = settings.data_dir / "uploads" / source.removeprefix("upload:")
    orphan, temporary = _litter(settings)

    report = verify(settings, service.catalog)
    assert not report.ok
    assert report.checked["upload_orphans"] == 1 and report.checked["upload_temporary"] == 1
    assert any(orphan.name in problem for problem in report.problems), report.problems

    uploads = UploadFolder(settings.data_dir)
    removed = uploads.open(service.catalog)
    assert [e.key for e in removed.orphans] == [f"ab/{orphan.name}"]
    assert [e.key for e in removed.temporary] == [f"ab/{temporary.name}"]
    assert not orphan.exists() and not temporary.exists() and kept_file.exists()
    uploads.close()
    after = verify(settings, service.catalog)
    assert after.checked["upload_orphans"] == after.checked["upload_temporary"] == 0
    assert not any("uploads" in problem for problem in after.problems), after.problems


def test_a_second_server_leaves_young_files_that_may_be_uploads_in_flight(
    settings: Settings, service: SearchService
) -> None:
    running = UploadFolder(settings.data_dir)
    running.open(service.catalog)  # a live server sharing the data directory
    young, _ = _litter(settings)
    old = young.with_name("ab56-00000000.png")
    old.write_bytes(b"left by a crash long ago")
    long_ago = time.time() - IN_FLIGHT_SECONDS - 60
    os.utime(old, (long_ago, long_ago))

    report = verify(settings, service.catalog)
    assert report.checked["upload_orphans"] == 1 and any("in flight" in note for note in report.notes)
    second = UploadFolder(settings.data_dir)
    removed = second.open(service.catalog)
    assert [e.name for e in removed.orphans] == [old.name] and young.exists()
    second.close()
    running.close()


def test_a_shared_store_keeps_young_litter_whatever_the_local_lock_says(
    database_url: str, indexer_settings, service: SearchService
) -> None:  # type: ignore[no-untyped-def]
    shared = indexer_settings(
        database_url, api_key=KEY, image_store=f"memory://upkeep-{uuid.uuid4().hex}/images"
    )
    writer = ItemWriter(shared, service.model, service.catalog)
    kept = writer.add(png(8), ItemMetadata())
    source = service.catalog.items_by_ids([kept])[0].source
    store = open_image_store(shared)
    in_flight = store.put(png(9), "ab" * 32, ".png")  # another machine's upload, its row not committed yet

    uploads = UploadFolder.for_settings(shared)
    assert uploads.servers_running(), "no local lock can see servers on other machines"
    young = check_litter(uploads, service.catalog)
    assert young.orphans == 0 and not young.problems and any("shared" in note for note in young.notes)
    later = time.time() + IN_FLIGHT_SECONDS + 60
    old = check_litter(uploads, service.catalog, now=later)
    assert old.orphans == 1 and any(in_flight.split("/")[1] in problem for problem in old.problems)
    assert len(uploads.open(service.catalog)) == 0, (
        "alone on this machine, yet a young object may be in flight"
    )
    uploads.close()
    removed = UploadFolder.for_settings(shared).open(service.catalog, now=later)
    assert [entry.key for entry in removed.orphans] == [in_flight]
    assert [entry.key for entry in store.entries()] == [source.removeprefix("upload:")]


def test_the_server_cleans_uploads_at_start(settings: Settings, api_server) -> None:  # type: ignore[no-untyped-def]
    orphan, temporary = _litter(settings)
    with httpx.Client(base_url=api_server(settings), timeout=60) as client:
        assert client.get("/healthz").status_code == 200
    assert not orphan.exists() and not temporary.exists()


# serve --workers N: one upkeep worker ---------------------------------------------------------


def test_the_upkeep_worker_commits_writes_made_through_another_worker(
    settings: Settings, service: SearchService, retrieval: RetrievalModel
) -> None:
    other = SearchService(settings, retrieval, Catalog.open(settings))  # another worker's engine
    try:
        writer = ItemWriter(settings, other.model, other.catalog)
        added = [writer.add(png(seed), ItemMetadata()) for seed in (21, 22, 23)]
        other.refresh()
        checkpoints = Checkpointer(service, changes=3, seconds=3600, clock=Ticks())
        assert checkpoints.tick(), "the upkeep worker counts changes it did not make"
        assert _replayed_at_open(settings, service) == 0
        assert sorted(service.store.images.ids().tolist()) == sorted(added)
    finally:
        other.close()


def test_a_worker_without_upkeep_cleans_and_commits_nothing(
    settings: Settings, service: SearchService
) -> None:
    writer = ItemWriter(settings, service.model, service.catalog)
    writer.add(png(31), ItemMetadata())
    service.refresh()
    orphan, _ = _litter(settings)
    upkeep = ServerUpkeep(settings, service, owner=False).start()
    upkeep.stop()
    assert orphan.exists()
    assert _replayed_at_open(settings, service) == 1, "only the upkeep worker commits generations"


def test_a_restarted_upkeep_worker_spares_uploads_a_joined_worker_may_have_in_flight(
    settings: Settings, service: SearchService
) -> None:
    joined = UploadFolder(settings.data_dir)
    joined.join()  # worker 1: it cleans nothing, but holds the servers' lock while it serves
    young, temporary = _litter(settings)
    restarted = UploadFolder(settings.data_dir)  # worker 0 again, after a crash
    assert not restarted.open(service.catalog)
    assert young.exists() and temporary.exists()
    restarted.close()
    joined.close()
    alone = UploadFolder(settings.data_dir)
    assert len(alone.open(service.catalog)) == 2 and not young.exists()
    alone.close()
