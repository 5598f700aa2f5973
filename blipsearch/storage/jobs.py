"""Ingest jobs in SQL: requested by the API, run by a `JobRunner`, and still there after a restart.

State changes are single guarded UPDATEs (`... WHERE status = 'queued'`, then a rowcount check),
never read-modify-write, so two runners sharing one catalog (two API processes, or an API and a
worker) can race for the same job and exactly one wins, on SQLite and PostgreSQL alike.

A running job is held by a lease, not by the identity of its process: the runner renews
`lease_expires_at` while it works, and once the lease has passed any runner, on any host, may take
the job over. A host name or pid says nothing after a container restart (a new host name, a
reused pid); an expired lease does. Time comes from the store's clock, so tests move it by hand.

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
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from blipsearch.errors import CatalogError, InvalidInputError
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import session_factory
from blipsearch.storage.schema import IngestJob, JobStatus, utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Starts a job gets before an interrupted run (a crash, a kill) is no longer retried."""

DEFAULT_LEASE_SECONDS = 60.0

FINISHED = frozenset({JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value})
INDEX_KINDS = ("auto", "flat", "hnsw", "ivf", "ivfpq")
_BOOL_OPTIONS = ("prune", "captions", "retry_failed", "follow_symlinks", "include_hidden")

PROCESS_WORKER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
"""This process as a job's `worker`: who holds a lease, for the log and for guarding its renewals.
Never used to judge whether that process is alive; the lease's expiry does that."""


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
    lease_expires_at: datetime | None = None

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
            lease_expires_at=_aware(row.lease_expires_at),
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
            "lease_expires_at": iso(self.lease_expires_at),
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


class JobStore:
    """Typed access to `ingest_jobs`; every method is one short transaction."""

    def __init__(
        self,
        catalog_or_engine: Catalog | Engine,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = (
            catalog_or_engine.engine if isinstance(catalog_or_engine, Catalog) else catalog_or_engine
        )
        self.sessions = session_factory(self.engine)
        self.lease = timedelta(seconds=lease_seconds)
        self.clock = clock

    def _lease_end(self) -> datetime:
        return self.clock() + self.lease

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

    def unfinished_count(self) -> int:
        """Jobs queued or running: what a new job would wait behind."""
        try:
            with self.sessions() as session:
                query = select(func.count()).where(IngestJob.status.not_in(FINISHED))
                return int(session.scalar(query.select_from(IngestJob)) or 0)
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
        values.setdefault("updated_at", self.clock())
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
        """Move the oldest queued job to running for `worker`, leased; None when nothing is queued.

        Jobs whose lease has expired are put back in the queue first, so a job abandoned by a
        dead runner anywhere is taken over here. The UPDATE only matches a row still queued, so
        of two racing runners exactly one gets a rowcount of 1; the other tries the next candidate.
        """
        self.expire_leases()
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
            now = self.clock()
            claimed = self._update(
                candidate,
                IngestJob.status == JobStatus.QUEUED.value,
                status=JobStatus.RUNNING.value,
                worker=worker,
                lease_expires_at=now + self.lease,
                attempts=IngestJob.attempts + 1,
                started_at=now,
                updated_at=now,
                error=None,
            )
            if claimed is not None:
                return claimed
        return None

    def _held(self, worker: str | None) -> tuple[Any, ...]:
        """The guard for a running job's own runner: with `worker`, only while it still holds it."""
        running = IngestJob.status == JobStatus.RUNNING.value
        return (running,) if worker is None else (running, IngestJob.worker == worker)

    def renew(self, job_id: int, worker: str) -> Job | None:
        """Extend `worker`'s lease; None if the job is no longer its own (finished or taken over)."""
        return self._update(job_id, *self._held(worker), lease_expires_at=self._lease_end())

    def update_progress(
        self,
        job_id: int,
        done: int,
        total: int,
        counts: Mapping[str, Any] | None = None,
        *,
        worker: str | None = None,
    ) -> Job | None:
        """Record progress, renewing the lease too: a runner making progress is alive."""
        values: dict[str, Any] = {"done": done, "total": total, "lease_expires_at": self._lease_end()}
        if counts is not None:
            values["counts"] = dict(counts)
        return self._update(job_id, *self._held(worker), **values)

    def finish(
        self,
        job_id: int,
        status: JobStatus | str,
        counts: Mapping[str, Any] | None = None,
        error: str | None = None,
        *,
        worker: str | None = None,
    ) -> Job | None:
        """End a running job; None if it was not running (already finished, requeued, taken over)."""
        status = JobStatus(status)
        if status.value not in FINISHED:
            raise ValueError(f"{status.value} is not a final job status")
        values: dict[str, Any] = {
            "status": status.value,
            "error": error,
            "finished_at": self.clock(),
            "lease_expires_at": None,
        }
        if counts is not None:
            values["counts"] = dict(counts)
        return self._update(job_id, *self._held(worker), **values)

    def release(self, job_id: int, reason: str | None = None, *, worker: str | None = None) -> Job | None:
        """Put a running job back in the queue without counting the attempt.

        For runs that stopped for reasons of their own runner (shutdown, another writer holding
        the data directory), not of the job: the next start resumes it, incrementally. A job
        whose cancellation was asked meanwhile ends cancelled instead, in the same statement, so
        no request that lands in between is lost.
        """
        cancel = IngestJob.cancel_requested.is_(True)
        return self._update(
            job_id,
            *self._held(worker),
            status=case((cancel, JobStatus.CANCELLED.value), else_=JobStatus.QUEUED.value),
            finished_at=case((cancel, self.clock()), else_=None),
            worker=None,
            lease_expires_at=None,
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
                finished_at=self.clock(),
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

    def expire_leases(self) -> builtins.list[Job]:
        """Running jobs whose lease has passed: back to queued, or failed after MAX_ATTEMPTS starts.

        Whoever held them died, hung or lost the catalog for longer than a lease. A job that was
        asked to cancel ends cancelled instead. Returns the jobs changed.
        """
        now = self.clock()
        expired = or_(IngestJob.lease_expires_at.is_(None), IngestJob.lease_expires_at < now)
        try:
            with self.sessions() as session:
                running = session.execute(
                    select(IngestJob.id, IngestJob.worker, IngestJob.attempts, IngestJob.cancel_requested)
                    .where(IngestJob.status == JobStatus.RUNNING.value, expired)
                    .order_by(IngestJob.id)
                ).all()
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        changed: builtins.list[Job] = []
        for job_id, worker, attempts, cancel in running:
            # Guarded on the expiry and the holder again: a renewal that landed since the read, or
            # another runner that took the job over first, leaves it alone (exactly one winner).
            guard = (
                IngestJob.status == JobStatus.RUNNING.value,
                expired,
                IngestJob.worker.is_(None) if worker is None else IngestJob.worker == worker,
            )
            if cancel:
                job = self._update(
                    job_id,
                    *guard,
                    status=JobStatus.CANCELLED.value,
                    finished_at=now,
                    lease_expires_at=None,
                    error="Its runner stopped while the job ran; it was cancelled as requested.",
                )
            elif attempts >= MAX_ATTEMPTS:
                job = self._update(
                    job_id,
                    *guard,
                    status=JobStatus.FAILED.value,
                    finished_at=now,
                    lease_expires_at=None,
                    error=(
                        f"The job was interrupted {attempts} times (its runner stopped, crashed or hung "
                        "while it ran) and is not retried again; check the server log, then start a new job."
                    ),
                )
            else:
                job = self._update(
                    job_id, *guard, status=JobStatus.QUEUED.value, worker=None, lease_expires_at=None
                )
            if job is not None:
                log.warning(
                    "ingest job lease expired",
                    extra={"job": job_id, "worker": worker, "attempts": attempts, "now": job.status},
                )
                changed.append(job)
        return changed
