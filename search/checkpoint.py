"""Background checkpoints of the API's writes: a new index generation after N changes or T seconds.

Uploads, edits and deletes through the API are committed to SQL before they are answered, and
applied to the served indexes in memory. Until a generation is committed they are replayed from
the change log at every start; the checkpointer bounds that replay to `api_checkpoint_changes`
items or `api_checkpoint_seconds` of work, whichever comes first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from blipsearch.search.service import SearchService

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(
        self,
        service: SearchService,
        *,
        changes: int,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.changes = changes
        self.seconds = seconds
        self.clock = clock
        self.committed = 0
        """Generations this checkpointer committed (for the log and tests)."""
        self._pending_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self) -> bool:
        """Enough uncommitted changes, or the oldest of them waited long enough."""
        pending = self.service.store.pending_changes
        if not pending:
            self._pending_since = None
            return False
        now = self.clock()
        if self._pending_since is None:
            self._pending_since = now
        return pending >= self.changes or now - self._pending_since >= self.seconds

    def tick(self) -> bool:
        """Catch up with the catalog and commit if due; True if a generation was committed."""
        self.service.refresh()
        if not self.due() or not self.service.checkpoint():
            return False
        self._pending_since = None
        self.committed += 1
        return True

    def start(self) -> Checkpointer:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="index-checkpoints", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread, then commit what is left: a clean shutdown leaves nothing to replay."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.service.checkpoint()
        except Exception:
            log.exception("index checkpoint at shutdown failed")

    def _loop(self) -> None:
        poll = min(1.0, self.seconds / 2)
        while not self._stop.wait(poll):
            try:
                self.tick()
            except Exception:  # a checkpoint lost is retried at the next poll; the thread lives on
                log.exception("index checkpoint failed")
