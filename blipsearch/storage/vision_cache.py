"""The bounded on-disk store of ITM vision tokens, shared by the indexer (which fills it while it
embeds, at no extra model cost) and the query service (which reads it when re-ranking).

Files live under `data_dir/vision-cache/<model fingerprint>/`, one float16 `.npy` per item named
by item id and content hash, so a changed image is never scored with its old tokens; the least
recently used files are evicted beyond `vision_cache_bytes`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from blipsearch.settings import Settings

if TYPE_CHECKING:
    from blipsearch.models.retrieval import RetrievalModel

log = logging.getLogger(__name__)


class VisionTokenCache:
    def __init__(self, directory: Path, max_bytes: int, device: torch.device, dtype: torch.dtype) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.device = device
        self.dtype = dtype

    @classmethod
    def for_model(cls, settings: Settings, model: RetrievalModel) -> VisionTokenCache:
        """This model's cache under the configured data directory, returning its device and dtype."""
        directory = settings.data_dir / "vision-cache" / model.fingerprint
        return cls(directory, settings.vision_cache_bytes, model.device, model.dtype)

    def path(self, item_id: int, content_hash: str | None) -> Path:
        return self.directory / f"{item_id}-{(content_hash or 'nohash')[:16]}.npy"

    def read(self, item_id: int, content_hash: str | None) -> torch.Tensor | None:
        path = self.path(item_id, content_hash)
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
        return torch.from_numpy(array).to(self.device, self.dtype)

    def write(self, item_id: int, content_hash: str | None, tokens: torch.Tensor) -> int:
        """Store one item's tokens atomically; returns the bytes written."""
        if self.max_bytes <= 0:
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(item_id, content_hash)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            np.save(handle, tokens.detach().to(torch.float16).cpu().numpy(), allow_pickle=False)
            written = handle.tell()
        os.replace(temporary, path)
        return written

    def evict(self) -> None:
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

    def room_bytes(self) -> int:
        return self.max_bytes - self.size_bytes()

    def size_bytes(self) -> int:
        if not self.directory.exists():
            return 0
        return sum(path.stat().st_size for path in self.directory.glob("*.npy"))
