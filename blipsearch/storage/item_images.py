"""An item's image bytes, wherever its source says they are: a file the indexer read, or the image store.

Every reader of an item's picture (the API's image and thumbnail routes, ITM re-ranking, captioning,
CapFilt) goes through `ItemImages`, so an upload stored by one replica is read by any other from the
shared store, and never from a path of the machine that took it.

The rule for sources:

- an item with origin `api:uploads` names a store key (`upload:<key>`), or, if it was uploaded
  before the image store existed, its old absolute path under `data_dir/uploads/`. An old path is
  read as its key from this server's `data_dir/uploads/` first and from the configured store
  second, so copying that folder's tree into the store shares old uploads too;
- an item a manifest named by URL is fetched again through `remote_fetch` (the same host guard,
  limits and retries as the indexer) and used only if its bytes still hash to the stored hash;
- any other item names the file the indexer read, by its canonical path. It is read only while
  that path still is canonical (no symlink slipped in since indexing) and, for an item that came
  from inside the ingest roots, still lies inside them; the same checks the API made alone before,
  so a caption or a re-ranking never looks at a file outside the roots either. A source that
  looks like a store key but did not come from an upload is refused: nothing but the API puts
  bytes in the store.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.images import decode_image, read_image_file
from blipsearch.paths import IngestRoots, canonical_path
from blipsearch.remote_fetch import FetchOnDemand
from blipsearch.settings import Settings
from blipsearch.storage.image_store import (
    UPLOAD_ORIGIN,
    UPLOAD_PREFIX,
    ImageStore,
    LocalImageStore,
    default_folder,
    open_image_store,
    upload_key,
)
from blipsearch.storage.schema import Item

T = TypeVar("T")


def is_remote(item: Item) -> bool:
    """An image a manifest named by URL: read through the fetch guard, never as a path."""
    return not is_upload(item) and "://" in item.source


def is_upload(item: Item) -> bool:
    """An API upload, read from the image store by key; anything else is an ingested file on disk.
    A source that names the store is one too, whatever its origin says, so it is never a path."""
    return item.origin == UPLOAD_ORIGIN or item.source.startswith(UPLOAD_PREFIX)


class ItemImages:
    def __init__(self, settings: Settings, store: ImageStore | None = None) -> None:
        self.store = store or open_image_store(settings)
        self.legacy = None if settings.image_store is None else LocalImageStore(default_folder(settings))
        self.roots = IngestRoots(settings.ingest_roots)
        self.fetch = FetchOnDemand(settings)

    def read(self, item: Item, *, max_bytes: int, name: str | None = None) -> bytes:
        """The whole file, within `max_bytes`: FileNotFoundError if gone, InvalidInputError if refused."""
        if is_remote(item):
            return self._fetched(item, max_bytes)
        if not is_upload(item):
            path = self.checked_path(item)
            return read_image_file(path, max_bytes=max_bytes, name=name or item.source)
        return self._first(item, lambda store, key: store.read(key, max_bytes=max_bytes))

    def _fetched(self, item: Item, max_bytes: int) -> bytes:
        """Fetched again (the guard's hosts, limits and retries), and only if still the bytes indexed."""
        data = self.fetch(item.source, max_bytes)
        if item.content_hash and hashlib.sha256(data).hexdigest() != item.content_hash:
            raise InvalidInputError(f"The image at the URL of item {item.id} is no longer the one indexed.")
        return data

    def upload_size(self, item: Item) -> int:
        """An upload's stored size, without reading it: FileNotFoundError if gone."""
        return self._first(item, lambda store, key: store.size(key))

    def checked_path(self, item: Item) -> Path:
        """An ingested item's file, if it still is the one indexed: FileNotFoundError if gone,
        InvalidInputError if something else stands there now."""
        stored = Path(item.source)
        if not stored.is_absolute():
            raise InvalidInputError(f"Item {item.id} names no absolute path.")
        canonical = canonical_path(stored)
        if canonical != stored:
            if not os.path.lexists(stored):
                raise FileNotFoundError(errno.ENOENT, f"the file of item {item.id} is gone")
            raise InvalidInputError(f"A link now stands where item {item.id}'s file was indexed.")
        from_roots = self.roots and item.origin and self.roots.contains(canonical_path(item.origin))
        if from_roots and not self.roots.contains(canonical):
            raise InvalidInputError(f"The file of item {item.id} now lies outside the ingest roots.")
        return canonical

    def open(
        self,
        item: Item,
        *,
        max_bytes: int,
        max_pixels: int,
        at_least: tuple[int, int] | None = None,
        name: str | None = None,
    ) -> Image.Image:
        """Read and decode to RGB with both limits, like `images.open_image` for a path."""
        shown = name or (item.source if item.origin != UPLOAD_ORIGIN else f"item {item.id}")
        data = self.read(item, max_bytes=max_bytes, name=shown)
        return decode_image(data, max_pixels=max_pixels, name=shown, at_least=at_least).image

    def _first(self, item: Item, action: Callable[[ImageStore, str], T]) -> T:
        """`action` on the first store that holds the upload's key (see the module docstring)."""
        key = upload_key(item.source) if item.origin == UPLOAD_ORIGIN else None
        if key is None:
            raise InvalidInputError(f"Item {item.id} names no image the store holds.")
        if self.legacy is not None and not item.source.startswith(UPLOAD_PREFIX):
            try:
                return action(self.legacy, key)
            except FileNotFoundError:
                pass  # copied into the shared store since
        return action(self.store, key)

    def delete(self, item: Item) -> None:
        """Remove an upload's bytes (after its row: a crash in between leaves litter, never a hole)."""
        key = upload_key(item.source) if item.origin == UPLOAD_ORIGIN else None
        if key is None:
            return
        self.store.delete(key)
        if self.legacy is not None and not item.source.startswith(UPLOAD_PREFIX):
            self.legacy.delete(key)
