"""The catalog as the indexer and the index synchroniser see it: items in, vectors and changes out.

Every write goes through `Catalog.write` in one transaction per batch that also appends to the
change log, so a vector index that recorded the last change id it applied can always be caught up,
and a crash at any point leaves each item either fully written (with its change) or untouched.
The same transaction refreshes the items' keyword documents (`keyword.py`), so full-text search
never sees a state of an item that the catalog did not commit.

`Catalog` is this module's item reads and writes plus two parts with their own modules over the
same connection (`catalog_access.py`): `IndexContent` (the vectors an index must hold) and
`ItemTexts` (generated captions, CapFilt's texts and verdicts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from blipsearch.faults import crash_point
from blipsearch.models.runtime import chunks
from blipsearch.storage.catalog_access import QUERY_CHUNK
from blipsearch.storage.index_content import IndexContent
from blipsearch.storage.item_texts import ItemTexts, rewritten_texts
from blipsearch.storage.item_writes import ItemWrite
from blipsearch.storage.match_keys import ExactKind, match_key
from blipsearch.storage.schema import Change, ChangeOp, Item, ItemStatus, ItemTag, ItemText
from blipsearch.storage.vector_codec import decode_vectors, encode_vector

log = logging.getLogger(__name__)


class Catalog(ItemTexts, IndexContent):
    """Items, their texts and vectors, and the change log: everything the stages keep in SQL."""

    # reads ------------------------------------------------------------------------------------

    def items_by_sources(self, sources: Sequence[str]) -> dict[str, Item]:
        found: dict[str, Item] = {}
        try:
            with self.sessions() as session:
                for part in chunks(list(sources), QUERY_CHUNK):
                    query = (
                        select(Item)
                        .where(Item.source.in_(part))
                        .options(selectinload(Item.tags), selectinload(Item.texts))
                    )
                    found.update({item.source: item for item in session.scalars(query)})
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        return found

    def item_id_by_sku(self, sku: str) -> int | None:
        try:
            with self.sessions() as session:
                return session.scalar(select(Item.id).where(Item.external_id == sku))
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None

    def items_by_ids(self, ids: Sequence[int], *, related: bool = True) -> list[Item]:
        """Items in the order of `ids`; unknown ids are left out. Without `related`, tags and texts
        are not loaded (one query instead of three: the re-ranker needs only files and hashes)."""
        found: dict[int, Item] = {}
        try:
            with self.reading() as session:
                for part in chunks([int(i) for i in ids], QUERY_CHUNK):
                    query = select(Item).where(Item.id.in_(part))
                    if related:
                        query = query.options(selectinload(Item.tags), selectinload(Item.texts))
                    found.update({item.id: item for item in session.scalars(query)})
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        return [found[int(i)] for i in ids if int(i) in found]

    def sources_in_origin(self, origin: str) -> dict[str, tuple[int, str]]:
        """source -> (id, status) of every item a folder or manifest brought in."""
        try:
            with self.sessions() as session:
                rows = session.execute(select(Item.source, Item.id, Item.status).where(Item.origin == origin))
                return {source: (item_id, status) for source, item_id, status in rows}
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None

    def embeddings_by_hash(
        self, hashes: Sequence[str], fingerprint: str
    ) -> dict[str, tuple[np.ndarray, Item]]:
        """Vectors already computed for identical bytes, so a copied file is never embedded twice."""
        found: dict[str, tuple[np.ndarray, Item]] = {}
        try:
            with self.sessions() as session:
                for part in chunks(list(set(hashes)), QUERY_CHUNK):
                    query = select(Item).where(
                        Item.content_hash.in_(part),
                        Item.model_fingerprint == fingerprint,
                        Item.embedding.is_not(None),
                    )
                    for item in session.scalars(query):
                        if item.content_hash and item.content_hash not in found:
                            vector = decode_vectors(
                                [item.embedding or b""], item.embedding_dtype or "", item.embedding_dim or 0
                            )
                            found[item.content_hash] = (vector[0], item)
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        return found

    def last_change_id(self) -> int:
        try:
            with self.sessions() as session:
                return int(session.scalar(select(func.max(Change.id))) or 0)
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None

    def changed_items_since(self, change_id: int) -> tuple[list[int], int]:
        """Distinct item ids changed after `change_id`, and the last change id seen."""
        try:
            with self.sessions() as session:
                rows = session.execute(
                    select(Change.item_id, func.max(Change.id))
                    .where(Change.id > change_id)
                    .group_by(Change.item_id)
                ).all()
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        if not rows:
            return [], change_id
        return sorted(int(item_id) for item_id, _ in rows), max(int(last) for _, last in rows)

    def status_counts(self) -> dict[str, int]:
        try:
            with self.sessions() as session:
                rows = session.execute(select(Item.status, func.count()).group_by(Item.status)).all()
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        counts = {status.value: 0 for status in ItemStatus}
        counts.update({status: int(count) for status, count in rows})
        return counts

    def fingerprint_counts(self) -> dict[str, int]:
        """Indexed items per embedding model: more than one key means a model switch is half done."""
        try:
            with self.sessions() as session:
                rows = session.execute(
                    select(Item.model_fingerprint, func.count())
                    .where(Item.status == ItemStatus.INDEXED.value)
                    .group_by(Item.model_fingerprint)
                ).all()
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        return {str(fp): int(count) for fp, count in rows}

    def inconsistent_rows(self) -> list[str]:
        """Rows that break the catalog's own rules (indexed without a vector, failed without a reason)."""
        problems: list[str] = []
        try:
            with self.sessions() as session:
                no_vector = session.scalars(
                    select(Item.id)
                    .where(Item.status == ItemStatus.INDEXED.value, Item.embedding.is_(None))
                    .limit(20)
                ).all()
                no_reason = session.scalars(
                    select(Item.id)
                    .where(Item.status == ItemStatus.FAILED.value, Item.error.is_(None))
                    .limit(20)
                ).all()
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        problems.extend(f"item {i} is indexed but has no embedding" for i in no_vector)
        problems.extend(f"item {i} failed without a reason" for i in no_reason)
        return problems

    def failures(self, limit: int = 20) -> list[tuple[int, str, str]]:
        try:
            with self.sessions() as session:
                rows = session.execute(
                    select(Item.id, Item.source, Item.error)
                    .where(Item.status == ItemStatus.FAILED.value)
                    .order_by(Item.id)
                    .limit(limit)
                ).all()
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        return [(int(i), str(s), str(e or "")) for i, s, e in rows]

    # writes -----------------------------------------------------------------------------------

    def write(self, writes: Sequence[ItemWrite]) -> list[int]:
        """Apply a batch of item writes and their change-log entries in one transaction."""
        if not writes:
            return []
        try:
            with self.sessions() as session, session.begin():
                existing = self._load_for_write(session, writes)
                items = [self._apply(session, write, existing.get(write.source)) for write in writes]
                session.flush()
                self._record_changes(session, [item.id for item in items])
                session.flush()
                crash_point("catalog.before_commit")
            crash_point("catalog.after_commit")
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None
        return [item.id for item in items]

    def _load_for_write(self, session: Session, writes: Sequence[ItemWrite]) -> dict[str, Item]:
        sources = [write.source for write in writes]
        found: dict[str, Item] = {}
        for part in chunks(sources, QUERY_CHUNK):
            query = (
                select(Item)
                .where(Item.source.in_(part))
                .options(selectinload(Item.tags), selectinload(Item.texts))
            )
            found.update({item.source: item for item in session.scalars(query)})
        return found

    def _apply(self, session: Session, write: ItemWrite, item: Item | None) -> Item:
        if item is None:
            item = Item(source=write.source, origin=write.origin, status=write.status.value)
            session.add(item)
        if write.origin is not None:
            item.origin = write.origin
        previous_hash = item.content_hash
        item.status = write.status.value
        item.error = write.error
        if write.file is not None:
            facts = write.file
            item.content_hash = facts.content_hash
            item.size_bytes = facts.size_bytes
            item.file_mtime = facts.file_mtime
            if facts.format is not None:
                item.format, item.width, item.height = facts.format, facts.width, facts.height
        if (write.embedding is not None or write.texts) and not write.model_fingerprint:
            raise ValueError("an embedding is written together with the fingerprint of its model")
        if write.embedding is not None:
            vector = np.asarray(write.embedding, dtype=np.float32).reshape(-1)
            item.embedding = encode_vector(vector, self.embedding_storage)
            item.embedding_dtype = self.embedding_storage
            item.embedding_dim = int(vector.shape[0])
            item.model_fingerprint = write.model_fingerprint
        if write.status is ItemStatus.FAILED:
            item.embedding = item.embedding_dtype = item.embedding_dim = item.model_fingerprint = None
        if write.metadata is not None:
            meta = write.metadata
            item.external_id = meta.external_id
            item.title, item.description = meta.title, meta.description
            item.category, item.brand = meta.category, meta.brand
            item.price, item.currency = meta.price, meta.currency
            item.attributes = dict(meta.attributes) or None
            wanted = sorted(set(meta.tags))
            if [tag.tag for tag in item.tags] != wanted:
                item.tags = [ItemTag(tag=tag) for tag in wanted]
        if write.caption is not None:
            item.caption, item.caption_fingerprint = write.caption, write.caption_fingerprint
        if write.texts is not None:
            same_image = write.file is None or write.file.content_hash == previous_hash
            item.texts = rewritten_texts(
                item, write.texts, write.model_fingerprint, self.embedding_storage, same_image=same_image
            )
        return item

    def mark_missing(self, item_ids: Sequence[int]) -> None:
        """Files that disappeared: out of the vector index, row (and embedding) kept for a comeback."""
        self._change_status(item_ids, ItemStatus.MISSING, "The file is no longer at its source path.")

    def _change_status(self, item_ids: Sequence[int], status: ItemStatus, error: str | None) -> None:
        if not item_ids:
            return
        try:
            with self.sessions() as session, session.begin():
                for part in chunks([int(i) for i in item_ids], QUERY_CHUNK):
                    session.execute(
                        update(Item).where(Item.id.in_(part)).values(status=status.value, error=error)
                    )
                self._record_changes(session, item_ids)
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None

    def delete_items(self, item_ids: Sequence[int]) -> None:
        if not item_ids:
            return
        try:
            with self.sessions() as session, session.begin():
                for part in chunks([int(i) for i in item_ids], QUERY_CHUNK):
                    session.execute(delete(ItemText).where(ItemText.item_id.in_(part)))
                    session.execute(delete(ItemTag).where(ItemTag.item_id.in_(part)))
                    session.execute(delete(Item).where(Item.id.in_(part)))
                self._record_changes(session, item_ids, ChangeOp.DELETE)
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None

    def keyword_search(
        self, terms: Sequence[str], limit: int, allowed_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """(item id, score) of indexed items whose keyword document matches any term, best first.

        `terms` are plain words or phrases, never query syntax; `blipsearch.search.keyword` turns
        a user's text into them.
        """
        try:
            with self.reading() as session:
                return self.keyword_documents.search(session, terms, limit, allowed_ids)
        except SQLAlchemyError as exc:
            raise self._fail("search", exc) from None

    def exact_matches(
        self, query: str, limit: int, allowed_ids: Sequence[int] | None = None
    ) -> list[tuple[int, ExactKind]]:
        """(item id, kind) of the indexed items whose SKU, title or brand equals `query` in the
        normal form of `match_keys.match_key`, ids ascending.

        Three equality tests on indexed key columns, the same SQL on SQLite and PostgreSQL. An item
        equal on several fields gets its most specific kind (SKU, then title, then brand). At most
        `limit` rows are read (a brand may cover the whole catalog); `allowed_ids` (a filter's ids)
        restricts the answer.
        """
        key = match_key(query)
        if key is None or limit < 1 or (allowed_ids is not None and not len(allowed_ids)):
            return []
        statement = (
            select(Item.id, Item.sku_key, Item.title_key)
            .where(
                or_(Item.sku_key == key, Item.title_key == key, Item.brand_key == key),
                Item.status == ItemStatus.INDEXED.value,
            )
            .order_by(Item.id)
        )
        allowed = None if allowed_ids is None else {int(i) for i in allowed_ids}
        try:
            with self.reading() as session:
                rows = session.execute(statement.limit(limit) if allowed is None else statement).all()
        except SQLAlchemyError as exc:
            raise self._fail("search", exc) from None
        found: list[tuple[int, ExactKind]] = []
        for item_id, sku_key, title_key in rows:
            if allowed is not None and int(item_id) not in allowed:
                continue
            kind: ExactKind = "sku" if sku_key == key else "title" if title_key == key else "brand"
            found.append((int(item_id), kind))
            if len(found) == limit:
                break
        return found
