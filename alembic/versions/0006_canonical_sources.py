"""items: source and origin become canonical paths (symlinks resolved), the indexer's new identity

Revision ID: 0006
Revises: 0005

The indexer now keys an item by its file's canonical path, so one file reached by two paths is
one item. Rows written before kept the path as found; re-keying them here, once, keeps a re-index
from adding a second item for every file under a symlinked folder.

Only what can be resolved here is changed: a path whose file exists on this machine (an origin:
whose folder or manifest exists). Uploads (`api:uploads`) keep their stored path. When two rows
resolve to one file, the row already canonical (else the oldest) takes the name; the others keep
theirs, are no longer listed by the next run and end `missing` (or pruned) like any vanished file.
Downgrade leaves the canonical paths: they are valid paths for the old code too.
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UPLOADS = 'api:uploads'
_BATCH = 1000


def _canonical(path: str | None) -> str | None:
    """The resolved path if `path` is an existing absolute path that resolves elsewhere, else None."""
    if not path or '\x00' in path or not os.path.isabs(path):
        return None
    try:
        if not os.path.exists(path):
            return None
        resolved = os.path.realpath(path)
    except (OSError, ValueError):
        return None
    return resolved if resolved != path else None


def upgrade() -> None:
    items = sa.table(
        'items',
        sa.column('id', sa.Integer),
        sa.column('source', sa.Text),
        sa.column('origin', sa.Text),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(items.c.id, items.c.source, items.c.origin)
        .where(sa.or_(items.c.origin.is_(None), items.c.origin != _UPLOADS))
        .order_by(items.c.id)
    ).all()
    taken = {source for _, source, _ in rows}
    sources: list[dict[str, object]] = []
    for item_id, source, _ in rows:
        canonical = _canonical(source)
        if canonical is None or canonical in taken:
            continue
        taken.add(canonical)
        sources.append({'item_id': item_id, 'new': canonical})
    origins = {origin for _, _, origin in rows if origin}
    renamed = [{'old': origin, 'new': new} for origin in origins if (new := _canonical(origin))]

    by_id = sa.update(items).where(items.c.id == sa.bindparam('item_id')).values(source=sa.bindparam('new'))
    for start in range(0, len(sources), _BATCH):
        connection.execute(by_id, sources[start : start + _BATCH])
    by_origin = sa.update(items).where(items.c.origin == sa.bindparam('old')).values(origin=sa.bindparam('new'))
    for start in range(0, len(renamed), _BATCH):
        connection.execute(by_origin, renamed[start : start + _BATCH])


def downgrade() -> None:
    pass
