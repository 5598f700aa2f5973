"""Ingest job leases, cancel while listing, and the bounded queue (issue 26, item 7).

The store's clock is injected, so a lease expires when the test says so, with no sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from blipsearch.indexer.jobs import Heartbeat
from blipsearch.indexer.pipeline import LIST_STOP_CHECK, Indexer, IndexOptions
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import create_catalog_engine, ensure_schema
from blipsearch.storage.jobs import MAX_ATTEMPTS, JobStore
from blipsearch.storage.store_choice import writer_lock

LEASE = 60.0


class Clock:
    """A wall clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def url(database_url: str) -> Iterator[str]:
    engine = create_catalog_engine(database_url)
    ensure_schema(engine)
    engine.dispose()
    yield database_url


def _store(url: str, clock: Clock) -> JobStore:
    return JobStore(create_catalog_engine(url), lease_seconds=LEASE, clock=clock)


def test_a_job_abandoned_on_another_host_is_taken_over_once_its_lease_passes(url: str, clock: Clock) -> None:
    """The old runner's container came back under a new host name: no pid or host tells it is dead."""
    old, new = _store(url, clock), _store(url, clock)
    job = old.create("/photos")
    claimed = old.claim_next("old-host:1:aaaa")
    assert claimed is not None and claimed.lease_expires_at == clock.now + timedelta(seconds=LEASE)

    clock.advance(LEASE * 0.5)
    assert old.renew(job.id, "old-host:1:aaaa") is not None  # alive: renewed
    clock.advance(LEASE * 0.9)
    assert new.claim_next("new-host:1:bbbb") is None  # renewed 0.9 lease ago: still held
    progressed = old.update_progress(job.id, 3, 10, worker="old-host:1:aaaa")  # progress renews too
    assert progressed is not None and progressed.lease_expires_at == clock.now + timedelta(seconds=LEASE)

    clock.advance(LEASE + 1)  # the old runner went silent
    taken = new.claim_next("new-host:1:bbbb")
    assert taken is not None and taken.id == job.id
    assert taken.worker == "new-host:1:bbbb" and taken.attempts == 2 and taken.status == "running"
    # The old runner, should it wake up, holds nothing any more: none of its writes land.
    assert old.renew(job.id, "old-host:1:aaaa") is None
    assert old.update_progress(job.id, 9, 10, worker="old-host:1:aaaa") is None
    assert old.finish(job.id, "failed", error="late", worker="old-host:1:aaaa") is None
    assert old.release(job.id, worker="old-host:1:aaaa") is None
    current = new.get(job.id)
    assert current is not None and current.status == "running" and current.worker == "new-host:1:bbbb"
    assert current.done == 3
    finished = new.finish(job.id, "succeeded", worker="new-host:1:bbbb")
    assert finished is not None and finished.lease_expires_at is None
    for store in (old, new):
        store.engine.dispose()


def test_a_job_whose_runners_keep_dying_fails_after_max_attempts(url: str, clock: Clock) -> None:
    store = _store(url, clock)
    job = store.create("/poison")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claimed = store.claim_next(f"w{attempt}")
        assert claimed is not None and claimed.attempts == attempt
        clock.advance(LEASE + 1)
    assert store.claim_next("w-last") is None
    failed = store.get(job.id)
    assert failed is not None and failed.status == "failed"
    assert failed.error and f"interrupted {MAX_ATTEMPTS} times" in failed.error
    store.engine.dispose()


def test_racing_runners_take_over_an_expired_job_exactly_once(url: str, clock: Clock) -> None:
    """Four processes' worth of stores, each with its own connection, see the same expired lease."""
    seed = _store(url, clock)
    job = seed.create("/contended")
    assert seed.claim_next("dead:1:x") is not None
    clock.advance(LEASE + 1)
    stores = [_store(url, clock) for _ in range(4)]
    won: dict[str, int | None] = {}
    start = threading.Barrier(len(stores))

    def take(name: str, store: JobStore) -> None:
        start.wait()
        taken = store.claim_next(name)
        won[name] = taken.id if taken is not None else None

    threads = [threading.Thread(target=take, args=(f"w{i}", s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    winners = [name for name, got in won.items() if got == job.id]
    assert len(won) == 4 and len(winners) == 1, won
    row = seed.get(job.id)
    assert row is not None and row.worker == winners[0] and row.attempts == 2
    for store in (seed, *stores):
        store.engine.dispose()


def test_the_heartbeat_renews_and_notices_a_takeover(url: str, clock: Clock) -> None:
    store = _store(url, clock)
    job = store.create("/slow-listing")
    assert store.claim_next("me") is not None
    heartbeat = Heartbeat(store, job.id, "me", every=LEASE / 3)
    clock.advance(LEASE / 3)
    heartbeat.beat()
    renewed = store.get(job.id)
    assert renewed is not None and renewed.lease_expires_at == clock.now + timedelta(seconds=LEASE)
    assert not heartbeat.lost.is_set()
    clock.advance(LEASE + 1)  # say the process was frozen for longer than its lease
    assert store.claim_next("other") is not None
    heartbeat.beat()
    assert heartbeat.lost.is_set()
    store.engine.dispose()


def test_cancel_acts_while_the_files_are_still_being_listed(
    tmp_path: Path, indexer_settings, retrieval: RetrievalModel
) -> None:
    """A job on a huge tree used to list every file before its first cancel check."""
    folder = tmp_path / "huge"
    folder.mkdir()
    total = LIST_STOP_CHECK * 3
    for index in range(total):
        (folder / f"{index:05d}.png").write_bytes(b"not decoded while listing")
    asked = 0

    def stop_at_once() -> bool:
        nonlocal asked
        asked += 1
        return True

    settings = indexer_settings(index_chunk_items=8)
    indexer = Indexer(settings, model=retrieval)
    report = indexer.run(folder, IndexOptions(should_stop=stop_at_once))
    assert report.cancelled and asked == 1
    assert report.seen == LIST_STOP_CHECK < total
    assert report.embedded == report.failed == 0
    assert sum(indexer.catalog.status_counts().values()) == 0
    indexer.catalog.close()


KEY = "queue-key"


def test_the_job_queue_is_bounded(tmp_path: Path, database_url: str, tiny_checkpoints, api_server) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "photos"
    folder.mkdir()
    fields: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "retrieval_model": str(tiny_checkpoints.retrieval),
        "device": "cpu",
        "offline": True,
        "api_key": KEY,
        "max_queued_jobs": 3,
    }
    if "ingest_roots" in Settings.model_fields:  # server-side ingest needs an allowed root
        fields["ingest_roots"] = [str(tmp_path)]
    settings = Settings(**fields)  # type: ignore[arg-type]
    catalog = Catalog.open(settings)
    try:
        with (
            writer_lock(settings, catalog, "the test, so no job can finish"),
            httpx.Client(base_url=api_server(settings), timeout=60, headers={"X-API-Key": KEY}) as client,
        ):
            accepted = [client.post("/v1/jobs", json={"path": str(folder)}) for _ in range(3)]
            assert [r.status_code for r in accepted] == [202, 202, 202], accepted[-1].text
            refused = client.post("/v1/jobs", json={"path": str(folder)})
            assert refused.status_code == 503, refused.text
            assert refused.headers.get("Retry-After")
            error = refused.json()["error"]
            assert error["code"] == "queue_full" and error["status"] == 503 and "3" in error["message"]
            newest = accepted[-1].json()["id"]  # never claimed while an older job is queued
            cancelled = client.post(f"/v1/jobs/{newest}/cancel")
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
            assert client.post("/v1/jobs", json={"path": str(folder)}).status_code == 202
    finally:
        catalog.close()
