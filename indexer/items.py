"""Single items written through the API: an upload indexed before the response, metadata edits, deletes.

An upload is decoded with the same limits and allowlist as the indexer, stored durably in the image
store (`image_store`, by default `data_dir/uploads/`; named by its sha256 plus a random suffix; see
storage/image_store.py), embedded, and written to the catalog in one transaction with its texts; its
`source` is `upload:<key>`, which every server sharing the store can read. Readers pick it
up from the change log, so it is searchable as soon as the write returns. Identical bytes
uploaded twice are two items (they may carry different metadata), each with its own file.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

from blipsearch.errors import ConflictError
from blipsearch.images import DecodedImage, decode_image
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.image_store import UPLOAD_ORIGIN, UPLOAD_PREFIX
from blipsearch.storage.item_images import ItemImages
from blipsearch.storage.item_writes import FileFacts, ItemMetadata, ItemWrite, TextVector, own_texts
from blipsearch.storage.schema import Item, ItemStatus
from blipsearch.storage.vector_codec import round_trip

__all__ = ["UPLOAD_ORIGIN", "ItemWriter"]

_SUFFIXES = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "MPO": ".jpg",
}


class ItemWriter:
    """Adds, edits and deletes one item at a time, for the API."""

    def __init__(self, settings: Settings, model: RetrievalModel, catalog: Catalog) -> None:
        self.settings = settings
        self.model = model
        self.catalog = catalog
        self.images = ItemImages(settings)

    def add(self, data: bytes, metadata: ItemMetadata, *, name: str = "the upload") -> int:
        """Store, decode, embed and write an uploaded image; returns the new item id."""
        self._check_sku_free(metadata.external_id, None)
        side = self.model.image_size
        decoded = decode_image(
            data, max_pixels=self.settings.max_image_pixels, name=name, at_least=(side, side)
        )
        digest = hashlib.sha256(data).hexdigest()
        store = self.images.store
        key = store.put(data, digest, _SUFFIXES.get(decoded.format, ".img"))
        try:
            return self._write_new(key, data, digest, decoded, metadata)
        except BaseException:
            store.delete(key)  # nothing in the catalog names it
            raise

    def _write_new(
        self, key: str, data: bytes, digest: str, decoded: DecodedImage, metadata: ItemMetadata
    ) -> int:
        vector = self.model.embed_images([decoded.image]).vectors[0]
        facts = FileFacts(digest, len(data), time.time(), decoded.format, decoded.width, decoded.height)
        write = ItemWrite(
            source=f"{UPLOAD_PREFIX}{key}",
            origin=UPLOAD_ORIGIN,
            status=ItemStatus.INDEXED,
            file=facts,
            embedding=vector,
            model_fingerprint=self.model.fingerprint,
            metadata=metadata,
            texts=self._texts(metadata, None),
        )
        return self.catalog.write([write])[0]

    def update(self, item_id: int, changes: dict[str, object]) -> None:
        """Change metadata fields; the title and description texts are embedded again."""
        item = self._item(item_id)
        current = ItemMetadata.of(item)
        if "external_id" in changes:
            self._check_sku_free(changes["external_id"], item_id)  # type: ignore[arg-type]
        metadata = replace(current, **changes)  # type: ignore[arg-type]
        write = ItemWrite(
            source=item.source,
            origin=item.origin,
            status=ItemStatus(item.status),
            item_id=item_id,
            metadata=metadata,
            model_fingerprint=self.model.fingerprint,
            texts=self._texts(metadata, item.caption),
        )
        self.catalog.write([write])

    def delete(self, item_id: int) -> None:
        item = self._item(item_id)
        self.catalog.delete_items([item_id])
        # The row goes first: a crash in between leaves bytes no item names, which a server start
        # removes, never an item whose image is gone.
        self.images.delete(item)

    def _item(self, item_id: int) -> Item:
        found = self.catalog.items_by_ids([item_id])
        if not found:
            raise KeyError(item_id)
        return found[0]

    def _check_sku_free(self, sku: str | None, item_id: int | None) -> None:
        if not sku:
            return
        owner = self.catalog.item_id_by_sku(sku)
        if owner is not None and owner != item_id:
            raise ConflictError(f"SKU {sku!r} already belongs to item {owner}.")

    def _texts(self, metadata: ItemMetadata, caption: str | None) -> list[TextVector]:
        texts = own_texts(metadata, caption)
        if not texts:
            return []
        vectors = round_trip(
            self.model.embed_texts([text for _, _, text in texts]), self.catalog.embedding_storage
        )
        return [
            TextVector(slot, kind, text, vector)
            for (slot, kind, text), vector in zip(texts, vectors, strict=True)
        ]
