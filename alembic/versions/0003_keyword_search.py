"""item_search: keyword (full-text) documents of indexed items, FTS5 on SQLite, tsvector on PostgreSQL

Revision ID: 0003
Revises: 0002

The table has no ORM model (its DDL differs per database); alembic/env.py keeps autogenerate from
proposing to drop it. Documents are kept in step by blipsearch/storage/keyword.py in every catalog
write; the SQL below is a frozen copy of that module's, used once to backfill existing items.
On SQLite, FTS5's default unicode61 separators split "SKU-RED-BA" into its parts and a quoted query
term matches them as a phrase, so a SKU is findable whole and by its parts (see keyword.py).
"""

from collections.abc import Sequence

from alembic import op


revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_SQLITE_CREATE = (
    "CREATE VIRTUAL TABLE item_search USING fts5("
    "sku, title, brand, category, tags, description, caption, "
    "tokenize = 'unicode61 remove_diacritics 2')"
)
_SQLITE_BACKFILL = (
    "INSERT INTO item_search (rowid, sku, title, brand, category, tags, description, caption) "
    "SELECT i.id, coalesce(i.external_id, '') || ' ' || "
    "replace(replace(replace(replace(replace(replace(coalesce(i.external_id, ''),"
    " '-', ''), '_', ''), '.', ''), '/', ''), ':', ''), ' ', ''), "
    "i.title, i.brand, i.category, "
    "(SELECT group_concat(t.tag, ' ') FROM item_tags AS t WHERE t.item_id = i.id), "
    "i.description, i.caption "
    "FROM items AS i WHERE i.status = 'indexed'"
)


def _pg_field(column: str, weight: str) -> str:
    return (
        f"setweight(to_tsvector('simple', regexp_replace(coalesce({column}, ''), '[[:punct:]]+', ' ', 'g')),"
        f" '{weight}')"
    )


_PG_DOCUMENT = " || ".join(
    [
        _pg_field("i.external_id || ' ' || regexp_replace(i.external_id, '[-_./: ]+', '', 'g')", "A"),
        _pg_field("i.title", "A"),
        _pg_field("i.brand", "A"),
        _pg_field("i.category", "B"),
        _pg_field(
            "(SELECT string_agg(t.tag, ' ' ORDER BY t.tag) FROM item_tags AS t WHERE t.item_id = i.id)", "B"
        ),
        _pg_field("i.description", "C"),
        _pg_field("i.caption", "C"),
    ]
)
_PG_CREATE = (
    "CREATE TABLE item_search ("
    "item_id BIGINT NOT NULL, "
    "document tsvector NOT NULL, "
    "CONSTRAINT pk_item_search PRIMARY KEY (item_id), "
    "CONSTRAINT fk_item_search_item_id_items FOREIGN KEY (item_id) REFERENCES items (id) ON DELETE CASCADE)"
)
_PG_INDEX = "CREATE INDEX ix_item_search_document ON item_search USING gin (document)"
_PG_BACKFILL = (
    f"INSERT INTO item_search (item_id, document) SELECT i.id, {_PG_DOCUMENT} FROM items AS i "
    "WHERE i.status = 'indexed'"
)


def _dialect() -> str:
    # get_context works offline (`alembic upgrade --sql`) too, unlike get_bind.
    return op.get_context().dialect.name


def upgrade() -> None:
    dialect = _dialect()
    if dialect == "sqlite":
        op.execute(_SQLITE_CREATE)
        op.execute(_SQLITE_BACKFILL)
    elif dialect == "postgresql":
        op.execute(_PG_CREATE)
        op.execute(_PG_INDEX)
        op.execute(_PG_BACKFILL)
    # Other databases get no keyword documents; keyword search reports itself unavailable there.


def downgrade() -> None:
    if _dialect() in ("sqlite", "postgresql"):
        op.execute("DROP TABLE item_search")
