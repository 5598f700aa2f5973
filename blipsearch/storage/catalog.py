"""The catalog as the indexer and the index synchroniser see it: items in, vectors and changes out.

Every write goes through `Catalog.write` in one transaction per batch that also appends to the
change log, so a vector index that recorded the last change id it applied can always be caught up,
and a crash at any point leaves each item either fully written (with its change) or untouched.
The same transaction refreshes the items' keyword documents (`keyword.py`), so full-text search
never sees a state of an item that the catalog did not commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import numpy as np
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from blipsearch.errors import CatalogError
from blipsearch.faults import crash_point
from blipsearch.models.runtime import chunks
from blipsearch.settings import Settings
from blipsearch.storage.database import create_catalog_engine, ensure_schema, session_factory
from blipsearch.storage.keyword import KeywordDocuments
from blipsearch.storage.schema import (
    SLOT_OF_KIND,
    SYNTHETIC_SLOTS,
    TEXT_SLOTS,
    Change,
    ChangeOp,
    Item,
    ItemStatus,
    ItemTag,
    ItemText,
    TextKind,
    TextOrigin,
    synthetic_slot,
)

log = logging.getLogger(__name__)

StorageDType = Literal["float32", "float16"]
_NUMPY_DTYPES: dict[str, str] = {"float32": "<f4", "float16": "<f2"}
_QUERY_CHUNK = 500
"""Ids per IN (...) clause: well under SQLite's and PostgreSQL's parameter limits."""


def encode_vector(vector: np.ndarray, dtype: StorageDType) -> bytes:
    return np.ascontiguousarray(vector, dtype=_NUMPY_DTYPES[dtype]).tobytes()


def decode_vectors(blobs: Sequence[bytes], dtype: str, dim: int) -> np.ndarray:
    """Stack stored blobs into float32 [N, dim]; a blob of the wrong length is a corrupt row."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    numpy_dtype = np.dtype(_NUMPY_DTYPES[dtype])
    if any(len(blob) != dim * numpy_dtype.itemsize for blob in blobs):
        raise CatalogError(
            f"A stored embedding does not have {dim} {dtype} values; run `blipsearch index verify`."
        )
    joined = np.frombuffer(b"".join(blobs), dtype=numpy_dtype).reshape(len(blobs), dim)
    return joined.astype(np.float32)


def round_trip(vectors: np.ndarray, dtype: StorageDType) -> np.ndarray:
    """The vectors exactly as they will read back from SQL, so a live index equals a rebuilt one."""
    return np.asarray(vectors, dtype=_NUMPY_DTYPES[dtype]).astype(np.float32)


@dataclass(frozen=True)
class FileFacts:
    content_hash: str
    size_bytes: int
    file_mtime: float
    format: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class ItemMetadata:
    """The catalog fields a manifest row can carry; None means the field is absent."""

    external_id: str | None = None
    title: str | None = None
    description: str | None = None
    category: str | None = None
    brand: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    tags: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, item: Item) -> ItemMetadata:
        """What the catalog holds for an item (tags and texts loaded)."""
        return cls(
            external_id=item.external_id,
            title=item.title,
            description=item.description,
            category=item.category,
            brand=item.brand,
            price=item.price,
            currency=item.currency,
            tags=tuple(tag.tag for tag in item.tags),
            attributes=dict(item.attributes or {}),
        )

    def differs_from(self, item: Item) -> bool:
        return (
            self.external_id != item.external_id
            or self.title != item.title
            or self.description != item.description
            or self.category != item.category
            or self.brand != item.brand
            or self.price != item.price
            or self.currency != item.currency
            or tuple(sorted(set(self.tags))) != tuple(tag.tag for tag in item.tags)
            or (self.attributes or None) != (item.attributes or None)
        )


@dataclass(frozen=True)
class TextVector:
    slot: int
    kind: str
    text: str
    vector: np.ndarray


@dataclass
class ItemWrite:
    """One item's new state; fields left None keep what the catalog has."""

    source: str
    origin: str | None
    status: ItemStatus
    item_id: int | None = None
    error: str | None = None
    file: FileFacts | None = None
    embedding: np.ndarray | None = None
    model_fingerprint: str | None = None
    """The model that made `embedding` and `texts`; required with either."""
    metadata: ItemMetadata | None = None
    caption: str | None = None
    caption_fingerprint: str | None = None
    texts: list[TextVector] | None = None
    """None keeps the item's texts; a list (possibly empty) replaces them all, except that CapFilt's
    synthetic texts stay when the list holds only fixed kinds and the image bytes are unchanged
    (they describe the picture, not the metadata); a new image drops them."""


def own_texts(metadata: ItemMetadata | None, caption: str | None) -> list[tuple[int, str, str]]:
    """(slot, kind, text) of the texts an item's metadata and caption give it, in slot order.

    The indexer and the API both derive an item's texts from this, so they agree on which texts
    an item has and never fight over its slots.
    """
    given = (
        (TextKind.TITLE, metadata.title if metadata else None),
        (TextKind.DESCRIPTION, metadata.description if metadata else None),
        (TextKind.CAPTION, caption),
    )
    return [(SLOT_OF_KIND[kind], kind.value, text) for kind, text in given if text]


def text_vector_ids(item_ids: Iterable[int]) -> np.ndarray:
    """Every text-vector id an item may own: its whole slot range."""
    base = np.asarray(list(item_ids), dtype=np.int64)[:, None] * TEXT_SLOTS
    return (base + np.arange(TEXT_SLOTS, dtype=np.int64)[None, :]).reshape(-1)


class Catalog:
    """Typed access to the catalog database; sessions are short and owned here."""

    def __init__(self, engine: Engine, *, embedding_storage: StorageDType = "float32") -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.embedding_storage: StorageDType = embedding_storage
        self.keyword_documents = KeywordDocuments(engine.dialect.name)

    @classmethod
    def open(cls, settings: Settings) -> Catalog:
        """Connect and migrate on first use, so a fresh data directory just works."""
        engine = create_catalog_engine(settings.effective_database_url)
        ensure_schema(engine)
        return cls(engine, embedding_storage=settings.embedding_storage)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def location(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def _fail(self, action: str, exc: SQLAlchemyError) -> CatalogError:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return CatalogError(f"Could not {action} the catalog at {self.location}: {reason}.")

    # reads ------------------------------------------------------------------------------------

    def items_by_sources(self, sources: Sequence[str]) -> dict[str, Item]:
        found: dict[str, Item] = {}
        try:
            with self.sessions() as session:
                for part in chunks(list(sources), _QUERY_CHUNK):
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

    def items_by_ids(self, ids: Sequence[int]) -> list[Item]:
        """Items in the order of `ids`; unknown ids are left out."""
        found: dict[int, Item] = {}
        try:
            with self.sessions() as session:
                for part in chunks([int(i) for i in ids], _QUERY_CHUNK):
                    query = (
                        select(Item)
                        .where(Item.id.in_(part))
                        .options(selectinload(Item.tags), selectinload(Item.texts))
                    )
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
                for part in chunks(list(set(hashes)), _QUERY_CHUNK):
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

    def indexed_ids(self, fingerprint: str) -> np.ndarray:
        """Ids the image index of `fingerprint` must hold, without reading any vector."""
        try:
            with self.sessions() as session:
                ids = session.scalars(
                    select(Item.id).where(
                        Item.status == ItemStatus.INDEXED.value,
                        Item.model_fingerprint == fingerprint,
                        Item.embedding.is_not(None),
                    )
                ).all()
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        return np.asarray(sorted(ids), dtype=np.int64)

    def text_ids(self, fingerprint: str) -> np.ndarray:
        """Text-vector ids the text index of `fingerprint` must hold."""
        try:
            with self.sessions() as session:
                rows = session.execute(
                    select(ItemText.item_id, ItemText.slot)
                    .join(Item, Item.id == ItemText.item_id)
                    .where(
                        Item.status == ItemStatus.INDEXED.value,
                        ItemText.model_fingerprint == fingerprint,
                        ItemText.embedding.is_not(None),
                    )
                ).all()
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        return np.asarray(sorted(int(i) * TEXT_SLOTS + int(s) for i, s in rows), dtype=np.int64)

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

    def iter_image_vectors(
        self, fingerprint: str, batch: int = 10_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of every indexed item embedded by `fingerprint`, in id order."""
        last = -1
        while True:
            try:
                with self.sessions() as session:
                    rows = session.execute(
                        select(Item.id, Item.embedding, Item.embedding_dtype, Item.embedding_dim)
                        .where(
                            Item.status == ItemStatus.INDEXED.value,
                            Item.model_fingerprint == fingerprint,
                            Item.embedding.is_not(None),
                            Item.id > last,
                        )
                        .order_by(Item.id)
                        .limit(batch)
                    ).all()
            except SQLAlchemyError as exc:
                raise self._fail("read", exc) from None
            if not rows:
                return
            yield self._stack_rows([(int(r[0]), r[1], r[2], r[3]) for r in rows])
            last = int(rows[-1][0])

    def iter_text_vectors(
        self, fingerprint: str, batch: int = 10_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(text-vector ids, vectors) of the texts of every indexed item, in id order."""
        last_item = -1
        while True:
            try:
                with self.sessions() as session:
                    item_ids = list(
                        session.scalars(
                            select(Item.id)
                            .where(Item.status == ItemStatus.INDEXED.value, Item.id > last_item)
                            .order_by(Item.id)
                            .limit(batch)
                        )
                    )
                    if not item_ids:
                        return
                    rows = self._text_rows(session, item_ids, fingerprint)
            except SQLAlchemyError as exc:
                raise self._fail("read", exc) from None
            if rows:
                yield self._stack_rows(rows)
            last_item = int(item_ids[-1])

    def vectors_for_items(
        self, item_ids: Sequence[int], fingerprint: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The current index content for these items: (image ids, image vectors, text ids, text vectors).

        Items that are no longer indexed (failed, missing, deleted, other model) contribute nothing,
        which is exactly what catching an index up needs: remove all, add back what is here.
        """
        image_rows: list[tuple[int, bytes | None, str | None, int | None]] = []
        text_rows: list[tuple[int, bytes | None, str | None, int | None]] = []
        try:
            with self.sessions() as session:
                for part in chunks([int(i) for i in item_ids], _QUERY_CHUNK):
                    live = session.execute(
                        select(Item.id, Item.embedding, Item.embedding_dtype, Item.embedding_dim)
                        .where(
                            Item.id.in_(part),
                            Item.status == ItemStatus.INDEXED.value,
                            Item.model_fingerprint == fingerprint,
                            Item.embedding.is_not(None),
                        )
                        .order_by(Item.id)
                    ).all()
                    image_rows.extend((int(r[0]), r[1], r[2], r[3]) for r in live)
                    indexed = list(
                        session.scalars(
                            select(Item.id).where(Item.id.in_(part), Item.status == ItemStatus.INDEXED.value)
                        )
                    )
                    text_rows.extend(self._text_rows(session, indexed, fingerprint))
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        image_ids, image_vectors = self._stack_rows(image_rows)
        text_ids, text_vectors = self._stack_rows(text_rows)
        return image_ids, image_vectors, text_ids, text_vectors

    def _text_rows(
        self, session: Session, item_ids: Sequence[int], fingerprint: str
    ) -> list[tuple[int, bytes | None, str | None, int | None]]:
        if not item_ids:
            return []
        rows = session.execute(
            select(ItemText.item_id, ItemText.slot, ItemText.embedding, ItemText.embedding_dtype)
            .where(
                ItemText.item_id.in_(list(item_ids)),
                ItemText.model_fingerprint == fingerprint,
                ItemText.embedding.is_not(None),
            )
            .order_by(ItemText.item_id, ItemText.slot)
        ).all()
        result: list[tuple[int, bytes | None, str | None, int | None]] = []
        for item_id, slot, blob, dtype in rows:
            width = np.dtype(_NUMPY_DTYPES[dtype or "float32"]).itemsize
            result.append((int(item_id) * TEXT_SLOTS + int(slot), blob, dtype, len(blob or b"") // width))
        return result

    @staticmethod
    def _stack_rows(
        rows: Sequence[tuple[int, bytes | None, str | None, int | None]],
    ) -> tuple[np.ndarray, np.ndarray]:
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        dims = {int(dim or 0) for _, _, _, dim in rows}
        dtypes = {str(dtype) for _, _, dtype, _ in rows}
        if len(dims) != 1:
            raise CatalogError("Stored embeddings have different sizes; run `blipsearch index rebuild`.")
        ids = np.asarray([row[0] for row in rows], dtype=np.int64)
        if len(dtypes) == 1:
            return ids, decode_vectors([row[1] or b"" for row in rows], dtypes.pop(), dims.pop())
        dim = dims.pop()
        return ids, np.concatenate([decode_vectors([row[1] or b""], str(row[2]), dim) for row in rows])

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
                session.add_all(Change(item_id=item.id, op=ChangeOp.UPSERT.value) for item in items)
                self.keyword_documents.refresh(session, [item.id for item in items])
                session.flush()
                crash_point("catalog.before_commit")
            crash_point("catalog.after_commit")
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None
        return [item.id for item in items]

    def _load_for_write(self, session: Session, writes: Sequence[ItemWrite]) -> dict[str, Item]:
        sources = [write.source for write in writes]
        found: dict[str, Item] = {}
        for part in chunks(sources, _QUERY_CHUNK):
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
            old_rows = {row.slot: row for row in item.texts} if same_image else {}
            replaced = [
                ItemText(
                    slot=text.slot,
                    kind=text.kind,
                    text=text.text,
                    embedding=encode_vector(text.vector, self.embedding_storage),
                    embedding_dtype=self.embedding_storage,
                    model_fingerprint=write.model_fingerprint,
                    # Set, not defaulted: a row with the same key becomes an UPDATE (SQLAlchemy's
                    # row switch), which would otherwise keep the old row's provenance and verdict.
                    origin=TextOrigin.ORIGINAL.value,
                    generator_fingerprint=None,
                    filter_score=None,
                    noisy=None,
                    filter_fingerprint=None,
                )
                for text in write.texts
            ]
            for row in replaced:
                _keep_verdict(row, old_rows.get(row.slot))
            if not any(text.slot in SYNTHETIC_SLOTS for text in write.texts):
                replaced.extend(row for row in old_rows.values() if row.origin == TextOrigin.SYNTHETIC.value)
            item.texts = replaced
        return item

    def mark_missing(self, item_ids: Sequence[int]) -> None:
        """Files that disappeared: out of the vector index, row (and embedding) kept for a comeback."""
        self._change_status(item_ids, ItemStatus.MISSING, "The file is no longer at its source path.")

    def _change_status(self, item_ids: Sequence[int], status: ItemStatus, error: str | None) -> None:
        if not item_ids:
            return
        try:
            with self.sessions() as session, session.begin():
                for part in chunks([int(i) for i in item_ids], _QUERY_CHUNK):
                    session.execute(
                        update(Item).where(Item.id.in_(part)).values(status=status.value, error=error)
                    )
                session.add_all(Change(item_id=int(i), op=ChangeOp.UPSERT.value) for i in item_ids)
                self.keyword_documents.refresh(session, item_ids)
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None

    def delete_items(self, item_ids: Sequence[int]) -> None:
        if not item_ids:
            return
        try:
            with self.sessions() as session, session.begin():
                for part in chunks([int(i) for i in item_ids], _QUERY_CHUNK):
                    session.execute(delete(ItemText).where(ItemText.item_id.in_(part)))
                    session.execute(delete(ItemTag).where(ItemTag.item_id.in_(part)))
                    session.execute(delete(Item).where(Item.id.in_(part)))
                session.add_all(Change(item_id=int(i), op=ChangeOp.DELETE.value) for i in item_ids)
                self.keyword_documents.refresh(session, item_ids)
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None

    def store_captions(
        self,
        captions: Mapping[int, str],
        caption_fingerprint: str,
        text_vectors: Mapping[int, np.ndarray] | None = None,
        model_fingerprint: str | None = None,
    ) -> None:
        """Keep captions generated at query time, so the next search neither decodes them again nor
        misses them: item row, caption text (with its ITC vector when given), keyword document and
        change log in one transaction, which lets the live text index catch up like after `write`.

        Ids that no longer exist (deleted while the caption was being generated) are skipped.
        Without a vector for an item its caption text is stored unembedded, so a vector of the
        previous caption never stays behind in the text index.
        """
        vectors = dict(text_vectors or {})
        if vectors and not model_fingerprint:
            raise ValueError("a text vector is written together with the fingerprint of its model")
        if not set(vectors) <= set(captions):
            raise ValueError("a text vector was given for an item without a caption")
        if not captions:
            return
        slot = SLOT_OF_KIND[TextKind.CAPTION]
        try:
            with self.sessions() as session, session.begin():
                stored: list[int] = []
                for part in chunks(sorted(int(i) for i in captions), _QUERY_CHUNK):
                    query = select(Item).where(Item.id.in_(part)).options(selectinload(Item.texts))
                    for item in session.scalars(query):
                        caption = captions[item.id]
                        item.caption, item.caption_fingerprint = caption, caption_fingerprint
                        row = next((t for t in item.texts if t.slot == slot), None)
                        if row is None:
                            row = ItemText(slot=slot)
                            item.texts.append(row)
                        row.kind, row.text = TextKind.CAPTION.value, caption
                        vector = vectors.get(item.id)
                        if vector is None:
                            row.embedding = row.embedding_dtype = row.model_fingerprint = None
                        else:
                            row.embedding = encode_vector(vector, self.embedding_storage)
                            row.embedding_dtype = self.embedding_storage
                            row.model_fingerprint = model_fingerprint
                        stored.append(item.id)
                session.flush()
                session.add_all(Change(item_id=i, op=ChangeOp.UPSERT.value) for i in stored)
                self.keyword_documents.refresh(session, stored)
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None

    def store_synthetic_texts(
        self,
        texts: Mapping[int, Sequence[tuple[str, np.ndarray, str]]],
        model_fingerprint: str,
    ) -> int:
        """Replace each item's synthetic texts (CapFilt's sampled captions) with these, in one
        transaction with the change log, so the live text index catches up like after `write`.

        `texts` maps item id -> [(text, ITC vector, generator fingerprint)]; the vectors come from
        the retrieval model `model_fingerprint`. Originals are never touched, and replacing (not
        appending) is what makes a re-run idempotent. Synthetic texts are not part of the keyword
        document (it is built from the item's own fields), so no keyword refresh is needed; the
        refresh still runs to keep one rule for every text write. Unknown ids are skipped.
        Returns the number of texts stored.
        """
        if not texts:
            return 0
        for rows in texts.values():
            if rows:
                synthetic_slot(len(rows) - 1)  # refuses more texts than there are synthetic slots
        stored_items: list[int] = []
        count = 0
        try:
            with self.sessions() as session, session.begin():
                for part in chunks(sorted(int(i) for i in texts), _QUERY_CHUNK):
                    query = select(Item).where(Item.id.in_(part)).options(selectinload(Item.texts))
                    for item in session.scalars(query):
                        kept = [row for row in item.texts if row.origin != TextOrigin.SYNTHETIC.value]
                        taken = {row.slot for row in kept}
                        free = [slot for slot in SYNTHETIC_SLOTS if slot not in taken]
                        new_rows = texts[item.id]
                        if len(new_rows) > len(free):
                            raise ValueError(f"item {item.id} has no free slot for {len(new_rows)} texts")
                        fresh = [
                            ItemText(
                                slot=slot,
                                kind=TextKind.SYNTHETIC.value,
                                text=text,
                                embedding=encode_vector(vector, self.embedding_storage),
                                embedding_dtype=self.embedding_storage,
                                model_fingerprint=model_fingerprint,
                                origin=TextOrigin.SYNTHETIC.value,
                                generator_fingerprint=generator,
                            )
                            for slot, (text, vector, generator) in zip(free, new_rows, strict=False)
                        ]
                        # Flush the removals first: a new row may reuse the (item, slot) key.
                        item.texts = kept
                        session.flush()
                        item.texts = kept + fresh
                        stored_items.append(item.id)
                        count += len(fresh)
                session.flush()
                session.add_all(Change(item_id=i, op=ChangeOp.UPSERT.value) for i in stored_items)
                self.keyword_documents.refresh(session, stored_items)
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None
        return count

    def store_filter_scores(
        self, scores: Sequence[tuple[int, int, float, bool]], filter_fingerprint: str
    ) -> int:
        """Record CapFilt's ITM verdict (item id, slot, match probability, noisy) on existing texts.

        Only the verdict columns change, never a text or vector, so search keeps working on the
        same rows; the change log still gets a row per item so that a reader of the log (a live
        index, a training export) sees the new verdict. Rows that vanished meanwhile are skipped.
        Returns the number of rows updated.
        """
        if not scores:
            return 0
        updated = 0
        touched: set[int] = set()
        try:
            with self.sessions() as session, session.begin():
                for item_id, slot, score, noisy in scores:
                    result = session.execute(
                        update(ItemText)
                        .where(ItemText.item_id == int(item_id), ItemText.slot == int(slot))
                        .values(
                            filter_score=float(score),
                            noisy=bool(noisy),
                            filter_fingerprint=filter_fingerprint,
                        )
                    )
                    if getattr(result, "rowcount", 0):
                        updated += 1
                        touched.add(int(item_id))
                session.add_all(Change(item_id=i, op=ChangeOp.UPSERT.value) for i in sorted(touched))
                self.keyword_documents.refresh(session, sorted(touched))
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None
        return updated

    def noisy_text_ids(self) -> set[int]:
        """Text-vector ids (item id x TEXT_SLOTS + slot) of every text CapFilt marked noisy."""
        try:
            with self.sessions() as session:
                rows = session.execute(
                    select(ItemText.item_id, ItemText.slot).where(ItemText.noisy.is_(True))
                ).all()
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        return {int(item_id) * TEXT_SLOTS + int(slot) for item_id, slot in rows}

    def clean_texts(self, item_ids: Sequence[int]) -> dict[int, list[ItemText]]:
        """Per item, its texts not marked noisy (unfiltered ones count as clean): what training
        and search may use after CapFilt. Items without such texts map to an empty list."""
        found: dict[int, list[ItemText]] = {int(i): [] for i in item_ids}
        try:
            with self.sessions() as session:
                for part in chunks(list(found), _QUERY_CHUNK):
                    rows = session.scalars(
                        select(ItemText)
                        .where(
                            ItemText.item_id.in_(part),
                            (ItemText.noisy.is_(None)) | (ItemText.noisy.is_(False)),
                        )
                        .order_by(ItemText.item_id, ItemText.slot)
                    )
                    for row in rows:
                        found[int(row.item_id)].append(row)
        except SQLAlchemyError as exc:
            raise self._fail("read", exc) from None
        return found

    def keyword_search(
        self, terms: Sequence[str], limit: int, allowed_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """(item id, score) of indexed items whose keyword document matches any term, best first.

        `terms` are plain words or phrases, never query syntax; `blipsearch.search.keyword` turns
        a user's text into them.
        """
        try:
            with self.sessions() as session:
                return self.keyword_documents.search(session, terms, limit, allowed_ids)
        except SQLAlchemyError as exc:
            raise self._fail("search", exc) from None


def _keep_verdict(row: ItemText, previous: ItemText | None) -> None:
    """Carry CapFilt's verdict over to a rewritten text that is word for word what was scored."""
    if previous is not None and previous.kind == row.kind and previous.text == row.text:
        row.filter_score, row.noisy = previous.filter_score, previous.noisy
        row.filter_fingerprint = previous.filter_fingerprint
