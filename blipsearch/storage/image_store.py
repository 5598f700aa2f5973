"""Where uploaded image bytes live: a local folder, or any fsspec store every server shares.

Before several replicas, an upload's catalog `source` was the absolute path of its file under one
server's `data_dir/uploads/`, so no other machine could read it. Now an upload's source names a
key in the configured store, `upload:<ab>/<sha256[:32]>-<random>.<ext>`, and every server opens it
through `image_store` (unset: `data_dir/uploads`, exactly the folder layout of before; a
directory; or an fsspec URL such as `s3://bucket/prefix`).

Keys are made here and only ever read back from the catalog, so a key is accepted only in the exact
shape this module writes: two hex digits, a slash, 32 hex digits, a dash, 8 hex digits and one of
the upload suffixes. A `..`, an absolute path, another scheme or a stray character cannot pass,
so no key reaches outside its store.

A local folder keeps the crash safety of before: written under a temporary name, fsynced, renamed
and the folder fsynced, all before the catalog row commits. An object store (S3 and the like)
makes a PUT visible whole or not at all, so the object is written under its final key at once.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from blipsearch.errors import ConfigError, InvalidInputError
from blipsearch.settings import Settings

UPLOAD_ORIGIN = "api:uploads"
"""The `origin` of every item the API stored; only such items may name the image store."""
UPLOAD_PREFIX = "upload:"
SUFFIXES = (".jpg", ".png", ".webp", ".gif", ".bmp", ".tif", ".img")
_KEY = re.compile(r"[0-9a-f]{2}/[0-9a-f]{32}-[0-9a-f]{8}\.(?:jpg|png|webp|gif|bmp|tif|img)")
_TEMPORARY = ".tmp"


def check_key(key: str) -> str:
    """The key if it has the one shape `new_key` makes; anything else is refused without echoing it."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise InvalidInputError("Not an image store key.")
    return key


def new_key(digest: str, suffix: str) -> str:
    """Each upload its own key: identical bytes uploaded twice are two items with two files."""
    if suffix not in SUFFIXES:
        suffix = ".img"
    return check_key(f"{digest[:2]}/{digest[:32]}-{os.urandom(4).hex()}{suffix}")


def upload_key(source: str) -> str | None:
    """The store key an upload's source names, or None if it names none.

    Compatibility: uploads stored before the image store kept their absolute path under
    `data_dir/uploads/` as source. The layout below that folder is the key layout, so the last
    two components of such a path are its key, whatever the data directory was called then.
    """
    if source.startswith(UPLOAD_PREFIX):
        key = source[len(UPLOAD_PREFIX) :]
    elif source.startswith("/"):
        parts = source.split("/")
        key = "/".join(parts[-2:]) if len(parts) >= 3 and parts[-3] == "uploads" else ""
    else:
        return None
    return key if _KEY.fullmatch(key) else None


@dataclass(frozen=True)
class StoredEntry:
    """One object found in a store while looking for crash litter."""

    key: str
    """Relative to the store's root; listed, never taken from a caller."""
    mtime: float | None
    """Seconds since the epoch; None where the store does not say (never judged old)."""
    temporary: bool = False

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class ImageStore(ABC):
    """Upload bytes by key. `shared`: other machines may write here (so no local lock can tell
    whether another server is storing an upload right now)."""

    shared: bool

    @abstractmethod
    def put(self, data: bytes, digest: str, suffix: str) -> str:
        """Store durably, then return the new key; the caller commits the row only afterwards."""

    @abstractmethod
    def read(self, key: str, *, max_bytes: int) -> bytes:
        """The bytes: FileNotFoundError if gone, InvalidInputError if over `max_bytes` or not a file."""

    @abstractmethod
    def size(self, key: str) -> int:
        """Bytes stored under the key without reading them (FileNotFoundError if gone)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove if present; a second delete is no error."""

    @abstractmethod
    def entries(self) -> Iterator[StoredEntry]:
        """Everything stored, litter included, for the crash-litter check."""

    @abstractmethod
    def remove(self, entry: StoredEntry) -> None:
        """Remove litter found by `entries` (whose names need not be keys)."""

    @abstractmethod
    def describe(self) -> str:
        """Where, for logs and `index verify`: never credentials."""


class LocalImageStore(ImageStore):
    """A folder: `<root>/<ab>/<key name>`, written aside, fsynced and renamed."""

    def __init__(self, root: Path, *, shared: bool = False) -> None:
        self.root = root
        self.shared = shared

    def put(self, data: bytes, digest: str, suffix: str) -> str:
        key = new_key(digest, suffix)
        path = self.root / key
        folder = path.parent
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{path.name}{_TEMPORARY}"
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_directory(folder)
        return key

    def read(self, key: str, *, max_bytes: int) -> bytes:
        path = self._checked(key)
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise
        except OSError:
            raise InvalidInputError("The stored image cannot be opened.") from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise InvalidInputError("The stored image is not a regular file.")
        with os.fdopen(descriptor, "rb") as handle:
            return _bounded(handle.read(max_bytes + 1), max_bytes)

    def size(self, key: str) -> int:
        info = os.lstat(self._checked(key))
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError("The stored image is not a regular file.")
        return info.st_size

    def delete(self, key: str) -> None:
        (self.root / check_key(key)).unlink(missing_ok=True)

    def entries(self) -> Iterator[StoredEntry]:
        if not self.root.is_dir():
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()):
            for path in sorted(folder.iterdir()):
                if not path.is_file() or path.is_symlink():
                    continue
                try:
                    mtime = path.stat().st_mtime
                except FileNotFoundError:  # committed-and-deleted meanwhile, or renamed
                    continue
                yield StoredEntry(f"{folder.name}/{path.name}", mtime, path.name.endswith(_TEMPORARY))

    def remove(self, entry: StoredEntry) -> None:
        _check_listed(entry)
        (self.root / entry.key).unlink(missing_ok=True)

    def describe(self) -> str:
        return str(self.root)

    def _checked(self, key: str) -> Path:
        """The key's path, refused if a link anywhere below the root leads elsewhere."""
        path = self.root / check_key(key)
        if Path(os.path.realpath(path)) != Path(os.path.realpath(self.root)) / key:
            if not os.path.lexists(path):
                raise FileNotFoundError(errno.ENOENT, "not in the image store")
            raise InvalidInputError("The stored image is a link, not a file.")
        return path


class FsspecImageStore(ImageStore):
    """Any fsspec filesystem (S3 through s3fs, GCS, memory:// in tests), keys below a prefix."""

    shared = True

    def __init__(self, url: str, **options: Any) -> None:
        import fsspec

        try:
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"image_store {_redacted(url)} cannot be opened: {exc}") from None
        self.root = root.rstrip("/")
        self.url = _redacted(url)

    def put(self, data: bytes, digest: str, suffix: str) -> str:
        key = new_key(digest, suffix)
        self.fs.pipe_file(self._path(key), data)  # an object PUT: visible whole or not at all
        return key

    def read(self, key: str, *, max_bytes: int) -> bytes:
        path = self._path(check_key(key))
        try:
            info = self.fs.info(path)
            if info.get("type") != "file":
                raise InvalidInputError("The stored image is not a file.")
            if int(info.get("size") or 0) > max_bytes:
                raise InvalidInputError(f"The stored image is over the {max_bytes}-byte limit.")
            data = self.fs.cat_file(path, start=0, end=max_bytes + 1)
        except (InvalidInputError, FileNotFoundError):
            raise
        except Exception as exc:  # a remote store raises its own classes
            raise OSError(f"image store read failed ({type(exc).__name__})") from None
        return _bounded(bytes(data), max_bytes)

    def size(self, key: str) -> int:
        path = self._path(check_key(key))
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            raise
        except Exception as exc:  # a remote store raises its own classes
            raise OSError(f"image store read failed ({type(exc).__name__})") from None
        if info.get("type") != "file":
            raise InvalidInputError("The stored image is not a file.")
        return int(info.get("size") or 0)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(check_key(key)))

    def entries(self) -> Iterator[StoredEntry]:
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return
        for path, info in sorted(found.items()):
            relative = path[len(self.root) :].lstrip("/") if path.startswith(self.root) else ""
            if relative and info.get("type", "file") == "file":
                yield StoredEntry(relative, _mtime(info), relative.endswith(_TEMPORARY))

    def remove(self, entry: StoredEntry) -> None:
        _check_listed(entry)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(entry.key))

    def describe(self) -> str:
        return self.url

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key


def open_image_store(settings: Settings) -> ImageStore:
    """The store `image_store` names; one instance per location and data directory."""
    return _store(settings.image_store, settings.data_dir)


def default_folder(settings: Settings) -> Path:
    """Where uploads lived before `image_store`, and still do by default."""
    return settings.data_dir / "uploads"


@functools.lru_cache(maxsize=16)
def _store(location: str | None, data_dir: Path) -> ImageStore:
    if location is None:
        return LocalImageStore(data_dir / "uploads")
    scheme, separator, rest = location.partition("://")
    if not separator:
        folder = Path(location).expanduser()
        if not folder.is_absolute():
            raise ConfigError(
                "image_store must be an absolute directory or a URL such as s3://bucket/prefix."
            )
        return LocalImageStore(folder, shared=True)
    if scheme == "file":
        return LocalImageStore(Path("/" + rest.lstrip("/")), shared=True)
    return FsspecImageStore(location)


def _bounded(data: bytes, max_bytes: int) -> bytes:
    if not data:
        raise InvalidInputError("The stored image is empty.")
    if len(data) > max_bytes:
        raise InvalidInputError(f"The stored image is over the {max_bytes}-byte limit.")
    return data


def _check_listed(entry: StoredEntry) -> None:
    parts = entry.key.split("/")
    if entry.key.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\x00" in entry.key:
        raise InvalidInputError("Not an entry of this image store.")


def _mtime(info: dict[str, Any]) -> float | None:
    for field in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(field)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _redacted(url: str) -> str:
    """The URL without a `user:secret@` part, should someone put credentials in it."""
    scheme, separator, rest = url.partition("://")
    if separator and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{separator}{rest}"


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
