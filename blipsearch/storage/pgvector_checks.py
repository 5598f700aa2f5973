"""`index status` and `index verify` for the pgvector store: the rows against the catalog.

The vector rows are derived from the catalog's embedding blobs in every write, so they can only
drift through something outside blipsearch (a manual edit, a restore of one table) or an
interrupted index build. Verify checks, per model and side, that the rows are exactly the
catalog's indexed items and texts, that a sample of them equals the blobs value for value, and
that no HNSW index was left invalid; `index rebuild` repairs all three.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from blipsearch.storage.catalog import Catalog
from blipsearch.storage.pgvector_rows import parse_vector, store_error
from blipsearch.storage.pgvector_store import (
    IDS,
    IMAGES,
    TEXTS,
    Side,
    fingerprints_in_rows,
    hnsw_indexes,
    pgvector_available,
)
from blipsearch.storage.schema import TEXT_SLOTS
from blipsearch.storage.vector_codec import decode_vectors, value_width


def pgvector_status(catalog: Catalog) -> dict[str, Any]:
    """What `index status` shows for pgvector: rows per model and side, and the HNSW indexes."""
    engine = catalog.engine
    if not pgvector_available(engine):
        return {"backend": "pgvector", "available": False}
    try:
        with engine.connect() as connection:
            counts: dict[str, dict[str, int]] = {}
            for side in (IMAGES, TEXTS):
                for fp, count in connection.execute(
                    text(f"SELECT model_fingerprint, count(*) FROM {side.table} GROUP BY model_fingerprint")
                ):
                    counts.setdefault(str(fp), {"images": 0, "texts": 0})[side.label] = int(count)
            indexes = [
                {"name": name, "fingerprint": fp, "dim": dim, "valid": valid, "bytes": size}
                for name, fp, dim, valid, size in hnsw_indexes(connection)
            ]
    except SQLAlchemyError as exc:
        raise store_error(engine, "read", exc) from None
    return {"backend": "pgvector", "available": True, "vectors": counts, "indexes": indexes}


def pgvector_verify(catalog: Catalog, *, sample: int = 50, seed: int = 0) -> list[str]:
    """Problems between the vector rows and the catalog: rows missing or extra per model and side,
    sampled rows whose values differ from the blobs, HNSW indexes left invalid. Empty: all agree."""
    engine = catalog.engine
    if not pgvector_available(engine):
        return [
            "The pgvector tables are missing from this catalog (no extension, or installed after migrating)."
        ]
    problems: list[str] = []
    rng = np.random.default_rng(seed)
    try:
        with engine.connect() as connection:
            fingerprints = fingerprints_in_rows(connection) | {
                str(fp)
                for fp in connection.execute(
                    text(
                        "SELECT DISTINCT model_fingerprint FROM items WHERE model_fingerprint IS NOT NULL "
                        "UNION SELECT DISTINCT model_fingerprint FROM item_texts "
                        "WHERE model_fingerprint IS NOT NULL"
                    )
                ).scalars()
            }
            for fp in sorted(fingerprints):
                for side, expected in ((IMAGES, catalog.indexed_ids(fp)), (TEXTS, catalog.text_ids(fp))):
                    present = np.asarray(
                        sorted(
                            int(i)
                            for i in connection.execute(
                                text(
                                    f"SELECT {side.id_column} FROM {side.table} WHERE model_fingerprint = :fp"
                                ),
                                {"fp": fp},
                            ).scalars()
                        ),
                        dtype=np.int64,
                    )
                    missing = np.setdiff1d(expected, present)
                    extra = np.setdiff1d(present, expected)
                    if len(missing) or len(extra):
                        examples = [int(i) for i in np.concatenate([missing, extra])[:5]]
                        problems.append(
                            f"pgvector {side.label} of model {fp}: {len(missing)} vectors missing, "
                            f"{len(extra)} not in the catalog (e.g. ids {examples}); "
                            "run `blipsearch index rebuild`."
                        )
                    both = np.intersect1d(expected, present)
                    if len(both):
                        picked = rng.choice(both, size=min(sample, len(both)), replace=False)
                        problems.extend(_compare_values(connection, side, [int(i) for i in picked]))
            for name, _fp, _dim, valid, _size in hnsw_indexes(connection):
                if not valid:
                    problems.append(
                        f"pgvector HNSW index {name} is invalid (an interrupted build); "
                        "run `blipsearch index rebuild`."
                    )
    except SQLAlchemyError as exc:
        raise store_error(engine, "verify", exc) from None
    return problems


def _compare_values(connection: Connection, side: Side, ids: list[int]) -> list[str]:
    stored = {
        int(i): parse_vector(str(v))
        for i, v in connection.execute(
            text(
                f"SELECT {side.id_column}, embedding::text FROM {side.table} "
                f"WHERE {side.id_column} = ANY(:ids)"
            ).bindparams(IDS),
            {"ids": ids},
        )
    }
    blobs: list[tuple[int, bytes, str | None]]
    if side is IMAGES:
        blobs = [
            (int(i), b, d)
            for i, b, d in connection.execute(
                text("SELECT id, embedding, embedding_dtype FROM items WHERE id = ANY(:ids)").bindparams(IDS),
                {"ids": ids},
            )
        ]
    else:
        wanted = set(ids)
        rows = connection.execute(
            text(
                "SELECT item_id, slot, embedding, embedding_dtype FROM item_texts WHERE item_id = ANY(:ids)"
            ).bindparams(IDS),
            {"ids": sorted({i // TEXT_SLOTS for i in ids})},
        ).all()
        blobs = [
            (int(i) * TEXT_SLOTS + int(slot), blob, dtype)
            for i, slot, blob, dtype in rows
            if int(i) * TEXT_SLOTS + int(slot) in wanted
        ]
    different = []
    for vector_id, blob, dtype in blobs:
        expected = decode_vectors([blob], str(dtype or "float32"), len(blob) // value_width(dtype))[0]
        got = stored.get(int(vector_id))
        if got is None or got.shape != expected.shape or not np.array_equal(got, expected):
            different.append(int(vector_id))
    if not different:
        return []
    return [
        f"pgvector {side.label}: {len(different)} of {len(ids)} sampled vectors differ from the catalog's "
        f"embeddings (e.g. ids {different[:5]}); run `blipsearch index rebuild`."
    ]
