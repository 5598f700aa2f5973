"""The folder API uploads are kept in, and the litter a crash leaves there.

An upload's file is written (temporary name, fsync, rename) before its catalog row commits, and
a delete removes the row before the file, so a kill at the wrong moment leaves a file no item
names, or a `.tmp` file. Neither is ever read; they only take space. A server cleans them at
start, and `index verify` reports them.

Cleaning must not take the file of an upload another live server has stored but not committed
yet. Every serving process holds a shared `flock` on `uploads/.servers.lock` for its lifetime; a
server that can take it exclusively at start knows no other one is running and removes all the
litter. Otherwise only litter older than `IN_FLIGHT_SECONDS` is removed: no upload takes that
long between storing its file and committing its row.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from blipsearch.storage.catalog import Catalog

log = logging.getLogger(__name__)

UPLOAD_ORIGIN = "api:uploads"
IN_FLIGHT_SECONDS = 3600.0
LOCK_NAME = ".servers.lock"


@dataclass
class Litter:
    """Files in the uploads folder that no catalog item names, and unfinished temporary files."""

    orphans: list[Path] = field(default_factory=list)
    temporary: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.orphans) + len(self.temporary)


class UploadFolder:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "uploads"
        self._lock_fd: int | None = None

    def store(self, data: bytes, digest: str, suffix: str) -> Path:
        """Each upload gets its own file (identical bytes uploaded twice are two items)."""
        folder = self.root / digest[:2]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{digest[:32]}-{os.urandom(4).hex()}{suffix}"
        temporary = folder / f".{path.name}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_directory(folder)
        return path

    def owns(self, source: str) -> bool:
        return Path(source).parent.parent == self.root

    def litter(self, catalog: Catalog, *, older_than: float | None = None) -> Litter:
        """What a crash left behind; with `older_than` (seconds), only files at least that old."""
        found = Litter()
        if not self.root.is_dir():
            return found
        known = {_key(Path(source)) for source in catalog.sources_in_origin(UPLOAD_ORIGIN)}
        cutoff = time.time() - older_than if older_than is not None else None
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(folder.iterdir()):
                if not path.is_file():
                    continue
                try:
                    if cutoff is not None and path.stat().st_mtime > cutoff:
                        continue
                except FileNotFoundError:  # committed-and-deleted meanwhile, or renamed
                    continue
                if path.name.endswith(".tmp"):
                    found.temporary.append(path)
                elif _key(path) not in known:
                    found.orphans.append(path)
        return found

    def servers_running(self) -> bool:
        """Whether a serving process holds the folder (so a young orphan may be an upload in flight)."""
        if not (self.root / LOCK_NAME).exists():
            return False
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's lock
        return False

    def open(self, catalog: Catalog) -> Litter:
        """Join the serving processes and remove the litter that is certainly not in flight.

        Returns what was removed.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        try:
            litter = self.litter(catalog, older_than=None if alone else IN_FLIGHT_SECONDS)
            for path in [*litter.orphans, *litter.temporary]:
                path.unlink(missing_ok=True)
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)  # from exclusive: a conversion; otherwise waits for none
            self._lock_fd = fd
        if litter:
            log.warning(
                "removed files left in uploads/ by a crash",
                extra={"orphans": len(litter.orphans), "temporary": len(litter.temporary)},
            )
        return litter

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _key(path: Path) -> tuple[str, str]:
    """An upload by its sub-folder and name: unique, and the same however data_dir was spelt."""
    return path.parent.name, path.name


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
