"""The pgvector writer lock: one writer per catalog database, wherever the writers run.

FAISS writers share a data directory and exclude each other with a file lock there; pgvector
writers (indexing runs, CapFilt, rebuilds) may run on different machines, so the lock lives in
PostgreSQL: a session-level advisory lock taken on a connection of its own and held for the lock's
lifetime. PostgreSQL releases it when that session ends, so a holder that exits, crashes or is
killed never blocks the next writer. The connection carries an application name that says who
holds the lock, which the refusal quotes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from blipsearch.errors import IndexLockedError
from blipsearch.storage.pgvector_rows import store_error

LOCK_KEY = (0x626C6970, 0x76656373)
"""pg_try_advisory_lock(int4, int4) key of the writer lock ('blip', 'vecs'); one per database."""


@contextmanager
def pgvector_writer_lock(engine: Engine, purpose: str) -> Iterator[None]:
    """The writer lock of a pgvector catalog: a session-level advisory lock on a connection of its
    own, released by PostgreSQL when that connection ends, so a killed holder, wherever it ran,
    never blocks the next writer. Raises `IndexLockedError` at once when another session holds it."""
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        name = f"blipsearch {purpose} pid {os.getpid()} on {socket.gethostname()}"[:63]
        connection.execute(text("SELECT set_config('application_name', :name, false)"), {"name": name})
        got = connection.execute(
            text("SELECT pg_try_advisory_lock(:a, :b)"), {"a": LOCK_KEY[0], "b": LOCK_KEY[1]}
        ).scalar()
        if not got:
            raise IndexLockedError(
                f"Another blipsearch writer holds the pgvector store of this catalog "
                f"({_lock_holder(connection)}); wait for it to finish or stop it."
            )
    except SQLAlchemyError as exc:
        connection.invalidate()
        connection.close()
        raise store_error(engine, "lock", exc) from None
    except BaseException:
        connection.invalidate()
        connection.close()
        raise
    try:
        yield
    finally:
        # Closing the DBAPI connection ends the session, which releases the lock (and the
        # application name never reaches a pooled connection).
        connection.invalidate()
        connection.close()


def _lock_holder(connection: Connection) -> str:
    row = connection.execute(
        text(
            "SELECT a.application_name, a.pid FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :a AND l.objid = :b "
            "AND l.objsubid = 2 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"a": LOCK_KEY[0], "b": LOCK_KEY[1]},
    ).first()
    if row is None:
        return "a session that just ended"
    return f"{row[0] or 'an unnamed session'}, PostgreSQL backend {row[1]}"
