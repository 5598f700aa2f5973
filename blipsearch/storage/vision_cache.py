"""The bounded on-disk store of ITM vision tokens, shared by the indexer (which fills it while it
embeds, at no extra model cost) and the query service (which reads it when re-ranking).

Files live under `data_dir/vision-cache/<model fingerprint>/`, one float16 `.npy` per item named
by item id and content hash, so a changed image is never scored with its old tokens; the least
recently used files are evicted beyond `vision_cache_bytes`. A file appears under its name only
complete (written aside, then renamed), so a reader never sees half an entry, and an unreadable
one is deleted and recomputed.

Each process keeps an index of the files (size, recency) from one directory scan, updated by its
own reads and writes, so neither a miss nor an eviction scans the directory. Other processes'
writes and reads reach the index when eviction rescans, once the last scan is older than
`RESCAN_SECONDS`: until then the files on disk may exceed the bound by what other processes wrote
since. File modification times carry recency between processes (a read touches its file).
Eviction goes down to `LOW_WATER` of the bound, so that one eviction makes room for many writes.

Why not `diskcache` (an SQLite index over the same kind of files): bench/caches.py measures both.
Its writes are faster (small values go inline into SQLite, no file to create), but its reads, the
query path, are slower (every LRU read is an SQLite write); it unpickles what it finds unless
given a custom disk, and it has had no release since 2023.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from blipsearch.settings import Settings

if TYPE_CHECKING:
    from blipsearch.models.retrieval import RetrievalModel

log = logging.getLogger(__name__)

SUFFIX = ".npy"
TEMPORARY_SUFFIX = ".tmp"


class VisionTokenCache:
    LOW_WATER = 0.9
    """Eviction stops at this fraction of the bound, leaving room for the next writes."""
    RESCAN_SECONDS = 30.0
    """How stale the index may get before eviction rescans for other processes' writes."""
    STALE_TEMPORARY_SECONDS = 600.0
    """A temporary file this old is left by a writer that died mid-write; a scan deletes it."""

    def __init__(self, directory: Path, max_bytes: int, device: torch.device, dtype: torch.dtype) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.device = device
        self.dtype = dtype
        self._sizes: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._total = 0
        self._scanned_at: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_model(cls, settings: Settings, model: RetrievalModel) -> VisionTokenCache:
        """This model's cache under the configured data directory, returning its device and dtype."""
        directory = settings.data_dir / "vision-cache" / model.fingerprint
        return cls(directory, settings.vision_cache_bytes, model.device, model.dtype)

    def path(self, item_id: int, content_hash: str | None) -> Path:
        return self.directory / f"{item_id}-{(content_hash or 'nohash')[:16]}{SUFFIX}"

    def read(self, item_id: int, content_hash: str | None) -> torch.Tensor | None:
        path = self.path(item_id, content_hash)
        try:
            with open(path, "rb") as handle:
                array = np.load(handle, allow_pickle=False)
                size = os.fstat(handle.fileno()).st_size
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:  # a torn or foreign file: recompute it
            log.warning("vision cache entry unreadable", extra={"path": str(path), "reason": str(exc)})
            path.unlink(missing_ok=True)
            self._forget(path.name)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recency for the other processes' scans
        self._remember(path.name, size)
        return torch.from_numpy(array).to(self.device, self.dtype)

    def write(self, item_id: int, content_hash: str | None, tokens: torch.Tensor) -> int:
        """Store one item's tokens atomically; returns the bytes written."""
        if self.max_bytes <= 0:
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(item_id, content_hash)
        buffer = io.BytesIO()
        np.save(buffer, tokens.detach().to(torch.float16).cpu().numpy(), allow_pickle=False)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TEMPORARY_SUFFIX}")
        with open(temporary, "wb") as handle:
            handle.write(buffer.getbuffer())
        os.replace(temporary, path)
        written = buffer.getbuffer().nbytes
        self._remember(path.name, written)
        return written

    def evict(self) -> None:
        """Delete the least recently used entries while the cache is over its bound."""
        with self._lock:
            if self._scanned_at is None or time.monotonic() - self._scanned_at > self.RESCAN_SECONDS:
                self._scan()
            if self._total <= self.max_bytes:
                return
            target = int(self.max_bytes * self.LOW_WATER)
            while self._sizes and self._total > target:
                name, size = self._sizes.popitem(last=False)
                (self.directory / name).unlink(missing_ok=True)
                self._total -= size

    def room_bytes(self) -> int:
        return self.max_bytes - self.size_bytes()

    def size_bytes(self) -> int:
        """The bytes on disk now, from a fresh scan (other processes may have written)."""
        with self._lock:
            self._scan()
            return self._total

    def _scan(self) -> None:
        entries: list[tuple[float, str, int]] = []
        now = time.time()
        try:
            listing = list(os.scandir(self.directory))
        except FileNotFoundError:
            listing = []
        for entry in listing:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                entries.append((stat.st_mtime, entry.name, stat.st_size))
            elif entry.name.endswith(TEMPORARY_SUFFIX) and now - stat.st_mtime > self.STALE_TEMPORARY_SECONDS:
                Path(entry.path).unlink(missing_ok=True)
        entries.sort()
        self._sizes = OrderedDict((name, size) for _, name, size in entries)
        self._total = sum(size for _, _, size in entries)
        self._scanned_at = time.monotonic()

    def _remember(self, name: str, size: int) -> None:
        with self._lock:
            self._total += size - self._sizes.pop(name, 0)
            self._sizes[name] = size

    def _forget(self, name: str) -> None:
        with self._lock:
            self._total -= self._sizes.pop(name, 0)
