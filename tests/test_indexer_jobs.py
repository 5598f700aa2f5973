"""Ingest jobs: the SQL job store on SQLite and PostgreSQL, and the runner end to end (tiny BLIP)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from blipsearch.errors import InvalidInputError
from blipsearch.indexer.jobs import JobRunner
from blipsearch.indexer.maintenance import verify
from blipsearch.indexer.pipeline import Indexer, IndexOptions
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import create_catalog_engine, ensure_schema
from blipsearch.storage.jobs import MAX_ATTEMPTS, PROCESS_WORKER, Job, JobStore
from blipsearch.storage.lock import WriterLock
from blipsearch.storage.schema import IngestJob, utcnow

from imagesets import write_valid_images

_SMALL_STEPS = {
    "image_batch_size": 2,
    "index_chunk_items": 2,
    "decode_workers": 1,
    "index_checkpoint_items": 4,
}


@pytest.fixture
def settings(database_url: str, indexer_settings, tmp_path: Path) -> Settings:
    return indexer_settings(database_url, ingest_roots=[tmp_path], **_SMALL_STEPS)


@pytest.fixture
def sqlite_settings(indexer_settings, tmp_path: Path) -> Settings:
    """For runner behaviour that does not depend on the database."""
    return indexer_settings(ingest_roots=[tmp_path], **_SMALL_STEPS)


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    engine = create_catalog_engine(database_url)
    ensure_schema(engine)
    yield JobStore(engine)
    engine.dispose()


def _set(store: JobStore, job_id: int, **values: object) -> None:
    """Write a job's row directly, as a crashed process would have left it."""
    with store.engine.begin() as connection:
        connection.execute(update(IngestJob).where(IngestJob.id == job_id).values(**values))


def _wait(predicate: Callable[[], Job | None], what: str, timeout: float = 120.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = predicate()
        if job is not None:
            return job
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _until_finished(store: JobStore, job_id: int) -> Job:
    def finished() -> Job | None:
        job = store.get(job_id)
        return job if job is not None and job.finished else None

    return _wait(finished, f"job {job_id} to finish")


# the store ------------------------------------------------------------------------------------


def test_create_get_list(store: JobStore) -> None:
    first = store.create("/photos", {"prune": True, "index_kind": "flat"})
    second = store.create("/catalog/products.csv")
    assert first.status == "queued" and first.attempts == 0 and not first.cancel_requested
    assert first.options == {
        "prune": True,
        "captions": False,
        "retry_failed": False,
        "follow_symlinks": False,
        "include_hidden": False,
        "index_kind": "flat",
    }
    assert store.get(first.id) == first
    assert store.get(first.id + 1000) is None
    assert [job.id for job in store.list()] == [second.id, first.id]
    assert [job.id for job in store.list(limit=1)] == [second.id]
    as_json = json.loads(json.dumps(first.as_dict()))
    assert as_json["status"] == "queued" and as_json["path"] == "/photos"
    assert first.created_at is not None and first.created_at.tzinfo is not None
    assert "+00:00" in as_json["created_at"]
    with pytest.raises(InvalidInputError, match="index_kind"):
        store.create("/x", {"index_kind": "annoy"})
    with pytest.raises(InvalidInputError, match="colour"):
        store.create("/x", {"colour": "red"})


def test_claim_progress_finish(store: JobStore) -> None:
    first = store.create("/a")
    second = store.create("/b")
    claimed = store.claim_next("w1")
    assert claimed is not None and claimed.id == first.id
    assert claimed.status == "running" and claimed.attempts == 1 and claimed.worker == "w1"
    assert claimed.started_at is not None
    again = store.claim_next("w2")
    assert again is not None and again.id == second.id
    assert store.claim_next("w3") is None

    progressed = store.update_progress(first.id, 3, 10, {"embedded": 2, "failed": 1})
    assert progressed is not None
    assert (progressed.done, progressed.total, progressed.counts) == (3, 10, {"embedded": 2, "failed": 1})
    finished = store.finish(first.id, "succeeded", {"embedded": 9}, None)
    assert finished is not None and finished.status == "succeeded" and finished.finished
    assert finished.counts == {"embedded": 9} and finished.finished_at is not None
    # A finished job takes no more progress and cannot finish twice.
    assert store.update_progress(first.id, 10, 10) is None
    assert store.finish(first.id, "failed", error="late") is None
    assert store.get(first.id) == finished
    with pytest.raises(ValueError):
        store.finish(second.id, "running")
    failed = store.finish(second.id, "failed", error="The folder vanished.")
    assert failed is not None and failed.error == "The folder vanished."


def test_cancel(store: JobStore) -> None:
    queued = store.create("/a")
    running = store.create("/b")
    assert store.claim_next() is not None  # /a
    _set(store, queued.id, status="queued", worker=None)  # put /a back, claim /b instead
    _set(
        store,
        running.id,
        status="running",
        worker=PROCESS_WORKER,
        lease_expires_at=utcnow() + timedelta(hours=1),
    )

    cancelled = store.request_cancel(queued.id)
    assert cancelled is not None and cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert store.claim_next() is None  # a cancelled job is never claimed

    asked = store.request_cancel(running.id)
    assert asked is not None and asked.status == "running" and asked.cancel_requested
    assert store.cancel_requested(running.id)

    done = store.finish(running.id, "cancelled")
    assert done is not None
    assert store.request_cancel(running.id) == done  # finished: unchanged
    assert store.request_cancel(9999) is None


def test_release(store: JobStore) -> None:
    """A run put back by its runner (lock held elsewhere, shutdown) is not counted as an attempt."""
    job = store.create("/a")
    assert store.claim_next() is not None
    released = store.release(job.id, "Waiting: another writer")
    assert released is not None and released.status == "queued" and released.attempts == 0
    assert released.error == "Waiting: another writer" and released.worker is None
    reclaimed = store.claim_next()
    assert reclaimed is not None and reclaimed.error is None and reclaimed.attempts == 1
    # Cancellation asked while it ran: releasing it ends it, so the queue never runs it again.
    assert store.request_cancel(job.id) is not None
    ended = store.release(job.id, "Waiting: another writer")
    assert ended is not None and ended.status == "cancelled" and ended.finished_at is not None
    assert ended.error == "Cancelled on request."
    assert store.claim_next() is None and store.release(job.id) is None


def test_expired_leases_are_requeued(store: JobStore) -> None:
    crashed = store.create("/crashed")
    hopeless = store.create("/hopeless")
    alive = store.create("/alive")
    cancelled = store.create("/cancelled")
    later = utcnow() + timedelta(minutes=5)
    _set(store, crashed.id, status="running", worker=None, attempts=1)
    _set(store, hopeless.id, status="running", worker="gone:1:x", attempts=MAX_ATTEMPTS)
    _set(store, alive.id, status="running", worker=PROCESS_WORKER, attempts=1, lease_expires_at=later)
    _set(store, cancelled.id, status="running", worker=None, attempts=1, cancel_requested=True)

    changed = store.expire_leases()
    assert {job.id for job in changed} == {crashed.id, hopeless.id, cancelled.id}
    requeued = store.get(crashed.id)
    assert requeued is not None and requeued.status == "queued" and requeued.worker is None
    assert requeued.attempts == 1  # the next claim counts the next start
    failed = store.get(hopeless.id)
    assert failed is not None and failed.status == "failed"
    assert failed.error and f"interrupted {MAX_ATTEMPTS} times" in failed.error
    left = store.get(alive.id)
    assert left is not None and left.status == "running"
    gone = store.get(cancelled.id)
    assert gone is not None and gone.status == "cancelled"

    reclaimed = store.claim_next()
    assert reclaimed is not None and reclaimed.id == crashed.id and reclaimed.attempts == 2


def test_racing_claims_never_share_a_job(store: JobStore) -> None:
    """Four runners with their own connections (as four processes would have) drain one queue."""
    jobs = [store.create(f"/j{i}") for i in range(24)]
    url = store.engine.url.render_as_string(hide_password=False)
    claimed: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def drain(name: str) -> None:
        engine = create_catalog_engine(url)
        mine = JobStore(engine)
        got: list[int] = []
        start.wait()
        while (job := mine.claim_next(name)) is not None:
            got.append(job.id)
        claimed[name] = got
        engine.dispose()

    threads = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    every = [job_id for got in claimed.values() for job_id in got]
    assert sorted(every) == sorted(job.id for job in jobs)  # each exactly once
    for name, got in claimed.items():
        for job_id in got:
            row = store.get(job_id)
            assert row is not None and row.worker == name and row.attempts == 1


# cancellation in the indexer itself ----------------------------------------------------------


def test_should_stop_ends_a_run_at_a_chunk_boundary(
    tmp_path: Path, sqlite_settings: Settings, retrieval: RetrievalModel
) -> None:
    folder = tmp_path / "photos"
    write_valid_images(folder, 10, seed=21)
    chunks = 0

    def after_two_chunks() -> bool:
        nonlocal chunks
        chunks += 1
        return chunks >= 2

    indexer = Indexer(sqlite_settings, model=retrieval)
    report = indexer.run(folder, IndexOptions(should_stop=after_two_chunks))
    assert report.cancelled and report.as_dict()["cancelled"] is True
    assert report.embedded == 4 and report.missing == 0 and report.indexed_total == 4
    assert verify(sqlite_settings, indexer.catalog).ok
    rest = indexer.run(folder)
    assert not rest.cancelled and rest.embedded == 6 and rest.unchanged == 4
    assert verify(sqlite_settings, indexer.catalog).ok
    indexer.catalog.close()


# the runner -----------------------------------------------------------------------------------


class HookedModel(RetrievalModel):
    """The real model, calling `hook(n)` after its n-th image batch (to act mid-run)."""

    def __init__(self, base: RetrievalModel, hook: Callable[[int], None]) -> None:
        self.__dict__.update(base.__dict__)
        self.hook = hook
        self.batches = 0

    def embed_images(self, images, *, return_vision_tokens=False):  # type: ignore[no-untyped-def]
        result = super().embed_images(images, return_vision_tokens=return_vision_tokens)
        self.batches += 1
        self.hook(self.batches)
        return result


@pytest.fixture
def runners() -> Iterator[list[JobRunner]]:
    started: list[JobRunner] = []
    yield started
    for runner in started:
        runner.stop(timeout=60)


def _runner(
    settings: Settings, model: RetrievalModel, runners: list[JobRunner], catalog: Catalog | None = None
) -> JobRunner:
    runner = JobRunner(settings, model=model, catalog=catalog, poll_seconds=0.2, progress_interval=0.0)
    runners.append(runner)
    return runner


def test_a_job_indexes_a_folder(
    tmp_path: Path, settings: Settings, retrieval: RetrievalModel, runners: list[JobRunner]
) -> None:
    folder = tmp_path / "photos"
    write_valid_images(folder, 5, seed=5)
    runner = _runner(settings, retrieval, runners).start()
    job = runner.store.create(str(folder))
    runner.wake()
    done = _until_finished(runner.store, job.id)
    assert done.status == "succeeded", done.error
    assert done.error is None and done.attempts == 1
    assert (done.done, done.total) == (5, 5)
    assert done.counts["embedded"] == 5 and done.counts["failed"] == 0 and not done.counts["cancelled"]
    assert done.counts["indexed_total"] == 5
    assert verify(settings, runner.catalog).ok


def test_cancelling_a_running_job(
    tmp_path: Path, sqlite_settings: Settings, retrieval: RetrievalModel, runners: list[JobRunner]
) -> None:
    folder = tmp_path / "photos"
    write_valid_images(folder, 20, seed=6)
    job_id: list[int] = []
    runner: JobRunner | None = None

    def cancel_during_third_chunk(batch: int) -> None:
        if batch == 3 and runner is not None:
            runner.store.request_cancel(job_id[0])

    runner = _runner(sqlite_settings, HookedModel(retrieval, cancel_during_third_chunk), runners)
    job_id.append(runner.store.create(str(folder)).id)
    runner.start()
    done = _until_finished(runner.store, job_id[0])
    assert done.status == "cancelled" and done.cancel_requested
    assert done.counts["cancelled"] is True
    assert done.counts["embedded"] == 6 and (done.done, done.total) == (6, 20)
    assert sum(runner.catalog.status_counts().values()) == 6
    report = verify(sqlite_settings, runner.catalog)
    assert report.ok, report.problems


def test_an_interrupted_job_is_requeued_on_start_and_completes(
    tmp_path: Path, sqlite_settings: Settings, retrieval: RetrievalModel, runners: list[JobRunner]
) -> None:
    folder = tmp_path / "photos"
    write_valid_images(folder, 3, seed=7)
    catalog = Catalog.open(sqlite_settings)
    store = JobStore(catalog)
    job = store.create(str(folder))
    _set(store, job.id, status="running", worker=None, attempts=1, done=1, total=3)  # its process died
    runner = _runner(sqlite_settings, retrieval, runners, catalog)
    runner.start()
    done = _until_finished(store, job.id)
    assert done.status == "succeeded" and done.attempts == 2
    assert done.counts["embedded"] == 3
    catalog.close()


def test_a_missing_path_fails_with_a_clear_error(
    tmp_path: Path, sqlite_settings: Settings, retrieval: RetrievalModel, runners: list[JobRunner]
) -> None:
    runner = _runner(sqlite_settings, retrieval, runners).start()
    job = runner.store.create(str(tmp_path / "nowhere"))
    runner.wake()
    done = _until_finished(runner.store, job.id)
    assert done.status == "failed"
    assert (
        done.error
        == f"{tmp_path / 'nowhere'} does not exist; give a folder of images or a .csv/.jsonl manifest."
    )
    # The runner goes on with the next job.
    folder = tmp_path / "photos"
    write_valid_images(folder, 2, seed=8)
    after = runner.store.create(str(folder))
    runner.wake()
    assert _until_finished(runner.store, after.id).status == "succeeded"


def test_a_locked_data_directory_keeps_the_job_queued(
    tmp_path: Path, sqlite_settings: Settings, retrieval: RetrievalModel, runners: list[JobRunner]
) -> None:
    folder = tmp_path / "photos"
    write_valid_images(folder, 2, seed=9)
    lock = WriterLock(sqlite_settings.data_dir, "a CLI index run")
    lock.acquire()
    runner = _runner(sqlite_settings, retrieval, runners).start()
    job = runner.store.create(str(folder))
    runner.wake()

    def waiting() -> Job | None:
        current = runner.store.get(job.id)
        return current if current is not None and current.error else None

    held = _wait(waiting, "the job to wait for the lock")
    assert held.status in ("queued", "running") and held.error and held.error.startswith("Waiting:")
    lock.release()
    done = _until_finished(runner.store, job.id)
    assert done.status == "succeeded" and done.attempts == 1 and done.error is None


def test_stopping_the_runner_puts_its_job_back_in_the_queue(
    tmp_path: Path, sqlite_settings: Settings, retrieval: RetrievalModel, runners: list[JobRunner]
) -> None:
    folder = tmp_path / "photos"
    write_valid_images(folder, 12, seed=10)
    runner: JobRunner | None = None
    stopped = threading.Event()

    def stop_during_second_chunk(batch: int) -> None:
        # stop() joins the runner's thread, so it is called from another one, as a server would.
        if batch == 2 and runner is not None:
            threading.Thread(target=lambda: (runner.stop(timeout=60), stopped.set())).start()
            while not runner.stopping:
                time.sleep(0.01)

    runner = _runner(sqlite_settings, HookedModel(retrieval, stop_during_second_chunk), runners)
    job = runner.store.create(str(folder))
    runner.start()
    assert stopped.wait(120) and not runner.running
    paused = runner.store.get(job.id)
    assert paused is not None and paused.status == "queued" and paused.attempts == 0
    assert paused.done == 4 and not paused.cancel_requested

    again = _runner(sqlite_settings, retrieval, runners).start()
    done = _until_finished(again.store, job.id)
    assert done.status == "succeeded" and done.counts["embedded"] == 8 and done.counts["unchanged"] == 4
