"""item_texts: provenance (original or synthetic) and CapFilt's ITM filter verdict

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('item_texts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.String(length=16), server_default='original', nullable=False, comment='original (source, indexer caption) or synthetic (CapFilt)'))
        batch_op.add_column(sa.Column('generator_fingerprint', sa.String(length=64), nullable=True, comment='the captioner that wrote a synthetic text'))
        batch_op.add_column(sa.Column('filter_score', sa.Float(), nullable=True, comment='ITM match probability with the image'))
        batch_op.add_column(sa.Column('noisy', sa.Boolean(), nullable=True, comment='score below the threshold; null: not filtered'))
        batch_op.add_column(sa.Column('filter_fingerprint', sa.String(length=64), nullable=True, comment='the ITM model that filtered'))
        batch_op.create_check_constraint(op.f('ck_item_texts_origin_known'), "origin IN ('original', 'synthetic')")


def downgrade() -> None:
    with op.batch_alter_table('item_texts', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_item_texts_origin_known'), type_='check')
        batch_op.drop_column('filter_fingerprint')
        batch_op.drop_column('noisy')
        batch_op.drop_column('filter_score')
        batch_op.drop_column('generator_fingerprint')
        batch_op.drop_column('origin')
