"""Which `VectorStore` backend a process uses, from the `vector_store` setting and the catalog it opens.

`auto` follows the database, not the process: pgvector when the catalog is PostgreSQL with the
extension and its vector tables, FAISS otherwise. Every server and indexer on one catalog then
agrees without being told, and a catalog on SQLite or on a PostgreSQL without pgvector keeps the
embedded behaviour it always had.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from blipsearch.errors import ConfigError
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.faiss_store import FaissStore
from blipsearch.storage.index_spec import RequestedKind
from blipsearch.storage.lock import WriterLock
from blipsearch.storage.vector_store import Backend, VectorStore


def chosen_backend(settings: Settings, catalog: Catalog) -> Backend:
    """The backend `settings.vector_store` names for this catalog; pgvector where it can't run: an error."""
    if settings.vector_store == "faiss":
        return "faiss"
    available = False  # pgvector arrives with its backend
    if settings.vector_store == "pgvector" and not available:
        raise ConfigError(
            "vector_store is pgvector, but the catalog is not a PostgreSQL database with the pgvector "
            "extension and blipsearch's vector tables; see docs/pgvector.md."
        )
    return "pgvector" if available else "faiss"


def open_vector_store(
    settings: Settings,
    catalog: Catalog,
    *,
    fingerprint: str,
    dim: int,
    writer: bool,
    requested_kind: RequestedKind | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> VectorStore:
    """The store for one model: a writer (indexing run, CapFilt) commits what it opens; a server reads."""
    chosen_backend(settings, catalog)
    return FaissStore(
        settings,
        catalog,
        fingerprint=fingerprint,
        dim=dim,
        writer=writer,
        requested_kind=requested_kind,
        clock=clock,
    )


def writer_lock(settings: Settings, catalog: Catalog, purpose: str) -> AbstractContextManager[object]:
    """The lock every writer of this store holds (indexing runs, CapFilt, rebuilds, checkpoints).

    FAISS: the data directory's file lock, since the files it guards are local. pgvector: a
    PostgreSQL advisory lock, so that writers on different machines exclude each other. Either is
    taken without waiting (`IndexLockedError`) and dies with its holder.
    """
    return WriterLock(settings.data_dir, purpose)
