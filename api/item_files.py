"""Which item files the API serves, and what it checks on disk before it sends a byte.

An item's bytes leave the server only if the indexer decoded them as an allowed image (status
`indexed`); a failed item was never a picture, so its file is never served. Between indexing and
a request the file may have changed: it could have been swapped for a symlink to `/etc/passwd`.
So each request checks again, on the open file it then sends:

- the path still is what the item was keyed by: its canonical form (no link slipped in since);
  an upload is read through the image store by its key alone (storage/item_images.py), so it
  cannot name anything outside the store;
- an item that came from inside the ingest roots still resolves inside them;
- it is a regular file within `max_image_bytes` whose first bytes are the signature of the format
  the decoder recorded. Hashing every request would cost a full read; the signature costs 16
  bytes and is what stops a text file from going out as an image.

The answer carries the format's real media type, `nosniff`, and a `Content-Disposition` naming
a harmless `item-<id>.<ext>`: inline only for types browsers display as pictures, an attachment
otherwise, so nothing served can render as HTML.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from blipsearch.api.errors import ApiError
from blipsearch.errors import InvalidInputError
from blipsearch.settings import Settings
from blipsearch.storage.item_images import ItemImages, is_remote, is_upload
from blipsearch.storage.schema import Item, ItemStatus


@dataclass(frozen=True)
class ImageType:
    media_type: str
    extension: str
    signatures: tuple[bytes, ...]
    inline: bool
    """Browsers display it as a picture; anything else is sent as an attachment."""

    def matches(self, head: bytes) -> bool:
        if self.extension == "webp":
            return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
        return any(head.startswith(signature) for signature in self.signatures)


_JPEG = ImageType("image/jpeg", "jpg", (b"\xff\xd8\xff",), inline=True)
IMAGE_TYPES: dict[str, ImageType] = {
    "JPEG": _JPEG,
    "MPO": _JPEG,
    "PNG": ImageType("image/png", "png", (b"\x89PNG\r\n\x1a\n",), inline=True),
    "WEBP": ImageType("image/webp", "webp", (), inline=True),
    "GIF": ImageType("image/gif", "gif", (b"GIF87a", b"GIF89a"), inline=True),
    "BMP": ImageType("image/bmp", "bmp", (b"BM",), inline=True),
    "TIFF": ImageType("image/tiff", "tif", (b"II*\x00", b"MM\x00*"), inline=False),
}
"""By Pillow format name: the decoder's allowlist, nothing else."""
_HEAD_BYTES = 16
_CHUNK_BYTES = 256 * 1024


def image_type(item: Item) -> ImageType:
    """The item's image type, or 404 if the item is not a decoded, allowed image."""
    kind = IMAGE_TYPES.get(item.format or "")
    if item.status != ItemStatus.INDEXED.value or kind is None:
        raise ApiError(
            404, "image_unavailable", f"Item {item.id} has no image to serve (status {item.status})."
        )
    return kind


def content_disposition(item: Item, kind: ImageType) -> str:
    return f'{"inline" if kind.inline else "attachment"}; filename="item-{item.id}.{kind.extension}"'


@dataclass
class VerifiedFile:
    """An open, checked image file: send it from `handle`, never by reopening its path."""

    handle: BinaryIO
    size: int
    kind: ImageType

    def chunks(self) -> Iterator[bytes]:
        with self.handle:
            while chunk := self.handle.read(_CHUNK_BYTES):
                yield chunk

    def read(self) -> bytes:
        with self.handle:
            return self.handle.read(self.size + 1)[: self.size]


def open_verified(settings: Settings, item: Item) -> VerifiedFile:
    """The item's file, opened after every check in the module docstring, or an `ApiError`."""
    kind = image_type(item)
    if is_upload(item) or is_remote(item):
        return _from_store(settings, item, kind)
    path = _checked_path(settings, item)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise _missing(item) from None
    except OSError:  # a link put in place since the check (ELOOP), or unreadable
        raise _refused(item) from None
    handle = os.fdopen(descriptor, "rb")
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_size > settings.max_image_bytes:
            raise _refused(item)
        if not kind.matches(handle.read(_HEAD_BYTES)):
            raise _refused(item)
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return VerifiedFile(handle, info.st_size, kind)


def confirm_present(settings: Settings, item: Item) -> None:
    """`open_verified`'s answer without the bytes, where a cached thumbnail stands in for them.

    An upload is asked for its size only (one HEAD on an object store, not a GET of the image);
    bytes in the store are written by servers alone, under keys no one else chooses.
    """
    if is_remote(item):
        return  # a thumbnail made from fetched bytes that matched the stored hash; no host is asked
    if not is_upload(item):
        open_verified(settings, item).handle.close()
        return
    image_type(item)
    try:
        size = ItemImages(settings).upload_size(item)
    except FileNotFoundError:
        raise _missing(item) from None
    except (InvalidInputError, OSError):
        raise _refused(item) from None
    if size > settings.max_image_bytes:
        raise _refused(item)


def _from_store(settings: Settings, item: Item, kind: ImageType) -> VerifiedFile:
    """An upload, read whole (it is within `max_image_bytes`) from whichever store holds it, or an
    image fetched from its URL."""
    try:
        data = ItemImages(settings).read(item, max_bytes=settings.max_image_bytes)
    except FileNotFoundError:
        raise _missing(item) from None
    except (InvalidInputError, OSError):
        raise _refused(item) from None
    if not kind.matches(data[:_HEAD_BYTES]):
        raise _refused(item)
    return VerifiedFile(io.BytesIO(data), len(data), kind)


def _checked_path(settings: Settings, item: Item) -> Path:
    try:
        return ItemImages(settings).checked_path(item)
    except FileNotFoundError:
        raise _missing(item) from None
    except InvalidInputError:
        raise _refused(item) from None


def _missing(item: Item) -> ApiError:
    return ApiError(404, "image_missing", f"The image file of item {item.id} is no longer there.")


def _refused(item: Item) -> ApiError:
    """The file is no longer the image that was indexed; the reason stays in the server's hands."""
    return ApiError(
        404, "image_unavailable", f"The file of item {item.id} is no longer the image that was indexed."
    )
