"""pgvector rows: the catalog's embeddings as `vector` values, written in the item's own transaction.

The catalog keeps every embedding as a little-endian blob (`items.embedding`, `item_texts.embedding`),
which PostgreSQL cannot search. Where the `vector` extension is installed, two more tables hold the
same vectors in pgvector's type so that `pgvector_store.py` can search them in SQL:

* `item_vectors`: one row per indexed item with an embedding (the image side);
* `text_vectors`: one row per embedded text of an indexed item, keyed by its text-vector id
  (`item_id * TEXT_SLOTS + slot`, as in the FAISS text index).

Every catalog write re-derives the rows of the items it touched before it commits (`VectorRows.refresh`,
called beside the keyword documents' refresh), so a search through pgvector sees exactly the
committed catalog: no change log to replay, no files. The rows are written whatever the writing
process's own `vector_store` setting is, because they belong to the database: a FAISS-configured
indexer must never leave a pgvector server behind.

What a row holds mirrors the FAISS content rules (`index_content.vectors_for_items`): an item counts
when its status is 'indexed' and it has an embedding and a model fingerprint; a text counts when its
item is indexed and the text has an embedding and a fingerprint. Each row carries its own model
fingerprint, and every query filters on it, so models never mix. A vector with a NaN or infinite
value (which pgvector refuses) gets no row rather than failing the catalog write.

The columns are `vector` without a dimension, because models differ; searches cast to the model's
dimension, which is also what the per-model HNSW indexes are built on. The DDL is repeated, frozen,
in migration 0009, and `install_vector_tables` runs it again (idempotently) for a database whose
extension was installed after it migrated; `tests/test_storage_pgvector_rows.py` checks that both
give the same tables.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, Column, Connection, Engine, MetaData, String, Table, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.types import UserDefinedType

from blipsearch.errors import CatalogError
from blipsearch.storage.schema import TEXT_SLOTS
from blipsearch.storage.vector_codec import value_width

log = logging.getLogger(__name__)

VECTOR_TABLES = ("item_vectors", "text_vectors")
REFRESH_CHUNK = 500
"""Items per statement when rows are re-derived (the backfill reads this many blobs at a time)."""
NEGATIVE_RECHECK_SECONDS = 60.0
"""How long a writer trusts "no vector tables here" before looking again (the extension may be
installed while it runs); a positive answer is kept for the engine's life."""


class Vector(UserDefinedType[Any]):
    """pgvector's `vector` type, dimension left open; values travel as text literals `[1.0,2.0]`."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "vector"


# Reflection (alembic autogenerate, inspectors) then knows the column type instead of warning.
ischema_names.setdefault("vector", Vector)

vector_tables = MetaData()
item_vectors = Table(
    "item_vectors",
    vector_tables,
    Column("item_id", BigInteger, primary_key=True),
    Column("model_fingerprint", String(64), nullable=False),
    Column("embedding", Vector(), nullable=False),
)
text_vectors = Table(
    "text_vectors",
    vector_tables,
    Column("vector_id", BigInteger, primary_key=True),
    Column("item_id", BigInteger, nullable=False),
    Column("model_fingerprint", String(64), nullable=False),
    Column("embedding", Vector(), nullable=False),
)

DDL = (
    "CREATE TABLE IF NOT EXISTS item_vectors ("
    "item_id BIGINT NOT NULL, "
    "model_fingerprint VARCHAR(64) NOT NULL, "
    "embedding vector NOT NULL, "
    "CONSTRAINT pk_item_vectors PRIMARY KEY (item_id), "
    "CONSTRAINT fk_item_vectors_item_id_items FOREIGN KEY (item_id) REFERENCES items (id) ON DELETE CASCADE)",
    "CREATE INDEX IF NOT EXISTS ix_item_vectors_model_fingerprint ON item_vectors (model_fingerprint)",
    "CREATE TABLE IF NOT EXISTS text_vectors ("
    "vector_id BIGINT NOT NULL, "
    "item_id BIGINT NOT NULL, "
    "model_fingerprint VARCHAR(64) NOT NULL, "
    "embedding vector NOT NULL, "
    "CONSTRAINT pk_text_vectors PRIMARY KEY (vector_id), "
    "CONSTRAINT fk_text_vectors_item_id_items FOREIGN KEY (item_id) REFERENCES items (id) ON DELETE CASCADE)",
    "CREATE INDEX IF NOT EXISTS ix_text_vectors_item_id ON text_vectors (item_id)",
    "CREATE INDEX IF NOT EXISTS ix_text_vectors_model_fingerprint ON text_vectors (model_fingerprint)",
)
"""The tables' DDL; a frozen copy lives in alembic/versions/0009_pgvector_vectors.py."""

_IDS = bindparam("ids", type_=ARRAY(BigInteger))
_DELETE_ITEMS = text("DELETE FROM item_vectors WHERE item_id = ANY(:ids)").bindparams(_IDS)
_DELETE_TEXTS = text("DELETE FROM text_vectors WHERE item_id = ANY(:ids)").bindparams(_IDS)
_SELECT_ITEMS = text(
    "SELECT id, embedding, embedding_dtype, embedding_dim, model_fingerprint FROM items "
    "WHERE id = ANY(:ids) AND status = 'indexed' AND embedding IS NOT NULL "
    "AND model_fingerprint IS NOT NULL ORDER BY id"
).bindparams(_IDS)
_SELECT_TEXTS = text(
    "SELECT t.item_id, t.slot, t.embedding, t.embedding_dtype, t.model_fingerprint "
    "FROM item_texts AS t JOIN items AS i ON i.id = t.item_id "
    "WHERE t.item_id = ANY(:ids) AND i.status = 'indexed' AND t.embedding IS NOT NULL "
    "AND t.model_fingerprint IS NOT NULL ORDER BY t.item_id, t.slot"
).bindparams(_IDS)
# One statement per table whatever the batch size (arrays, unnested server-side), instead of a
# round trip per row. ON CONFLICT: a concurrent writer refreshing the same item (the API storing a
# caption while the indexer writes) may insert between our DELETE and INSERT; the later row wins.
_INSERT_ITEMS = text(
    "INSERT INTO item_vectors (item_id, model_fingerprint, embedding) "
    "SELECT u.item_id, u.fingerprint, CAST(u.embedding AS vector) "
    "FROM unnest(CAST(:item_ids AS bigint[]), CAST(:fingerprints AS text[]), CAST(:embeddings AS text[])) "
    "AS u(item_id, fingerprint, embedding) "
    "ON CONFLICT (item_id) DO UPDATE SET model_fingerprint = EXCLUDED.model_fingerprint, "
    "embedding = EXCLUDED.embedding"
)
_INSERT_TEXTS = text(
    "INSERT INTO text_vectors (vector_id, item_id, model_fingerprint, embedding) "
    "SELECT u.vector_id, u.item_id, u.fingerprint, CAST(u.embedding AS vector) "
    "FROM unnest(CAST(:vector_ids AS bigint[]), CAST(:item_ids AS bigint[]), CAST(:fingerprints AS text[]), "
    "CAST(:embeddings AS text[])) AS u(vector_id, item_id, fingerprint, embedding) "
    "ON CONFLICT (vector_id) DO UPDATE SET item_id = EXCLUDED.item_id, "
    "model_fingerprint = EXCLUDED.model_fingerprint, embedding = EXCLUDED.embedding"
)
_NUMPY_DTYPES = {"float32": "<f4", "float16": "<f2"}


def is_vector_table(name: str) -> bool:
    return name in VECTOR_TABLES


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic `include_object` hook: the vector tables exist only where the extension does and have
    no ORM model, so autogenerate must not propose dropping them (or their HNSW indexes)."""
    if type_ == "table":
        return not (reflected and compare_to is None and is_vector_table(name or ""))
    if type_ == "index" and reflected and compare_to is None:
        table = getattr(getattr(obj, "table", None), "name", "")
        return not is_vector_table(table)
    return True


@functools.cache
def _literal_format(dim: int) -> str:
    return "[" + ",".join(["%.9g"] * dim) + "]"


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form. Nine significant digits name a float32 uniquely, so the row reads back
    (strtof) as exactly the stored value; `%` formatting is several times faster than repr here."""
    values = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
    return _literal_format(len(values)) % tuple(values)


def parse_vector(value: str) -> np.ndarray:
    """A `vector` in its text form as float32 (pgvector prints the shortest exact decimal)."""
    body = value.strip()[1:-1]
    return np.asarray(body.split(",") if body else [], dtype=np.float32)


def _decode(blob: bytes | None, dtype: str | None, dim: int | None) -> np.ndarray | None:
    """One stored blob as float32, or None when it cannot be a pgvector row (empty, wrong length,
    NaN or infinite values): such a row is left out rather than failing the catalog write."""
    if not blob:
        return None
    numpy_dtype = np.dtype(_NUMPY_DTYPES.get(dtype or "float32", "<f4"))
    if len(blob) % numpy_dtype.itemsize or (dim and len(blob) != dim * numpy_dtype.itemsize):
        return None
    vector = np.frombuffer(blob, dtype=numpy_dtype).astype(np.float32)
    return vector if np.isfinite(vector).all() else None


def rewrite_rows(connection: Connection, item_ids: Sequence[int]) -> None:
    """Make the vector rows of these items match their catalog rows, in the caller's transaction."""
    for start in range(0, len(item_ids), REFRESH_CHUNK):
        part = [int(i) for i in item_ids[start : start + REFRESH_CHUNK]]
        connection.execute(_DELETE_ITEMS, {"ids": part})
        connection.execute(_DELETE_TEXTS, {"ids": part})
        items: dict[str, list[Any]] = {"item_ids": [], "fingerprints": [], "embeddings": []}
        for item_id, blob, dtype, dim, fingerprint in connection.execute(_SELECT_ITEMS, {"ids": part}):
            vector = _decode(blob, dtype, dim)
            if vector is not None:
                items["item_ids"].append(int(item_id))
                items["fingerprints"].append(str(fingerprint))
                items["embeddings"].append(vector_literal(vector))
        texts: dict[str, list[Any]] = {"vector_ids": [], "item_ids": [], "fingerprints": [], "embeddings": []}
        for item_id, slot, blob, dtype, fingerprint in connection.execute(_SELECT_TEXTS, {"ids": part}):
            vector = _decode(blob, dtype, len(blob or b"") // value_width(dtype))
            if vector is not None:
                texts["vector_ids"].append(int(item_id) * TEXT_SLOTS + int(slot))
                texts["item_ids"].append(int(item_id))
                texts["fingerprints"].append(str(fingerprint))
                texts["embeddings"].append(vector_literal(vector))
        if items["item_ids"]:
            connection.execute(_INSERT_ITEMS, items)
        if texts["vector_ids"]:
            connection.execute(_INSERT_TEXTS, texts)


def store_error(engine: Engine, action: str, exc: SQLAlchemyError) -> CatalogError:
    """One `CatalogError` naming the database (password hidden), never SQLAlchemy's own text."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    where = engine.url.render_as_string(hide_password=True)
    return CatalogError(f"Could not {action} the pgvector store at {where}: {reason}.")


def tables_present(connection: Connection) -> bool:
    """Both vector tables exist (which implies the extension does): one catalog lookup."""
    row = connection.execute(
        text("SELECT to_regclass('item_vectors') IS NOT NULL AND to_regclass('text_vectors') IS NOT NULL")
    ).scalar()
    return bool(row)


def extension_available(connection: Connection) -> bool:
    """The server ships pgvector (installed in this database or not)."""
    return bool(
        connection.execute(
            text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
        ).scalar()
    )


def _indexed_item_ids(connection: Connection, batch: int) -> Iterator[list[int]]:
    last = -1
    while True:
        ids = [
            int(i)
            for i in connection.execute(
                text("SELECT id FROM items WHERE status = 'indexed' AND id > :last ORDER BY id LIMIT :n"),
                {"last": last, "n": batch},
            ).scalars()
        ]
        if not ids:
            return
        yield ids
        last = ids[-1]


def backfill(connection: Connection, *, commit_chunks: bool = False) -> int:
    """Re-derive every indexed item's rows (chunked, so memory stays flat); returns the items read.

    Rows of items that are no longer indexed are removed first, so this also repairs drift.
    `commit_chunks` commits after each chunk (a rebuild of millions of rows then holds no long
    transaction); that is safe beside live writers, since each chunk re-reads the items as committed
    and a writer that changes one of them re-derives its rows in its own transaction, after ours."""
    connection.execute(
        text(
            "DELETE FROM item_vectors AS v WHERE NOT EXISTS (SELECT 1 FROM items AS i "
            "WHERE i.id = v.item_id AND i.status = 'indexed')"
        )
    )
    connection.execute(
        text(
            "DELETE FROM text_vectors AS v WHERE NOT EXISTS (SELECT 1 FROM items AS i "
            "WHERE i.id = v.item_id AND i.status = 'indexed')"
        )
    )
    if commit_chunks:
        connection.commit()
    total = 0
    for ids in _indexed_item_ids(connection, REFRESH_CHUNK):
        rewrite_rows(connection, ids)
        if commit_chunks:
            connection.commit()
        total += len(ids)
    return total


def install_vector_tables(connection: Connection) -> bool:
    """Create the extension and the vector tables where the server has pgvector, and fill them.

    Idempotent: safe on a database that has them already (rows are re-derived, which also repairs
    them). Returns False, changing nothing, on SQLite, on a PostgreSQL without pgvector, or where the
    role may not create the extension (a savepoint keeps the caller's transaction usable). Migration
    0009 does the same once; run this (`blipsearch db` wiring) when pgvector arrives later.
    """
    if connection.dialect.name != "postgresql" or not extension_available(connection):
        return False
    try:
        with connection.begin_nested():
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        log.warning("pgvector extension not created; vectors stay out of SQL", extra={"reason": reason})
        return False
    for statement in DDL:
        connection.execute(text(statement))
    items = backfill(connection)
    log.info("pgvector tables installed", extra={"items": items})
    return True


class VectorRows:
    """Keeps the vector rows in step with the catalog; a no-op where the tables do not exist."""

    def __init__(self, dialect: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.dialect = dialect
        self._clock = clock
        self._present = False
        self._checked_at: float | None = None

    def active(self, connection: Connection) -> bool:
        """Whether this database has the vector tables; looked up once, a negative answer again after
        `NEGATIVE_RECHECK_SECONDS`."""
        if self.dialect != "postgresql":
            return False
        if self._present:
            return True
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= NEGATIVE_RECHECK_SECONDS:
            self._present = tables_present(connection)
            self._checked_at = now
        return self._present

    def refresh(self, session: Session, item_ids: Sequence[int]) -> None:
        """Re-derive the rows of these items from the catalog rows as this transaction sees them."""
        if self.dialect != "postgresql":
            return
        ids = sorted({int(i) for i in item_ids})
        if not ids:
            return
        connection = session.connection()
        if not self.active(connection):
            return
        session.flush()
        rewrite_rows(connection, ids)
