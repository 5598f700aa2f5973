"""Training pairs from the catalog itself: each indexed image with its texts that CapFilt kept.

This is the bootstrapping loop of BLIP applied to a user's collection: index, run `capfilt`
(synthetic captions plus the ITM filter), then fine-tune on the clean texts only.
"""

from __future__ import annotations

from pathlib import Path

from blipsearch.errors import InvalidInputError
from blipsearch.storage.catalog import Catalog
from blipsearch.train.loop import PairSet


def catalog_pairs(catalog: Catalog) -> PairSet:
    """(image file, text) for every indexed item and each of its texts not marked noisy."""
    ids: set[int] = set()
    for fingerprint in catalog.fingerprint_counts():
        ids.update(int(i) for i in catalog.indexed_ids(fingerprint))
    ordered = sorted(ids)
    texts = catalog.clean_texts(ordered)
    sources = {item.id: item.source for item in catalog.items_by_ids(ordered)}
    images: list[Path] = []
    captions: list[str] = []
    image_ids: list[int] = []
    for position, item_id in enumerate(ordered):
        path = Path(sources[item_id])
        for row in texts.get(item_id, []):
            text = " ".join(row.text.split())
            if text and path.is_file():
                images.append(path)
                captions.append(text)
                image_ids.append(position)
    if not captions:
        raise InvalidInputError("The catalog has no indexed image with a clean text to train on.")
    return PairSet(images=tuple(images), texts=tuple(captions), image_ids=tuple(image_ids))
