"""The one interface every stage uses for vectors, whichever engine holds them.

Two backends sit behind it, chosen by the `vector_store` setting:

* `faiss` (`faiss_store.py`): FAISS indexes in the data directory, committed as generations and
  caught up from the catalog's change log. Embedded, fastest for one machine, and the default.
* `pgvector` (`pgvector_store.py`): the vectors in the catalog's own PostgreSQL tables, written
  in the same transaction as the item rows, searched with pgvector's HNSW indexes. Nothing lives
  on the local disk, so any number of servers on one `database_url` serve the same state.

`auto` picks pgvector when the catalog is PostgreSQL with the extension and its tables, FAISS
otherwise. The service, the indexer, the API and `index verify/status/rebuild` talk only to
`VectorStore`; they never learn which engine answers.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

VectorStoreSetting = Literal["auto", "faiss", "pgvector"]
Backend = Literal["faiss", "pgvector"]


class VectorCollection(Protocol):
    """One side of a store for one model: the image vectors, or the text vectors."""

    def search(
        self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product of unit vectors: (scores [n, k], ids [n, k]), best first.

        Padded with -inf and -1 where fewer than k exist. With `allowed_ids`, only those ids;
        a filter never silently shortens the list: when min(k, admitted) vectors exist, that
        many come back.
        """
        ...

    def vector(self, vector_id: int) -> np.ndarray:
        """The stored float32 vector of one id; KeyError when the collection lacks it."""
        ...

    def __len__(self) -> int: ...


@dataclass
class RunSummary:
    """What closing an indexing run did to the store (the indexer's report shows it)."""

    generation: int = 0
    """FAISS: the committed generation; pgvector: 0 (nothing is versioned apart from SQL)."""
    indexed_total: int = 0
    rebuilt: dict[str, str] = field(default_factory=dict)
    """Which part was rebuilt and why."""


class VectorStore(Protocol):
    """The image and text vectors of one catalog for one model, as a search or a writer sees them."""

    backend: Backend
    fingerprint: str
    dim: int

    @property
    def images(self) -> VectorCollection: ...

    @property
    def texts(self) -> VectorCollection: ...

    @property
    def pending_changes(self) -> int:
        """Changes searches already see that a restart would have to replay (0: none, or never)."""
        ...

    def searching(self) -> AbstractContextManager[None]:
        """Held around a refresh and the searches that must see the same state: a lock where catching
        up changes an index in place (FAISS), nothing where every query is its own snapshot."""
        ...

    def refresh(self) -> int:
        """Make searches see every catalog write committed so far; returns the items that changed."""
        ...

    def checkpoint(self) -> bool:
        """Persist what searches see, so a restart need not replay it; True if anything was written.

        Takes the writer lock without waiting: when another writer holds it, that writer's own
        checkpoints cover these changes, and this returns False.
        """
        ...

    def finish_run(self) -> RunSummary:
        """Close an indexing run (caller holds `store_choice.writer_lock`): compact or rebuild where the rules
        say so, else checkpoint."""
        ...

    def rebuild(self) -> dict[str, Any]:
        """Rebuild from the embeddings in SQL alone (caller holds `store_choice.writer_lock`): JSON report."""
        ...

    def state(self) -> dict[str, Any]:
        """JSON facts for `/v1/status` and logs: backend, vector counts, generation or index names."""
        ...

    def close(self) -> None: ...
