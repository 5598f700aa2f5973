"""An item's texts (the item_texts rows) and where each came from.

Three writers share these rows: an item write (title, description, caption: the "original"
texts), the captions a search or the API generates, and CapFilt (sampled "synthetic" captions and
the ITM verdict that marks a text noisy). The rules that keep them from undoing each other live
here: an item write replaces the originals but keeps CapFilt's texts while the image bytes stay
the same, and a text rewritten word for word keeps its verdict. Readers that honour the verdicts
(search's image-to-text lookup, training pairs) read through `noisy_text_ids` and `clean_texts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import selectinload

from blipsearch.models.runtime import chunks
from blipsearch.storage.catalog_access import QUERY_CHUNK, CatalogAccess
from blipsearch.storage.item_writes import TextVector
from blipsearch.storage.schema import (
    SLOT_OF_KIND,
    SYNTHETIC_SLOTS,
    TEXT_SLOTS,
    Item,
    ItemText,
    TextKind,
    TextOrigin,
    synthetic_slot,
)
from blipsearch.storage.vector_codec import StorageDType, encode_vector


class ItemTexts(CatalogAccess):
    """Writes of generated texts and verdicts, and the reads that leave out what CapFilt rejected."""

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
                for part in chunks(sorted(int(i) for i in captions), QUERY_CHUNK):
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
                self._record_changes(session, stored)
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
                for part in chunks(sorted(int(i) for i in texts), QUERY_CHUNK):
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
                self._record_changes(session, stored_items)
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
                self._record_changes(session, sorted(touched))
        except SQLAlchemyError as exc:
            raise self._fail("write", exc) from None
        return updated

    def noisy_text_ids(self) -> set[int]:
        """Text-vector ids (item id x TEXT_SLOTS + slot) of every text CapFilt marked noisy."""
        try:
            with self.reading() as session:
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
                for part in chunks(list(found), QUERY_CHUNK):
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


def rewritten_texts(
    item: Item,
    texts: Sequence[TextVector],
    model_fingerprint: str | None,
    storage: StorageDType,
    *,
    same_image: bool,
) -> list[ItemText]:
    """The rows an item write leaves: `texts` as originals, each keeping the verdict of a word-for-word
    identical predecessor, plus CapFilt's synthetic rows when the write gives only fixed kinds and
    the image is the same (they describe the picture, not the metadata); a new image drops them."""
    old_rows = {row.slot: row for row in item.texts} if same_image else {}
    replaced = [
        ItemText(
            slot=text.slot,
            kind=text.kind,
            text=text.text,
            embedding=encode_vector(text.vector, storage),
            embedding_dtype=storage,
            model_fingerprint=model_fingerprint,
            # Set, not defaulted: a row with the same key becomes an UPDATE (SQLAlchemy's
            # row switch), which would otherwise keep the old row's provenance and verdict.
            origin=TextOrigin.ORIGINAL.value,
            generator_fingerprint=None,
            filter_score=None,
            noisy=None,
            filter_fingerprint=None,
        )
        for text in texts
    ]
    for row in replaced:
        _keep_verdict(row, old_rows.get(row.slot))
    if not any(text.slot in SYNTHETIC_SLOTS for text in texts):
        replaced.extend(row for row in old_rows.values() if row.origin == TextOrigin.SYNTHETIC.value)
    return replaced


def _keep_verdict(row: ItemText, previous: ItemText | None) -> None:
    """Carry CapFilt's verdict over to a rewritten text that is word for word what was scored."""
    if previous is not None and previous.kind == row.kind and previous.text == row.text:
        row.filter_score, row.noisy = previous.filter_score, previous.noisy
        row.filter_fingerprint = previous.filter_fingerprint
