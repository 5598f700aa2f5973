"""items: origin (scope of --prune); item_texts: texts and their vectors for image-to-text

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('item_texts',
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=True),
    sa.Column('embedding_dtype', sa.String(length=8), nullable=True),
    sa.Column('model_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("embedding_dtype IS NULL OR embedding_dtype IN ('float16', 'float32')", name=op.f('ck_item_texts_embedding_dtype_known')),
    sa.CheckConstraint('slot >= 0 AND slot < 16', name=op.f('ck_item_texts_slot_in_range')),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_item_texts_item_id_items'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id', 'slot', name=op.f('pk_item_texts'))
    )
    with op.batch_alter_table('item_texts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_item_texts_model_fingerprint'), ['model_fingerprint'], unique=False)

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.Text(), nullable=True, comment='the folder or manifest that brought the item in; scope of --prune'))
        batch_op.create_index(batch_op.f('ix_items_origin'), ['origin'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_items_origin'))
        batch_op.drop_column('origin')

    with op.batch_alter_table('item_texts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_item_texts_model_fingerprint'))

    op.drop_table('item_texts')
