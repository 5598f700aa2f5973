"""Training pairs from the catalog itself: each indexed image with its texts that CapFilt kept.

This is the bootstrapping loop of BLIP applied to a user's collection: index, run `capfilt`
(synthetic captions plus the ITM filter), then fine-tune on the clean texts only.

An indexed file is handed to training by its path; an upload, which lives in the image store
(possibly on another machine), by a loader that reads it from there when its batch comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.image_store import UPLOAD_ORIGIN, UPLOAD_PREFIX
from blipsearch.storage.item_images import ItemImages, is_remote
from blipsearch.storage.schema import Item
from blipsearch.train.loop import ImageSource, PairSet


@dataclass(frozen=True)
class StoredImage:
    """An upload (from the image store) or an image at a URL (fetched), read and decoded only when a
    batch needs it."""

    images: ItemImages
    item: Item
    max_bytes: int
    max_pixels: int

    def __call__(self) -> Image.Image:
        return self.images.open(self.item, max_bytes=self.max_bytes, max_pixels=self.max_pixels)


def catalog_pairs(catalog: Catalog, settings: Settings | None = None) -> PairSet:
    """(image, text) for every indexed item and each of its texts not marked noisy.

    Uploads are found through the image store `settings` names; without settings only items with
    a file path (indexed files, and uploads from before the image store) take part.
    """
    ids: set[int] = set()
    for fingerprint in catalog.fingerprint_counts():
        ids.update(int(i) for i in catalog.indexed_ids(fingerprint))
    ordered = sorted(ids)
    texts = catalog.clean_texts(ordered)
    items = {item.id: item for item in catalog.items_by_ids(ordered)}
    reader = ItemImages(settings) if settings is not None else None
    images: list[ImageSource] = []
    captions: list[str] = []
    image_ids: list[int] = []
    for position, item_id in enumerate(ordered):
        image = _image(items[item_id], reader, settings)
        for row in texts.get(item_id, []):
            text = " ".join(row.text.split())
            if text and image is not None:
                images.append(image)
                captions.append(text)
                image_ids.append(position)
    if not captions:
        raise InvalidInputError("The catalog has no indexed image with a clean text to train on.")
    return PairSet(images=tuple(images), texts=tuple(captions), image_ids=tuple(image_ids))


def _image(item: Item, reader: ItemImages | None, settings: Settings | None) -> ImageSource | None:
    """What training loads the item's picture from; None when it is gone (the item is left out)."""
    if reader is not None and settings is not None and is_remote(item):
        return StoredImage(reader, item, settings.max_image_bytes, settings.max_image_pixels)
    if reader is None or settings is None or item.origin != UPLOAD_ORIGIN:
        path = Path(item.source)
        return path if not item.source.startswith(UPLOAD_PREFIX) and path.is_file() else None
    try:
        reader.upload_size(item)
    except (InvalidInputError, OSError):
        return None
    return StoredImage(reader, item, settings.max_image_bytes, settings.max_image_pixels)
