"""The catalog's connection, shared by the parts that make up `Catalog` (see `catalog.py`).

Sessions are short and owned here; every part turns a database error into one `CatalogError`
that names the catalog, so a caller never sees SQLAlchemy. Writes use `sessions`; the reads a search
makes use `reading()`, which may be served by a hot standby (`read_routing.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Self

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from blipsearch.errors import CatalogError
from blipsearch.settings import Settings
from blipsearch.storage.database import create_catalog_engine, ensure_schema, session_factory
from blipsearch.storage.keyword import KeywordDocuments
from blipsearch.storage.pgvector_rows import VectorRows
from blipsearch.storage.read_routing import ReadRouter, open_standby_engine
from blipsearch.storage.schema import Change, ChangeOp
from blipsearch.storage.vector_codec import StorageDType

CHANGE_LOG_LOCK = (0x626C6970, 0x63686773)
"""pg_advisory_xact_lock(int4, int4) key ('blip', 'chgs') that orders the change log's ids by commit."""

QUERY_CHUNK = 500
"""Ids per IN (...) clause: well under SQLite's and PostgreSQL's parameter limits."""


class CatalogAccess:
    """Typed access to the catalog database; sessions are short and owned here."""

    def __init__(
        self, engine: Engine, *, embedding_storage: StorageDType = "float32", reads: ReadRouter | None = None
    ) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.reads = reads or ReadRouter(engine)
        self.reads.watch(self.sessions)
        self.embedding_storage: StorageDType = embedding_storage
        self.keyword_documents = KeywordDocuments(engine.dialect.name)
        self.vector_rows = VectorRows(engine.dialect.name)

    @classmethod
    def open(cls, settings: Settings) -> Self:
        """Connect and migrate on first use, so a fresh data directory just works."""
        engine = create_catalog_engine(settings.effective_database_url)
        ensure_schema(engine)
        if settings.database_read_url is None:
            return cls(engine, embedding_storage=settings.embedding_storage)
        standby = open_standby_engine(settings.database_read_url, settings.read_replica_wait_seconds)
        reads = ReadRouter(engine, standby, wait_seconds=settings.read_replica_wait_seconds)
        return cls(engine, embedding_storage=settings.embedding_storage, reads=reads)

    def reading(self) -> AbstractContextManager[Session]:
        """A session for a search's read: the standby inside `read_routing.replica_reads()`."""
        return self.reads.session()

    def consistency_token(self) -> str | None:
        """The token covering this process's writes, for a write's `Blipsearch-Consistency` header."""
        return self.reads.token()

    def close(self) -> None:
        self.reads.close()
        self.engine.dispose()

    @property
    def location(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def _record_changes(
        self, session: Session, item_ids: Sequence[int], op: ChangeOp = ChangeOp.UPSERT
    ) -> None:
        """What every catalog write adds in its own transaction, after its rows are flushed: the
        change log entries, the keyword documents and the pgvector rows of those items.

        On PostgreSQL change ids come from a sequence: handed out in the order writers ask, but
        visible in the order they commit. A server that caught up to id 11 while id 10 was still
        uncommitted would never apply 10. Writers (threads, `serve --workers` processes, servers)
        therefore take their ids under a transaction lock held to commit: ids commit in order.
        SQLite has one writer at a time already.
        """
        if session.get_bind().dialect.name == "postgresql":
            key = {"a": CHANGE_LOG_LOCK[0], "b": CHANGE_LOG_LOCK[1]}
            session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), key)
        session.add_all(Change(item_id=int(i), op=op.value) for i in item_ids)
        self.keyword_documents.refresh(session, item_ids)
        self.vector_rows.refresh(session, item_ids)

    def _fail(self, action: str, exc: SQLAlchemyError) -> CatalogError:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return CatalogError(f"Could not {action} the catalog at {self.location}: {reason}.")
