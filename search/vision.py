"""Vision tokens for ITM re-ranking: re-encoded from the image files, or from a bounded disk cache.

ITM cross-attends into the vision encoder's last hidden state of every candidate (577 x 768 for
BLIP-base, 0.9 MB in float16), far too much to keep for a whole collection, and the reason the
index stores only the 256-d ITC vector. By default the tokens are recomputed from the files at
query time (no storage, one vision-encoder pass per candidate); the cache keeps them for hot items
in float16 under `data_dir/vision-cache/<model fingerprint>/`, bounded by `vision_cache_bytes`
(least recently used files are evicted), keyed by item id and content hash so that a changed
image is never scored with its old tokens.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from blipsearch.errors import InvalidInputError
from blipsearch.images import open_image
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.schema import Item

log = logging.getLogger(__name__)


class FileVisionTokens:
    """Vision tokens computed from each item's image file, in model batches."""

    def __init__(self, model: RetrievalModel, settings: Settings) -> None:
        self.model = model
        self.settings = settings

    def tokens(self, items: Sequence[Item]) -> dict[int, torch.Tensor]:
        """Tokens per item id; an item whose file is gone or broken now is left out (and logged)."""
        images = []
        ids = []
        side = self.model.image_size
        for item in items:
            try:
                image = open_image(
                    item.source,
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
    """File tokens behind a float16 on-disk LRU cache."""

    def __init__(self, model: RetrievalModel, settings: Settings) -> None:
        super().__init__(model, settings)
        self.directory = settings.data_dir / "vision-cache" / model.fingerprint
        self.max_bytes = settings.vision_cache_bytes
        self.hits = 0
        self.misses = 0

    def _path(self, item: Item) -> Path:
        return self.directory / f"{item.id}-{(item.content_hash or 'nohash')[:16]}.npy"

    def tokens(self, items: Sequence[Item]) -> dict[int, torch.Tensor]:
        found: dict[int, torch.Tensor] = {}
        missing: list[Item] = []
        for item in items:
            cached = self._read(self._path(item))
            if cached is None:
                missing.append(item)
            else:
                found[item.id] = cached
        self.hits += len(found)
        self.misses += len(missing)
        computed = super().tokens(missing) if missing else {}
        for item in missing:
            if item.id in computed:
                self._write(self._path(item), computed[item.id])
        if computed:
            self._evict()
        return {**found, **computed}

    def _read(self, path: Path) -> torch.Tensor | None:
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # a torn or foreign file: recompute it
            log.warning("vision cache entry unreadable", extra={"path": str(path), "reason": str(exc)})
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recency for LRU eviction
        return torch.from_numpy(array).to(self.model.device, self.model.dtype)

    def _write(self, path: Path, tokens: torch.Tensor) -> None:
        if self.max_bytes <= 0:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            np.save(handle, tokens.detach().to(torch.float16).cpu().numpy(), allow_pickle=False)
        os.replace(temporary, path)

    def _evict(self) -> None:
        entries = []
        for path in self.directory.glob("*.npy"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries, key=lambda entry: entry[0]):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    def size_bytes(self) -> int:
        return (
            sum(path.stat().st_size for path in self.directory.glob("*.npy"))
            if self.directory.exists()
            else 0
        )


def vision_token_source(model: RetrievalModel, settings: Settings) -> FileVisionTokens:
    return (
        CachedVisionTokens(model, settings)
        if settings.vision_tokens == "cache"
        else FileVisionTokens(model, settings)
    )
