"""item_vectors, text_vectors: the embeddings as pgvector values, where PostgreSQL has the extension

Revision ID: 0009
Revises: 0008

The tables have no ORM model (they exist only where pgvector does); alembic/env.py keeps autogenerate
from proposing to drop them. Their rows are kept in step by blipsearch/storage/pgvector_rows.py in
every catalog write; the DDL and the blob decoding below are a frozen copy of that module's, used
once to backfill the items that existed before. On SQLite, on a PostgreSQL without pgvector, where
the role may not create the extension, and offline (`--sql`, which cannot ask the server) this does
nothing; `pgvector_rows.install_vector_tables` does the same work later, when pgvector arrives.
The HNSW indexes are not made here: they are per model and dimension, built by the vector store.
"""

import logging
from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from alembic import op


revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

_TEXT_SLOTS = 16
_BATCH = 500
_DTYPES = {"float32": "<f4", "float16": "<f2"}
_DDL = (
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


def _literal(blob: bytes | None, dtype: str | None, dim: int | None = None) -> str | None:
    if not blob:
        return None
    numpy_dtype = np.dtype(_DTYPES.get(dtype or "float32", "<f4"))
    if len(blob) % numpy_dtype.itemsize or (dim and len(blob) != dim * numpy_dtype.itemsize):
        return None
    vector = np.frombuffer(blob, dtype=numpy_dtype).astype(np.float32)
    if not np.isfinite(vector).all():
        return None
    return "[" + ",".join(["%.9g"] * len(vector)) % tuple(vector.tolist()) + "]"


def _backfill(bind: sa.Connection) -> None:
    last = -1
    while True:
        ids = [
            int(i)
            for i in bind.execute(
                sa.text("SELECT id FROM items WHERE status = 'indexed' AND id > :last ORDER BY id LIMIT :n"),
                {"last": last, "n": _BATCH},
            ).scalars()
        ]
        if not ids:
            return
        last = ids[-1]
        items = bind.execute(
            sa.text(
                "SELECT id, embedding, embedding_dtype, embedding_dim, model_fingerprint FROM items "
                "WHERE id = ANY(:ids) "
                "AND embedding IS NOT NULL AND model_fingerprint IS NOT NULL"
            ),
            {"ids": ids},
        ).all()
        rows = [(int(i), fp, literal) for i, blob, dtype, dim, fp in items if (literal := _literal(blob, dtype, dim))]
        if rows:
            ids_, fps, embeddings = zip(*rows, strict=True)
            bind.execute(
                sa.text(
                    "INSERT INTO item_vectors (item_id, model_fingerprint, embedding) "
                    "SELECT u.i, u.f, CAST(u.e AS vector) FROM unnest(CAST(:i AS bigint[]), "
                    "CAST(:f AS text[]), CAST(:e AS text[])) AS u(i, f, e) ON CONFLICT (item_id) DO NOTHING"
                ),
                {"i": list(ids_), "f": list(fps), "e": list(embeddings)},
            )
        texts = bind.execute(
            sa.text(
                "SELECT item_id, slot, embedding, embedding_dtype, model_fingerprint FROM item_texts "
                "WHERE item_id = ANY(:ids) AND embedding IS NOT NULL AND model_fingerprint IS NOT NULL"
            ),
            {"ids": ids},
        ).all()
        text_rows = [
            (int(i) * _TEXT_SLOTS + int(slot), int(i), fp, literal)
            for i, slot, blob, dtype, fp in texts
            if (literal := _literal(blob, dtype))
        ]
        if text_rows:
            vector_ids, ids_, fps, embeddings = zip(*text_rows, strict=True)
            bind.execute(
                sa.text(
                    "INSERT INTO text_vectors (vector_id, item_id, model_fingerprint, embedding) "
                    "SELECT u.v, u.i, u.f, CAST(u.e AS vector) FROM unnest(CAST(:v AS bigint[]), "
                    "CAST(:i AS bigint[]), CAST(:f AS text[]), CAST(:e AS text[])) AS u(v, i, f, e) "
                    "ON CONFLICT (vector_id) DO NOTHING"
                ),
                {"v": list(vector_ids), "i": list(ids_), "f": list(fps), "e": list(embeddings)},
            )


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql" or context.as_sql:
        return
    bind = op.get_bind()
    if not bind.execute(
        sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
    ).scalar():
        return
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    except sa.exc.DBAPIError as exc:
        log.warning(
            "pgvector extension not created, vector tables skipped: %s", str(exc.orig).splitlines()[0]
        )
        return
    for statement in _DDL:
        bind.execute(sa.text(statement))
    _backfill(bind)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TABLE IF EXISTS text_vectors")
        op.execute("DROP TABLE IF EXISTS item_vectors")
