"""Ingest jobs in SQL: requested by the API, run by a `JobRunner`, and still there after a restart.

State changes are single guarded UPDATEs (`... WHERE status = 'queued'`, then a rowcount check),
never read-modify-write, so two runners sharing one catalog (two API processes, or an API and a
worker) can race for the same job and exactly one wins, on SQLite and PostgreSQL alike.

Callers get frozen `Job` snapshots, not ORM objects: they outlive the session that read them and
turn into JSON with `as_dict()`.
"""

from __future__ import annotations

import builtins
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, case, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from blipsearch.errors import CatalogError, InvalidInputError
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import session_factory
from blipsearch.storage.schema import IngestJob, JobStatus, utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Starts a job gets before an interrupted run (a crash, a kill) is no longer retried."""

FINISHED = frozenset({JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value})
INDEX_KINDS = ("auto", "flat", "hnsw", "ivf", "ivfpq")
_BOOL_OPTIONS = ("prune", "captions", "retry_failed", "follow_symlinks", "include_hidden")

PROCESS_WORKER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
"""This process as a job's `worker`. The random token tells a restarted container, whose server
is pid 1 again on the same host name, from the process that claimed a job before the restart."""


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for DateTime(timezone=True); every stored time is UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


@dataclass(frozen=True)
class Job:
    """A snapshot of one ingest job."""

    id: int
    path: str
    status: str
    options: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False
    done: int = 0
    total: int = 0
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 0
    worker: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def of(cls, row: IngestJob) -> Job:
        return cls(
            id=row.id,
            path=row.path,
            status=row.status,
            options=dict(row.options or {}),
            cancel_requested=bool(row.cancel_requested),
            done=row.done,
            total=row.total,
            counts=dict(row.counts or {}),
            error=row.error,
            attempts=row.attempts,
            worker=row.worker,
            created_at=_aware(row.created_at),
            started_at=_aware(row.started_at),
            finished_at=_aware(row.finished_at),
            updated_at=_aware(row.updated_at),
        )

    def as_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "id": self.id,
            "path": self.path,
            "status": self.status,
            "options": dict(self.options),
            "cancel_requested": self.cancel_requested,
            "done": self.done,
            "total": self.total,
            "counts": dict(self.counts),
            "error": self.error,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "updated_at": iso(self.updated_at),
        }


def normalize_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options a job may carry, checked before they are stored rather than when the job runs."""
    given = dict(options or {})
    unknown = sorted(set(given) - {*_BOOL_OPTIONS, "index_kind"})
    if unknown:
        raise InvalidInputError(f"Unknown ingest job option(s): {', '.join(unknown)}.")
    normalized: dict[str, Any] = {name: bool(given.get(name, False)) for name in _BOOL_OPTIONS}
    kind = given.get("index_kind")
    if kind is not None and kind not in INDEX_KINDS:
        raise InvalidInputError(f"index_kind must be one of {', '.join(INDEX_KINDS)}, not {kind!r}.")
    normalized["index_kind"] = kind
    return normalized


def worker_alive(worker: str | None) -> bool:
    """Whether the process that claimed a job may still be running it.

    Only processes on this host can be checked; a job claimed on another host is presumed alive
    (its runner requeues it itself when it restarts there).
    """
    if not worker:
        return False
    host, _, rest = worker.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname():
        return True
    if worker == PROCESS_WORKER:
        return True
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # same pid, other token: an earlier incarnation (a restarted container)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class JobStore:
    """Typed access to `ingest_jobs`; every method is one short transaction."""

    def __init__(self, catalog_or_engine: Catalog | Engine) -> None:
        self.engine = (
            catalog_or_engine.engine if isinstance(catalog_or_engine, Catalog) else catalog_or_engine
        )
        self.sessions = session_factory(self.engine)

    def _fail(self, action: str, exc: SQLAlchemyError) -> CatalogError:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        where = self.engine.url.render_as_string(hide_password=True)
        return CatalogError(f"Could not {action} the ingest jobs in {where}: {reason}.")

    def _read(self, job_id: int, session: Session) -> Job | None:
        row = session.get(IngestJob, job_id, populate_existing=True)
        return Job.of(row) if row is not None else None

    # reads ------------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        try:
            with self.sessions() as session:
                return self._read(job_id, session)
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None

    def list(self, limit: int = 50) -> builtins.list[Job]:
        """Newest first."""
        try:
            with self.sessions() as session:
                query = select(IngestJob).order_by(IngestJob.id.desc()).limit(max(1, limit))
                return [Job.of(row) for row in session.scalars(query)]
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None

    def cancel_requested(self, job_id: int) -> bool:
        """Cheap enough to ask between every chunk of a run."""
        try:
            with self.sessions() as session:
                query = select(IngestJob.cancel_requested).where(IngestJob.id == job_id)
                return bool(session.scalar(query))
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None

    # writes -----------------------------------------------------------------------------------

    def create(self, path: str, options: Mapping[str, Any] | None = None) -> Job:
        row = IngestJob(
            path=path,
            options=normalize_options(options),
            status=JobStatus.QUEUED.value,
            cancel_requested=False,
            done=0,
            total=0,
            attempts=0,
        )
        try:
            with self.sessions() as session:
                session.add(row)
                session.commit()
                return Job.of(row)
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None

    def _update(self, job_id: int, *where: Any, **values: Any) -> Job | None:
        """One guarded UPDATE; the job afterwards if it matched, None if it did not."""
        values.setdefault("updated_at", utcnow())
        try:
            with self.sessions() as session:
                statement = update(IngestJob).where(IngestJob.id == job_id, *where).values(**values)
                matched = session.execute(statement.execution_options(synchronize_session=False))
                session.commit()
                if matched.rowcount != 1:  # type: ignore[attr-defined]
                    return None
                return self._read(job_id, session)
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None

    def claim_next(self, worker: str = PROCESS_WORKER) -> Job | None:
        """Move the oldest queued job to running for `worker`; None when nothing is queued.

        The UPDATE only matches a row still queued, so of two racing runners exactly one gets a
        rowcount of 1; the other tries the next candidate.
        """
        for _ in range(100):
            try:
                with self.sessions() as session:
                    candidate = session.scalar(
                        select(IngestJob.id)
                        .where(IngestJob.status == JobStatus.QUEUED.value)
                        .order_by(IngestJob.id)
                        .limit(1)
                    )
            except SQLAlchemyError as exc:
                raise self._fail("read", exc) from None
            if candidate is None:
                return None
            now = utcnow()
            claimed = self._update(
                candidate,
                IngestJob.status == JobStatus.QUEUED.value,
                status=JobStatus.RUNNING.value,
                worker=worker,
                attempts=IngestJob.attempts + 1,
                started_at=now,
                updated_at=now,
                error=None,
            )
            if claimed is not None:
                return claimed
        return None

    def update_progress(
        self, job_id: int, done: int, total: int, counts: Mapping[str, Any] | None = None
    ) -> Job | None:
        values: dict[str, Any] = {"done": done, "total": total}
        if counts is not None:
            values["counts"] = dict(counts)
        return self._update(job_id, IngestJob.status == JobStatus.RUNNING.value, **values)

    def finish(
        self,
        job_id: int,
        status: JobStatus | str,
        counts: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Job | None:
        """End a running job; None if it was not running (already finished or requeued)."""
        status = JobStatus(status)
        if status.value not in FINISHED:
            raise ValueError(f"{status.value} is not a final job status")
        values: dict[str, Any] = {"status": status.value, "error": error, "finished_at": utcnow()}
        if counts is not None:
            values["counts"] = dict(counts)
        return self._update(job_id, IngestJob.status == JobStatus.RUNNING.value, **values)

    def release(self, job_id: int, reason: str | None = None) -> Job | None:
        """Put a running job back in the queue without counting the attempt.

        For runs that stopped for reasons of their own runner (shutdown, another writer holding
        the data directory), not of the job: the next start resumes it, incrementally. A job
        whose cancellation was asked meanwhile ends cancelled instead, in the same statement, so
        no request that lands in between is lost.
        """
        cancel = IngestJob.cancel_requested.is_(True)
        return self._update(
            job_id,
            IngestJob.status == JobStatus.RUNNING.value,
            status=case((cancel, JobStatus.CANCELLED.value), else_=JobStatus.QUEUED.value),
            finished_at=case((cancel, utcnow()), else_=None),
            worker=None,
            attempts=IngestJob.attempts - 1,
            error=case((cancel, "Cancelled on request."), else_=reason),
        )

    def request_cancel(self, job_id: int) -> Job | None:
        """Cancel a queued job at once, or ask its runner to stop a running one.

        Returns the job afterwards (a finished job unchanged), or None if there is no such job.
        """
        for _ in range(10):  # a runner may move the job between queued and running meanwhile
            cancelled = self._update(
                job_id,
                IngestJob.status == JobStatus.QUEUED.value,
                status=JobStatus.CANCELLED.value,
                cancel_requested=True,
                finished_at=utcnow(),
            )
            if cancelled is not None:
                return cancelled
            asked = self._update(job_id, IngestJob.status == JobStatus.RUNNING.value, cancel_requested=True)
            if asked is not None:
                return asked
            job = self.get(job_id)
            if job is None or job.finished:
                return job
        return self.get(job_id)

    def requeue_interrupted(
        self, is_alive: Callable[[str | None], bool] = worker_alive
    ) -> builtins.list[Job]:
        """Jobs left running by a dead process: back to queued, or failed after MAX_ATTEMPTS starts.

        A job that was asked to cancel ends cancelled instead. Returns the jobs changed.
        """
        try:
            with self.sessions() as session:
                running = session.execute(
                    select(IngestJob.id, IngestJob.worker, IngestJob.attempts, IngestJob.cancel_requested)
                    .where(IngestJob.status == JobStatus.RUNNING.value)
                    .order_by(IngestJob.id)
                ).all()
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        changed: builtins.list[Job] = []
        for job_id, worker, attempts, cancel in running:
            if is_alive(worker):
                continue
            # Guarded on the worker too: if another runner requeued and reclaimed the job
            # meanwhile, its new run is left alone.
            guard = (
                IngestJob.status == JobStatus.RUNNING.value,
                IngestJob.worker.is_(None) if worker is None else IngestJob.worker == worker,
            )
            if cancel:
                job = self._update(
                    job_id,
                    *guard,
                    status=JobStatus.CANCELLED.value,
                    finished_at=utcnow(),
                    error="The server stopped while the job ran; it was cancelled as requested.",
                )
            elif attempts >= MAX_ATTEMPTS:
                job = self._update(
                    job_id,
                    *guard,
                    status=JobStatus.FAILED.value,
                    finished_at=utcnow(),
                    error=(
                        f"The job was interrupted {attempts} times (the server stopped or crashed while "
                        "it ran) and is not retried again; check the server log, then start a new job."
                    ),
                )
            else:
                job = self._update(job_id, *guard, status=JobStatus.QUEUED.value, worker=None)
            if job is not None:
                log.warning(
                    "ingest job interrupted",
                    extra={"job": job_id, "worker": worker, "attempts": attempts, "now": job.status},
                )
                changed.append(job)
        return changed
