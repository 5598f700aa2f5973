"""The invariant of a pgvector catalog that every crash test checks: vector rows equal the catalog's."""

from __future__ import annotations

from sqlalchemy import Engine, text


def assert_vector_rows_match(engine: Engine) -> None:
    """Exactly the catalog's indexed items and their embedded texts have pgvector rows."""
    with engine.connect() as connection:
        indexed = set(
            connection.execute(
                text("SELECT id FROM items WHERE status = 'indexed' AND embedding IS NOT NULL")
            ).scalars()
        )
        vectors = set(connection.execute(text("SELECT item_id FROM item_vectors")).scalars())
        texts = set(
            connection.execute(
                text(
                    "SELECT item_id * 16 + slot FROM item_texts t JOIN items i ON i.id = t.item_id "
                    "WHERE i.status = 'indexed' AND t.embedding IS NOT NULL"
                )
            ).scalars()
        )
        text_vectors = set(connection.execute(text("SELECT vector_id FROM text_vectors")).scalars())
    assert vectors == indexed, {"no_vector": sorted(indexed - vectors), "stray": sorted(vectors - indexed)}
    assert text_vectors == texts
