"""The image store API uploads are kept in, and the litter a crash leaves there.

An upload's bytes are stored (a local folder: temporary name, fsync, rename; an object store: one
PUT) before its catalog row commits, and a delete removes the row before the bytes, so a kill at
the wrong moment leaves an object no item names, or a `.tmp` file. Neither is ever read; they only
take space. A server cleans them at start, and `index verify` reports them.

Cleaning must not take the bytes of an upload another live server has stored but not committed
yet. With the default store (`data_dir/uploads`, one machine), every serving process holds a
shared `flock` on `uploads/.servers.lock` for its lifetime; a server that can take it exclusively
at start knows no other one is running and removes all the litter. A configured store
(`image_store`) may be shared by servers on other machines, which no local lock sees: there, and
whenever another local server runs, only litter older than `IN_FLIGHT_SECONDS` is removed: no
upload takes that long between storing its bytes and committing its row.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.image_store import (
    UPLOAD_ORIGIN,
    ImageStore,
    LocalImageStore,
    StoredEntry,
    open_image_store,
    upload_key,
)

log = logging.getLogger(__name__)

__all__ = ["IN_FLIGHT_SECONDS", "UPLOAD_ORIGIN", "Litter", "LitterCheck", "UploadFolder", "check_litter"]

IN_FLIGHT_SECONDS = 3600.0
LOCK_NAME = ".servers.lock"


@dataclass
class Litter:
    """Stored objects that no catalog item names, and unfinished temporary files."""

    orphans: list[StoredEntry] = field(default_factory=list)
    temporary: list[StoredEntry] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.orphans) + len(self.temporary)


class UploadFolder:
    """A serving process's hold on the image store: litter cleaning at start, the local lock."""

    def __init__(self, data_dir: Path, store: ImageStore | None = None) -> None:
        self.root = data_dir / "uploads"
        self.store = store or LocalImageStore(self.root)
        self._lock_fd: int | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> UploadFolder:
        return cls(settings.data_dir, open_image_store(settings))

    @property
    def _lockable(self) -> bool:
        return isinstance(self.store, LocalImageStore) and not self.store.shared

    def litter(
        self, catalog: Catalog, *, older_than: float | None = None, now: float | None = None
    ) -> Litter:
        """What a crash left behind; with `older_than` (seconds), only objects at least that old.

        An object whose age the store does not report is never judged old.
        """
        found = Litter()
        known = {upload_key(source) for source in catalog.sources_in_origin(UPLOAD_ORIGIN)}
        cutoff = (now if now is not None else time.time()) - older_than if older_than is not None else None
        for entry in self.store.entries():
            if cutoff is not None and (entry.mtime is None or entry.mtime > cutoff):
                continue
            if entry.temporary:
                found.temporary.append(entry)
            elif entry.key not in known:
                found.orphans.append(entry)
        return found

    def servers_running(self) -> bool:
        """Whether a serving process may be storing uploads (so a young orphan may be in flight).

        A shared store cannot tell: it answers yes.
        """
        if not self._lockable:
            return True
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

    def open(self, catalog: Catalog, *, now: float | None = None) -> Litter:
        """Join the serving processes and remove the litter that is certainly not in flight.

        Returns what was removed.
        """
        if not self._lockable:
            litter = self.litter(catalog, older_than=IN_FLIGHT_SECONDS, now=now)
            self._remove(litter)
            return litter
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        try:
            litter = self.litter(catalog, older_than=None if alone else IN_FLIGHT_SECONDS, now=now)
            self._remove(litter)
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)  # from exclusive: a conversion; otherwise waits for none
            self._lock_fd = fd
        return litter

    def join(self) -> None:
        """Join the serving processes without cleaning: a server that leaves cleaning to another
        (a `--workers` worker other than the upkeep one) still holds the shared lock, so that the
        cleaner, restarting, knows uploads may be in flight."""
        if not self._lockable:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a starting cleaner holds it exclusively
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _remove(self, litter: Litter) -> None:
        for entry in [*litter.orphans, *litter.temporary]:
            self.store.remove(entry)
        if litter:
            log.warning(
                "removed objects left in the image store by a crash",
                extra={
                    "store": self.store.describe(),
                    "orphans": len(litter.orphans),
                    "temporary": len(litter.temporary),
                },
            )


@dataclass
class LitterCheck:
    """What `index verify` reports about the image store: counts, problems and notes."""

    orphans: int
    temporary: int
    problems: list[str]
    notes: list[str]


def check_litter(uploads: UploadFolder, catalog: Catalog, *, now: float | None = None) -> LitterCheck:
    """Litter is harmless but reported; the next server start removes it.

    Where servers may be running (another local one holds the lock, or the store is shared with
    other machines), objects younger than `IN_FLIGHT_SECONDS` are not judged: they may be uploads
    in flight.
    """
    serving = uploads.servers_running()
    litter = uploads.litter(catalog, older_than=IN_FLIGHT_SECONDS if serving else None, now=now)
    problems = []
    if litter.orphans:
        names = ", ".join(entry.name for entry in litter.orphans[:5])
        problems.append(
            f"uploads: {len(litter.orphans)} files no catalog item names ({names}"
            f"{', ...' if len(litter.orphans) > 5 else ''}); the next server start removes them"
        )
    if litter.temporary:
        problems.append(
            f"uploads: {len(litter.temporary)} unfinished temporary files; the next server start removes them"
        )
    notes = []
    if serving:
        why = "the image store is shared" if uploads.store.shared else "a server is running"
        notes.append(f"uploads: {why}, so files younger than an hour were not judged (uploads in flight)")
    return LitterCheck(len(litter.orphans), len(litter.temporary), problems, notes)
