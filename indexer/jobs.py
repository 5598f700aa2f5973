"""Runs the ingest jobs queued in SQL, one at a time, in a background thread of the API process.

The runner reuses the retrieval model the server already has loaded (a second copy would double
its memory), writes progress to SQL about once a second, and stops a run between chunks (or
while it is still listing files) when the job is cancelled or the server shuts down. While a job
runs, a heartbeat renews its lease every third of `job_lease_seconds`; a runner whose process
died stops renewing, and any runner sharing the catalog takes the job over once the lease has
passed (the indexer is incremental, so a rerun only does what is left).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from blipsearch.errors import BlipsearchError, IndexLockedError
from blipsearch.indexer.pipeline import Indexer, IndexOptions, IndexReport
from blipsearch.indexer.progress import Progress
from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.paths import IngestRoots
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.jobs import PROCESS_WORKER, Job, JobStore
from blipsearch.storage.schema import JobStatus

log = logging.getLogger(__name__)

_LIST_CAP = 20
"""Report lists (rejected manifest rows, failure examples) kept in a job's counts: the JSON stays small."""


def job_counts(report: IndexReport) -> dict[str, Any]:
    """The report as a job stores it: every count, and the first few examples of each list."""
    counts = report.as_dict()
    counts["rejected"] = len(report.rejected_rows)
    counts["rejected_rows"] = report.rejected_rows[:_LIST_CAP]
    counts["failed_examples"] = report.failed_examples[:_LIST_CAP]
    return counts


class JobProgress(Progress):
    """Progress that also goes to the job's row, at most once per `interval` seconds plus the last.

    A SQL write per chunk would be cheap on its own, but a fast GPU run advances many times a
    second, and every write contends with the indexer's own transactions.
    """

    def __init__(
        self, store: JobStore, job_id: int, *, interval: float = 1.0, worker: str | None = None
    ) -> None:
        super().__init__(enabled=False)
        self.store = store
        self.job_id = job_id
        self.worker = worker
        self.interval = interval
        self.done = self.total = 0
        self.counts: dict[str, int] = {}
        self._last_write = 0.0

    def start(self, *, total: int, description: str) -> None:
        super().start(total=total, description=description)
        self.done, self.total = 0, total
        self._write()

    def advance(self, count: int, *, embedded: int = 0, failed: int = 0) -> None:
        super().advance(count, embedded=embedded, failed=failed)
        self.done += count
        self.counts = {"embedded": embedded, "failed": failed}
        if time.monotonic() - self._last_write >= self.interval:
            self._write()

    def finish(self) -> None:
        super().finish()
        self._write()

    def _write(self) -> None:
        self._last_write = time.monotonic()
        try:
            self.store.update_progress(self.job_id, self.done, self.total, self.counts, worker=self.worker)
        except BlipsearchError as exc:  # a progress write lost is not worth failing the run for
            log.warning("could not record job progress", extra={"job": self.job_id, "reason": str(exc)})


class Heartbeat:
    """Renews a running job's lease from its own thread, so a long listing or one slow chunk
    never lets it lapse; `lost` is set when the job stopped being this runner's (taken over)."""

    def __init__(self, store: JobStore, job_id: int, worker: str, every: float) -> None:
        self.store = store
        self.job_id = job_id
        self.worker = worker
        self.every = every
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self) -> None:
        try:
            if self.store.renew(self.job_id, self.worker) is None:
                self.lost.set()
        except BlipsearchError as exc:  # the catalog may come back before the lease runs out
            log.warning("could not renew the job's lease", extra={"job": self.job_id, "reason": str(exc)})

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()


class JobRunner:
    """The background thread that runs queued ingest jobs.

    `start()` requeues the runs a dead process left behind and starts the thread; `wake()` makes
    it look for work now instead of at the next poll; `stop()` lets the current run reach a chunk
    boundary, puts its job back in the queue, and joins the thread.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        model: RetrievalModel | None = None,
        captioner: Captioner | None = None,
        catalog: Catalog | None = None,
        poll_seconds: float = 5.0,
        progress_interval: float = 1.0,
    ) -> None:
        self.settings = settings
        self._model = model
        self._captioner = captioner
        self._own_catalog = catalog is None
        self.catalog = catalog or Catalog.open(settings)
        self.store = JobStore(self.catalog, lease_seconds=settings.job_lease_seconds)
        self.poll_seconds = poll_seconds
        self.progress_interval = progress_interval
        self.worker = PROCESS_WORKER
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: int | None = None
        """The id of the job running now, if any."""

    # lifecycle ------------------------------------------------------------------------------

    def start(self) -> JobRunner:
        """Requeue runs whose lease expired (synchronously, so the queue is consistent on return)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stopping.clear()
        self.store.expire_leases()
        self._thread = threading.Thread(target=self._loop, name="ingest-jobs", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """End the loop; a running job stops at its next chunk boundary and goes back to the queue."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("ingest job runner still busy at shutdown", extra={"job": self.current})
            else:
                self._thread = None
        if self._own_catalog and self._thread is None:
            self.catalog.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            busy = False
            try:
                job = self.store.claim_next(self.worker)
                if job is not None:
                    busy = self._run(job)
            except Exception:  # never let the thread die: log, wait, try again
                log.exception("ingest job runner error")
                busy = False
            if busy:
                continue
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _run(self, job: Job) -> bool:
        """Run one claimed job to an end state; True if the runner may claim the next at once."""
        self.current = job.id
        mine = self.worker
        log.info("ingest job started", extra={"job": job.id, "path": job.path, "attempt": job.attempts})
        heartbeat = Heartbeat(self.store, job.id, mine, self.settings.job_lease_seconds / 3)
        try:
            with heartbeat:
                report = self._index(job, heartbeat)
        except IndexLockedError as exc:
            # Another writer (a CLI `blipsearch index`, another server) holds the data directory:
            # not the job's fault. It stays queued and is retried at the next poll.
            released = self.store.release(job.id, f"Waiting: {exc}", worker=mine)
            log.info("ingest job waiting for the writer lock", extra={"job": job.id, "reason": str(exc)})
            return released is not None and released.finished  # cancelled while it waited
        except BlipsearchError as exc:
            self.store.finish(job.id, JobStatus.FAILED, error=str(exc), worker=mine)
            log.warning("ingest job failed", extra={"job": job.id, "reason": str(exc)})
            return True
        except Exception as exc:
            log.exception("ingest job crashed", extra={"job": job.id})
            message = f"Internal error while indexing ({type(exc).__name__}); the server log has details."
            self.store.finish(job.id, JobStatus.FAILED, error=message, worker=mine)
            return True
        finally:
            self.current = None
        counts = job_counts(report)
        if heartbeat.lost.is_set():  # another runner holds it now; its run decides the outcome
            log.warning("ingest job taken over by another runner", extra={"job": job.id})
            return True
        if not report.cancelled:
            self.store.finish(job.id, JobStatus.SUCCEEDED, counts, worker=mine)
        elif self._cancel_requested(job.id):
            self.store.finish(job.id, JobStatus.CANCELLED, counts, "Cancelled on request.", worker=mine)
        else:  # the server is stopping: the next start resumes the job
            self.store.release(job.id, worker=mine)
            return False
        log.info("ingest job ended", extra={"job": job.id, "cancelled": report.cancelled})
        return True

    def _index(self, job: Job, heartbeat: Heartbeat) -> IndexReport:
        options = job.options
        if self._model is None:
            self._model = RetrievalModel.load(self.settings.retrieval_model, self.settings)
        if options.get("captions") and self._captioner is None:
            self._captioner = Captioner.load(self.settings.caption_model, self.settings)
        indexer = Indexer(
            self.settings,
            model=self._model,
            captioner=self._captioner,
            catalog=self.catalog,
            progress=JobProgress(self.store, job.id, interval=self.progress_interval, worker=self.worker),
        )
        return indexer.run(
            Path(job.path),
            IndexOptions(
                captions=bool(options.get("captions")),
                prune=bool(options.get("prune")),
                retry_failed=bool(options.get("retry_failed")),
                follow_symlinks=bool(options.get("follow_symlinks")),
                include_hidden=bool(options.get("include_hidden")),
                index_kind=options.get("index_kind"),
                roots=IngestRoots(self.settings.ingest_roots),
                should_stop=lambda: (
                    self._stopping.is_set() or heartbeat.lost.is_set() or self._cancel_requested(job.id)
                ),
            ),
        )

    def _cancel_requested(self, job_id: int) -> bool:
        try:
            return self.store.cancel_requested(job_id)
        except BlipsearchError as exc:  # a lost read must not end the run; the next chunk asks again
            log.warning("could not read the job's cancel flag", extra={"job": job_id, "reason": str(exc)})
            return False
