"""Which serving process this is, when `blipsearch serve --workers N` runs several.

Every worker answers reads and writes (writes are SQL transactions; each worker's indexes catch
up from the change log on its next query). Only the upkeep worker cleans the image store, commits
index checkpoints and runs ingest jobs: one process does each, so they never race. `/readyz`
names the worker, so clients and tests can tell them apart behind one port.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from blipsearch.search.rerank import DepthAgreement


@dataclass(frozen=True)
class WorkerRole:
    index: int = 0
    upkeep: bool = True
    """Image-store cleaning at start, background checkpoints, the ingest-job runner."""
    rerank_depth: DepthAgreement | None = None
    """How this worker's calibrated re-rank depth is agreed with the others (None: alone), so the
    same query is re-ranked as deep, and ordered the same, whichever worker answers it."""

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "pid": os.getpid(), "upkeep": self.upkeep}


SINGLE_PROCESS = WorkerRole()
