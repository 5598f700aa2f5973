"""What the vector indexes must hold, read from the catalog: ids and vectors by model fingerprint.

A text vector's id is its item's id times `TEXT_SLOTS` plus the text's slot, so one id space
serves every text of every item and an item's texts are found (and removed) by range.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from blipsearch.errors import CatalogError
from blipsearch.models.runtime import chunks
from blipsearch.storage.catalog_access import QUERY_CHUNK, CatalogAccess
from blipsearch.storage.schema import TEXT_SLOTS, Item, ItemStatus, ItemText
from blipsearch.storage.vector_codec import decode_vectors, value_width

VectorRow = tuple[int, bytes | None, str | None, int | None]
"""(vector id, stored bytes, storage dtype, dimension) as read from SQL."""


def text_vector_ids(item_ids: Iterable[int]) -> np.ndarray:
    """Every text-vector id an item may own: its whole slot range."""
    base = np.asarray(list(item_ids), dtype=np.int64)[:, None] * TEXT_SLOTS
    return (base + np.arange(TEXT_SLOTS, dtype=np.int64)[None, :]).reshape(-1)


class IndexContent(CatalogAccess):
    """The catalog's reads for building, catching up and verifying the image and text indexes."""

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
            yield _stack_rows([(int(r[0]), r[1], r[2], r[3]) for r in rows])
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
                yield _stack_rows(rows)
            last_item = int(item_ids[-1])

    def vectors_for_items(
        self, item_ids: Sequence[int], fingerprint: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The current index content for these items: (image ids, image vectors, text ids, text vectors).

        Items that are no longer indexed (failed, missing, deleted, other model) contribute nothing,
        which is exactly what catching an index up needs: remove all, add back what is here.
        """
        image_rows: list[VectorRow] = []
        text_rows: list[VectorRow] = []
        try:
            with self.sessions() as session:
                for part in chunks([int(i) for i in item_ids], QUERY_CHUNK):
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
        image_ids, image_vectors = _stack_rows(image_rows)
        text_ids, text_vectors = _stack_rows(text_rows)
        return image_ids, image_vectors, text_ids, text_vectors

    def _text_rows(self, session: Session, item_ids: Sequence[int], fingerprint: str) -> list[VectorRow]:
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
        result: list[VectorRow] = []
        for item_id, slot, blob, dtype in rows:
            width = value_width(dtype)
            result.append((int(item_id) * TEXT_SLOTS + int(slot), blob, dtype, len(blob or b"") // width))
        return result


def _stack_rows(rows: Sequence[VectorRow]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 matrix) of rows that may mix storage dtypes but not dimensions."""
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
