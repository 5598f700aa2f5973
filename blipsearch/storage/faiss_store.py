"""The FAISS backend of `VectorStore`: generations in the data directory, caught up from the change log.

This is the embedded default and keeps the rules `live.py` and `snapshots.py` describe: a server
serves the last committed generation plus the catalog changes after it, and switches to a newer
generation another writer committed (checked at most every `GENERATION_CHECK_SECONDS`). Writers
coordinate through the data directory's file lock. Catching up mutates the indexes in place, so
searches and catch-up share one lock (`searching`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from blipsearch.errors import IndexLockedError
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.index_spec import RequestedKind
from blipsearch.storage.live import IMAGES, TEXTS, IndexSet, LiveIndexes, OpenReport
from blipsearch.storage.lock import WriterLock
from blipsearch.storage.vector_store import Backend, RunSummary
from blipsearch.storage.vectors import VectorIndex

log = logging.getLogger(__name__)

GENERATION_CHECK_SECONDS = 2.0


class FaissStore:
    """The image and text FAISS indexes of one data directory for one model."""

    backend: Backend = "faiss"

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        fingerprint: str,
        dim: int,
        writer: bool,
        requested_kind: RequestedKind | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`writer`: an indexing run (or CapFilt) that commits what it opens; a server opens as a
        reader and commits only through `checkpoint`. `clock` paces the generation check."""
        self.settings = settings
        self.catalog = catalog
        self.fingerprint = fingerprint
        self.dim = dim
        self.writer = writer
        self.clock = clock
        self.index_set = IndexSet(
            settings.data_dir,
            catalog,
            fingerprint=fingerprint,
            dim=dim,
            requested_kind=requested_kind or settings.index_kind,
            memory_budget=settings.index_memory_budget,
            search_device=settings.vector_search_device,
        )
        self._lock = threading.RLock()
        self.live: LiveIndexes
        self.opened: OpenReport
        self.live, self.opened = self.index_set.open(writer=writer)
        self._generation_checked = clock()

    @property
    def images(self) -> VectorIndex:
        return self.live.images

    @property
    def texts(self) -> VectorIndex:
        return self.live.texts

    @property
    def pending_changes(self) -> int:
        return self.live.pending_changes

    @contextmanager
    def searching(self) -> Iterator[None]:
        with self._lock:
            yield

    def refresh(self) -> int:
        with self._lock:
            return self._sync(reload_check=False)

    def checkpoint(self) -> bool:
        """Commit a generation if searches see changes no generation has; see `VectorStore`."""
        if self.writer:  # a writer is opened under the writer lock (see `store_choice.writer_lock`)
            with self._lock:
                return self._commit_pending()
        try:
            lock = WriterLock(self.settings.data_dir, "server checkpoint")
            lock.acquire()
        except IndexLockedError:
            return False
        try:
            with self._lock:
                self._sync(reload_check=True)  # never commit over a generation another writer made
                return self._commit_pending()
        finally:
            lock.release()

    def _commit_pending(self) -> bool:
        if not self.live.pending_changes:
            return False
        self.index_set.commit(self.live)
        log.info("index checkpoint committed", extra={"generations": dict(self.live.generations)})
        return True

    def _sync(self, *, reload_check: bool) -> int:
        """Catch up with the catalog, first switching to a newer committed generation if there is one.

        A writer elsewhere may have rebuilt an index (a new kind, compacted tombstones): its
        generation is loaded without a restart. A writer never needs the check: it made them all.
        """
        now = self.clock()
        due = reload_check or now - self._generation_checked >= GENERATION_CHECK_SECONDS
        if due and not self.writer:
            self._generation_checked = now
            committed = {
                name: manifest.generation
                for name, manifest in self.index_set.manifests().items()
                if manifest is not None
            }
            if any(committed.get(name, 0) > self.live.generations.get(name, 0) for name in committed):
                self.live, _ = self.index_set.open(writer=False)
                log.info("loaded a new index generation", extra={"generations": committed})
        return self.live.catch_up(self.catalog)

    def finish_run(self) -> RunSummary:
        summary = RunSummary(rebuilt=dict(self.opened.rebuilt))
        with self._lock:
            self.live.catch_up(self.catalog)
            reason = self.index_set.needs_rebuild(self.live)
            if reason:
                log.info("rebuilding indexes", extra={"reason": reason})
                summary.rebuilt["images+texts"] = reason
                self.live = self.index_set.rebuild()
            elif self.live.pending_changes or self.opened.rebuilt:
                self.index_set.commit(self.live)
            summary.generation = self.live.generations.get(IMAGES, 0)
            summary.indexed_total = len(self.live.images)
        return summary

    def rebuild(self) -> dict[str, Any]:
        with self._lock:
            self.live = self.index_set.rebuild()
            live = self.live
        return {
            "backend": self.backend,
            "generation": dict(live.generations),
            "images": {"kind": live.images.spec.kind, "vectors": len(live.images)},
            "texts": {"kind": live.texts.spec.kind, "vectors": len(live.texts)},
            "last_change_id": live.last_change_id,
            "model_fingerprint": live.fingerprint,
        }

    def state(self) -> dict[str, Any]:
        live = self.live
        return {
            "backend": self.backend,
            "items": len(live.images),
            "texts": len(live.texts),
            "generation": dict(live.generations),
            "last_change_id": live.last_change_id,
            "kinds": {IMAGES: live.images.spec.kind, TEXTS: live.texts.spec.kind},
        }

    def close(self) -> None:
        """Nothing to release: the indexes are memory, the catalog is closed by its owner."""
