"""Reads from a PostgreSQL hot standby (`database_read_url`) that never miss an acknowledged write.

A standby replays the primary's write-ahead log a little late, so a search right after an upload
could miss it. Every write is named by a position in that log (an LSN): after a write commits, the
primary's current insert LSN covers it. That position, as text, is the *consistency token*
("0/3018AA8"). A read that must see some writes carries their token; the standby serves it once
`pg_last_wal_replay_lsn()` has reached the token, and the read waits for that at most
`read_replica_wait_seconds` before it reads from the primary instead. A standby that cannot be
reached, or is no standby at all, sends reads to the primary too. A read can be late only where
nothing asked it to be current.

Two sources of tokens:
- this process's own writes: every commit through a catalog on the same primary is counted, and the
  next read first asks the primary for its LSN, so a server always sees what it wrote;
- other servers' writes: the API hands the token of a write back in the `Blipsearch-Consistency`
  header and accepts it on reads (`replica_reads(token)`), so upload through one server and search
  through another stays consistent.

Only reads inside `replica_reads()` may go to the standby at all. The same catalog reads (an item by
id) also serve writers deciding what to change, and those must read the primary: so the
standby is opt-in per request, and code that never asks reads the primary as before.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from blipsearch.errors import InvalidInputError
from blipsearch.storage.database import create_catalog_engine

log = logging.getLogger(__name__)

CONSISTENCY_HEADER = "Blipsearch-Consistency"
"""The HTTP header a write's token comes back in, and a read's token goes out in."""

RETRY_AFTER_SECONDS = 10.0
"""After a standby was down or too far behind, how long reads go straight to the primary."""

POLL_SECONDS = 0.01

_TOKEN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_token(token: str) -> int:
    """The LSN a token names; an `InvalidInputError` (400 in the API) that says what a token looks like."""
    found = _TOKEN.match(token.strip())
    if found is None:
        raise InvalidInputError(
            f"{CONSISTENCY_HEADER} must be a token from an earlier response, such as 0/3018AA8."
        )
    return (int(found.group(1), 16) << 32) | int(found.group(2), 16)


def format_token(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class _Scope:
    lsn: int | None


_scope: ContextVar[_Scope | None] = ContextVar("blipsearch_replica_reads", default=None)


@contextmanager
def replica_reads(token: str | None = None) -> Iterator[None]:
    """Let catalog reads in this context use the standby, seeing at least the writes `token` names.

    A malformed token raises `InvalidInputError` before anything is read (the API answers 400).
    """
    reset = _scope.set(_Scope(None if token is None else parse_token(token)))
    try:
        yield
    finally:
        _scope.reset(reset)


class _ProcessWrites:
    """Commits this process made on one primary, and the LSN known to cover them.

    A commit only bumps a counter (it happens after the commit, so no SQL may run there); the
    LSN is asked for when a read or a response needs it. Reading the counter before asking makes a
    commit that lands during the question count as not yet covered.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.commits = 0
        self.covered = 0
        self.lsn: int | None = None

    def committed(self) -> None:
        with self._lock:
            self.commits += 1

    def token_lsn(self, sessions: sessionmaker[Session]) -> int | None:
        seen = self.commits
        if seen == self.covered:
            return self.lsn
        with sessions() as session:
            lsn, block, segment = session.execute(_INSERT_POSITION).one()
        current = end_of_inserted(parse_token(str(lsn)), int(block), int(segment))
        with self._lock:
            self.lsn = current if self.lsn is None else max(self.lsn, current)
            self.covered = max(self.covered, seen)
            return self.lsn


_INSERT_POSITION = text(
    "SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::int,"
    " pg_size_bytes(current_setting('wal_segment_size'))"
)
SHORT_PAGE_HEADER = 24
LONG_PAGE_HEADER = 40
"""PostgreSQL's WAL page header sizes (`SizeOfXLogShortPHD`, `SizeOfXLogLongPHD`; the long one
starts each segment)."""


def end_of_inserted(insert_lsn: int, block_size: int, segment_size: int) -> int:
    """The end of the last WAL record written, from the primary's insert position.

    The insert LSN covers every commit made before it was read (also under `synchronous_commit =
    off`, where the write LSN can lag a commit). But when the last record ended exactly at a page
    boundary, the insert position points past the next page's header, while a standby's replay LSN
    stops at the boundary: a read would wait for unrelated WAL. Nothing is ever inserted inside a
    header, so an insert position right after one means the boundary itself.
    """
    if insert_lsn % segment_size == LONG_PAGE_HEADER:
        return insert_lsn - LONG_PAGE_HEADER
    if insert_lsn % block_size == SHORT_PAGE_HEADER and insert_lsn % segment_size != SHORT_PAGE_HEADER:
        return insert_lsn - SHORT_PAGE_HEADER
    return insert_lsn


_writes_lock = threading.Lock()
_writes: dict[str, _ProcessWrites] = {}


def _process_writes(engine: Engine) -> _ProcessWrites:
    """One record per primary per process, whichever catalog object wrote."""
    key = engine.url.render_as_string(hide_password=False)
    with _writes_lock:
        return _writes.setdefault(key, _ProcessWrites())


def open_standby_engine(url: str, wait_seconds: float) -> Engine:
    """An engine for the standby that gives up connecting within about the wait budget.

    libpq counts `connect_timeout` in whole seconds and treats less than 2 as 2.
    """
    return create_catalog_engine(url, connect_args={"connect_timeout": max(2, math.ceil(wait_seconds))})


class ReadRouter:
    """Sends a catalog read to the standby or the primary; see the module's docstring."""

    def __init__(
        self,
        primary: Engine,
        standby: Engine | None = None,
        *,
        wait_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        retry_after_seconds: float = RETRY_AFTER_SECONDS,
    ) -> None:
        self.primary_sessions = sessionmaker(bind=primary, expire_on_commit=False)
        self.standby = standby
        self.standby_sessions = (
            None if standby is None else sessionmaker(bind=standby, expire_on_commit=False)
        )
        self.wait_seconds = wait_seconds
        self.clock, self.sleep = clock, sleep
        self.retry_after_seconds = retry_after_seconds
        self._down_until = -math.inf
        self._lagging_until = -math.inf
        self._warned: dict[str, float] = {}
        self._writes = _process_writes(primary) if primary.dialect.name == "postgresql" else None

    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Count the commits of `sessions` (the catalog's writers) as this process's writes."""
        writes = self._writes
        if writes is not None:
            event.listen(sessions, "after_commit", lambda _session: writes.committed())

    def token(self) -> str | None:
        """The token of every write this process has committed on the primary (None: none, or SQLite).

        The API puts it in the `Blipsearch-Consistency` header of a write's response.
        """
        if self._writes is None:
            return None
        lsn = self._writes.token_lsn(self.primary_sessions)
        return None if lsn is None else format_token(lsn)

    def close(self) -> None:
        if self.standby is not None:
            self.standby.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for one read: on the standby when allowed and current enough, else the primary."""
        standby = self._standby_session()
        if standby is None:
            with self.primary_sessions() as session:
                yield session
            return
        try:
            with standby:
                yield standby
        except DBAPIError as exc:
            if exc.connection_invalidated:
                self._mark_down(exc)
            raise

    def _standby_session(self) -> Session | None:
        scope = _scope.get()
        if self.standby_sessions is None or scope is None or self.clock() < self._down_until:
            return None
        wanted = [lsn for lsn in (scope.lsn, self._own_lsn()) if lsn is not None]
        session = self.standby_sessions()
        try:
            current = self._caught_up(session, max(wanted) if wanted else None)
        except SQLAlchemyError as exc:
            session.close()
            self._mark_down(exc)
            return None
        if not current:
            session.close()
            return None
        return session

    def _own_lsn(self) -> int | None:
        return None if self._writes is None else self._writes.token_lsn(self.primary_sessions)

    def _caught_up(self, session: Session, required: int | None) -> bool:
        """Whether the standby has replayed `required`, polling up to the wait budget."""
        if required is None:
            session.connection()  # a standby that is down fails here, not inside the caller's read
            return True
        deadline: float | None = None
        while True:
            replayed = session.execute(text("SELECT pg_last_wal_replay_lsn()::text")).scalar()
            if replayed is None:
                self._warn("not_standby", "read replica is not in recovery; reading from the primary")
                return False
            if parse_token(str(replayed)) >= required:
                return True
            now = self.clock()
            if deadline is None:
                lagging = now < self._lagging_until
                deadline = now + (0.0 if lagging else self.wait_seconds)
            if now >= deadline:
                self._lagging_until = now + self.retry_after_seconds
                self._warn(
                    "behind",
                    "read replica behind a write this read must see; reading from the primary",
                    required=format_token(required),
                    replayed=str(replayed),
                    wait_seconds=self.wait_seconds,
                )
                return False
            self.sleep(POLL_SECONDS)

    def _mark_down(self, exc: SQLAlchemyError) -> None:
        self._down_until = self.clock() + self.retry_after_seconds
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        self._warn(
            "down",
            "read replica unreachable; reading from the primary",
            reason=reason,
            retry_after_seconds=self.retry_after_seconds,
        )

    def _warn(self, kind: str, message: str, **fields: object) -> None:
        """One warning per kind per retry period: a lagging standby under load must not flood the log."""
        now = self.clock()
        if now < self._warned.get(kind, -math.inf):
            return
        self._warned[kind] = now + self.retry_after_seconds
        where = self.standby.url.render_as_string(hide_password=True) if self.standby is not None else None
        log.warning(message, extra={"read_replica": where, **fields})
