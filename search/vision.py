"""Vision tokens for ITM re-ranking: re-encoded from the image files, or from a bounded disk cache.

ITM cross-attends into the vision encoder's last hidden state of every candidate (577 x 768 for
BLIP-base, 0.9 MB in float16), far too much to keep for a whole collection, and the reason the
index stores only the 256-d ITC vector. By default (`vision_tokens=cache`) they come from a
float16 disk cache (blipsearch/storage/vision_cache.py) bounded by `vision_cache_bytes`, which the
indexer fills as it embeds, so re-ranking indexed items needs no vision-encoder pass at query
time; a miss, or `vision_tokens=files`, recomputes them from the image (a file, or an upload in the
image store; one vision-encoder pass per candidate, no storage).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from blipsearch.errors import InvalidInputError
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.item_images import ItemImages
from blipsearch.storage.schema import Item
from blipsearch.storage.vision_cache import VisionTokenCache

log = logging.getLogger(__name__)


class FileVisionTokens:
    """Vision tokens computed from each item's image file, in model batches."""

    def __init__(self, model: RetrievalModel, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        self.images = ItemImages(settings)

    def tokens(self, items: Sequence[Item]) -> dict[int, torch.Tensor]:
        """Tokens per item id; an item whose file is gone or broken now is left out (and logged)."""
        images = []
        ids = []
        side = self.model.image_size
        for item in items:
            try:
                image = self.images.open(
                    item,
                    max_bytes=self.settings.max_image_bytes,
                    max_pixels=self.settings.max_image_pixels,
                    at_least=(side, side),
                )
            except (InvalidInputError, OSError) as exc:
                log.warning("cannot re-rank item", extra={"item_id": item.id, "reason": str(exc)})
                continue
            images.append(image)
            ids.append(item.id)
        if not images:
            return {}
        hidden = self.model.vision_tokens(images)
        return {item_id: hidden[row] for row, item_id in enumerate(ids)}


class CachedVisionTokens(FileVisionTokens):
    """File tokens behind the float16 on-disk LRU cache (which the indexer may have filled)."""

    def __init__(self, model: RetrievalModel, settings: Settings) -> None:
        super().__init__(model, settings)
        self.cache = VisionTokenCache.for_model(settings, model)
        self.hits = 0
        self.misses = 0

    def tokens(self, items: Sequence[Item]) -> dict[int, torch.Tensor]:
        found: dict[int, torch.Tensor] = {}
        missing: list[Item] = []
        for item in items:
            cached = self.cache.read(item.id, item.content_hash)
            if cached is None:
                missing.append(item)
            else:
                found[item.id] = cached
        self.hits += len(found)
        self.misses += len(missing)
        computed = super().tokens(missing) if missing else {}
        for item in missing:
            if item.id in computed:
                self.cache.write(item.id, item.content_hash, computed[item.id])
        if computed:
            self.cache.evict()
        return {**found, **computed}

    def size_bytes(self) -> int:
        return self.cache.size_bytes()


def vision_token_source(model: RetrievalModel, settings: Settings) -> FileVisionTokens:
    return (
        CachedVisionTokens(model, settings)
        if settings.vision_tokens == "cache"
        else FileVisionTokens(model, settings)
    )
