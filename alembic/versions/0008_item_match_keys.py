"""items: SKU, title and brand in a normal form under plain indexes, for exact-match lookups

Revision ID: 0008
Revises: 0007

Exact hits (a query equal to an item's SKU, title or brand, ignoring case, whitespace and Unicode
composition) rank first. SQLite and PostgreSQL cannot compare that alike in SQL, so the normal form
is computed in Python (`blipsearch.storage.match_keys.match_key`) and stored; the ORM refreshes it
on every write, and this migration fills it for the rows that existed before. The function is
repeated here, frozen, as migrations must not follow later code; `tests/test_storage_match_keys.py`
checks that the two agree.
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MAX_KEY_CHARS = 300
_BATCH = 1000


def match_key(text: str | None) -> str | None:
    if not text:
        return None
    key = " ".join(unicodedata.normalize("NFC", text).casefold().split())
    key = unicodedata.normalize("NFC", key)
    if not key or len(key) > _MAX_KEY_CHARS:
        return None
    return key


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sku_key', sa.String(length=300), nullable=True, comment='external_id in match_key form, for exact matches'))
        batch_op.add_column(sa.Column('title_key', sa.String(length=300), nullable=True, comment='title in match_key form, for exact matches'))
        batch_op.add_column(sa.Column('brand_key', sa.String(length=300), nullable=True, comment='brand in match_key form, for exact matches'))
        batch_op.create_index(batch_op.f('ix_items_sku_key'), ['sku_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_items_title_key'), ['title_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_items_brand_key'), ['brand_key'], unique=False)
    items = sa.table(
        'items',
        sa.column('id', sa.Integer),
        sa.column('external_id', sa.String),
        sa.column('title', sa.Text),
        sa.column('brand', sa.String),
        sa.column('sku_key', sa.String),
        sa.column('title_key', sa.String),
        sa.column('brand_key', sa.String),
    )
    connection = op.get_bind()
    update = (
        sa.update(items)
        .where(items.c.id == sa.bindparam('item_id'))
        .values(sku_key=sa.bindparam('sku'), title_key=sa.bindparam('title_k'), brand_key=sa.bindparam('brand_k'))
    )
    last = 0
    while True:
        rows = connection.execute(
            sa.select(items.c.id, items.c.external_id, items.c.title, items.c.brand)
            .where(items.c.id > last)
            .order_by(items.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        last = rows[-1][0]
        keys = [
            {'item_id': item_id, 'sku': match_key(sku), 'title_k': match_key(title), 'brand_k': match_key(brand)}
            for item_id, sku, title, brand in rows
        ]
        keys = [row for row in keys if row['sku'] or row['title_k'] or row['brand_k']]
        if keys:
            connection.execute(update, keys)


def downgrade() -> None:
    # Not batch mode: on SQLite that re-creates `items`, and dropping the old table would cascade
    # into item_tags. Both databases drop a column in place (SQLite since 3.35).
    for name in ('brand_key', 'title_key', 'sku_key'):
        op.drop_index(op.f(f'ix_items_{name}'), table_name='items')
        op.execute(f'ALTER TABLE items DROP COLUMN {name}')
