"""The vector indexes as served: the last committed generation, caught up with the catalog.

SQL is the source of truth. Opening loads the committed generation of each index and replays the
catalog changes made after it; a missing, corrupt or stale index is rebuilt from the embeddings
stored in SQL, never served empty. Only a writer (holding the data directory's lock) commits new
generations; readers catch up in memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blipsearch.errors import IndexCorruptError, ModelMismatchError
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.exact import SearchDevice, resolve_search_device
from blipsearch.storage.index_content import text_vector_ids
from blipsearch.storage.index_spec import RequestedKind, choose_index_spec
from blipsearch.storage.snapshots import IndexManifest, IndexStore
from blipsearch.storage.vectors import VectorIndex

log = logging.getLogger(__name__)

IMAGES = "images"
TEXTS = "texts"


NO_GENERATION = "no committed generation"


@dataclass
class OpenReport:
    """How each index came to be: loaded, caught up by N items, or rebuilt and why."""

    loaded_generation: dict[str, int] = field(default_factory=dict)
    caught_up_items: int = 0
    rebuilt: dict[str, str] = field(default_factory=dict)


@dataclass
class LiveIndexes:
    """The image index and the text index of one data directory, for one model."""

    images: VectorIndex
    texts: VectorIndex
    last_change_id: int
    fingerprint: str
    dim: int
    generations: dict[str, int] = field(default_factory=dict)
    pending_changes: int = 0
    """Changes applied in memory since the last committed generation."""

    def apply_items(self, catalog: Catalog, item_ids: list[int], through_change_id: int) -> None:
        """Make both indexes agree with the catalog for these items (idempotent)."""
        if item_ids:
            image_ids, image_vectors, text_ids, text_vectors = catalog.vectors_for_items(
                item_ids, self.fingerprint
            )
            self.images.remove(np.asarray(item_ids, dtype=np.int64))
            if len(image_ids):
                self.images.add(image_ids, image_vectors)
            self.texts.remove(text_vector_ids(item_ids))
            if len(text_ids):
                self.texts.add(text_ids, text_vectors)
            self.pending_changes += len(item_ids)
        self.last_change_id = max(self.last_change_id, through_change_id)

    def catch_up(self, catalog: Catalog) -> int:
        """Replay catalog changes after `last_change_id`; returns how many items changed."""
        item_ids, last = catalog.changed_items_since(self.last_change_id)
        self.apply_items(catalog, item_ids, last)
        return len(item_ids)


class IndexSet:
    """The on-disk stores of a data directory and the rules for loading and committing them."""

    def __init__(
        self,
        data_dir: Path,
        catalog: Catalog,
        *,
        fingerprint: str,
        dim: int,
        requested_kind: RequestedKind = "auto",
        memory_budget: int = 4 * 1024**3,
        search_device: SearchDevice = "auto",
    ) -> None:
        self.directory = data_dir / "indexes"
        self.catalog = catalog
        self.fingerprint = fingerprint
        self.dim = dim
        self.requested_kind: RequestedKind = requested_kind
        self.memory_budget = memory_budget
        self.search_device = resolve_search_device(search_device)
        """Where exact (flat) searches run; every index this set loads or builds is given it."""
        self.stores = {IMAGES: IndexStore(self.directory, IMAGES), TEXTS: IndexStore(self.directory, TEXTS)}

    def manifests(self) -> dict[str, IndexManifest | None]:
        """Committed manifests; a corrupt one reads as None here (status reporting only)."""
        result: dict[str, IndexManifest | None] = {}
        for name, store in self.stores.items():
            try:
                result[name] = store.read_manifest()
            except IndexCorruptError:
                result[name] = None
        return result

    def open(self, *, writer: bool) -> tuple[LiveIndexes, OpenReport]:
        """Load, verify and catch up both indexes; a writer commits whatever had to be rebuilt."""
        report = OpenReport()
        loaded: dict[str, tuple[VectorIndex, int, int]] = {}
        catalog_last = self.catalog.last_change_id()
        for name, store in self.stores.items():
            index, last, generation, reason = self._load_one(store, catalog_last, writer=writer)
            if index is None:
                index, last = self._build(name)
                report.rebuilt[name] = reason
                if reason == NO_GENERATION and catalog_last == 0:
                    # A new data directory: nothing was lost, so nothing to warn about.
                    log.info("index created", extra={"index": name})
                else:
                    log.warning("index rebuilt from catalog", extra={"index": name, "reason": reason})
            else:
                report.loaded_generation[name] = generation
            loaded[name] = (index, last, generation)
        # Both indexes are replayed from the older of their two positions: replay is idempotent.
        start = min(loaded[IMAGES][1], loaded[TEXTS][1])
        live = LiveIndexes(
            images=loaded[IMAGES][0],
            texts=loaded[TEXTS][0],
            last_change_id=start,
            fingerprint=self.fingerprint,
            dim=self.dim,
            generations={name: loaded[name][2] for name in loaded},
        )
        report.caught_up_items = live.catch_up(self.catalog)
        if report.rebuilt:
            live.pending_changes += 1
        if writer and live.pending_changes:
            self.commit(live)
        return live, report

    def _load_one(
        self, store: IndexStore, catalog_last: int, *, writer: bool
    ) -> tuple[VectorIndex | None, int, int, str]:
        try:
            loaded = store.load(expected_fingerprint=self.fingerprint)
        except IndexCorruptError as exc:
            return None, 0, 0, f"corrupt: {exc}"
        except ModelMismatchError as exc:
            if not writer:
                raise
            # Indexing with another model is how a collection moves to it: the new index holds
            # the items embedded by the new model so far, and the old model's index is replaced.
            return None, 0, 0, f"model changed: {exc}"
        if loaded is None:
            return None, 0, 0, NO_GENERATION
        index, manifest = loaded
        if manifest.last_change_id > catalog_last:
            return (
                None,
                0,
                0,
                (
                    f"stale: it has applied change {manifest.last_change_id} "
                    f"but the catalog ends at {catalog_last} "
                    "(was the database replaced?)"
                ),
            )
        if index.dim != self.dim:
            return None, 0, 0, f"built for {index.dim}-d vectors, the model makes {self.dim}-d"
        index.use_device(self.search_device)
        return index, manifest.last_change_id, manifest.generation, ""

    def _build(self, name: str) -> tuple[VectorIndex, int]:
        """A fresh index from SQL; the change position is read first so later writes get replayed."""
        last = self.catalog.last_change_id()
        source: Callable[[str], Iterator[tuple[np.ndarray, np.ndarray]]] = (
            self.catalog.iter_image_vectors if name == IMAGES else self.catalog.iter_text_vectors
        )
        id_parts: list[np.ndarray] = []
        vector_parts: list[np.ndarray] = []
        for ids, vectors in source(self.fingerprint):
            id_parts.append(ids)
            vector_parts.append(vectors)
        ids = np.concatenate(id_parts) if id_parts else np.zeros(0, dtype=np.int64)
        vectors = np.concatenate(vector_parts) if vector_parts else np.zeros((0, self.dim), dtype=np.float32)
        spec = choose_index_spec(
            len(ids), self.dim, memory_budget_bytes=self.memory_budget, requested=self.requested_kind
        )
        started = time.perf_counter()
        index = VectorIndex.build(spec, ids, vectors)
        index.use_device(self.search_device)
        log.info(
            "index built",
            extra={
                "index": name,
                "kind": spec.kind,
                "vectors": len(ids),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return index, last

    def rebuild(self) -> LiveIndexes:
        """Both indexes from SQL alone, committed as a new generation (also re-applies the kind rule)."""
        images, last_images = self._build(IMAGES)
        texts, last_texts = self._build(TEXTS)
        live = LiveIndexes(
            images=images,
            texts=texts,
            last_change_id=min(last_images, last_texts),
            fingerprint=self.fingerprint,
            dim=self.dim,
        )
        live.catch_up(self.catalog)
        self.commit(live)
        return live

    def needs_rebuild(self, live: LiveIndexes) -> str | None:
        """Why the writer should rebuild now: too many tombstones, or the collection outgrew its kind."""
        for name, index in ((IMAGES, live.images), (TEXTS, live.texts)):
            if index.needs_compaction:
                return f"{name} index has {index.tombstone_count} deleted entries to compact"
            wanted = choose_index_spec(
                len(index), self.dim, memory_budget_bytes=self.memory_budget, requested=self.requested_kind
            )
            if wanted.kind != index.spec.kind:
                return (
                    f"{name} index holds {len(index)} vectors as {index.spec.kind}; "
                    f"the rule now says {wanted.kind}"
                )
        return None

    def commit(self, live: LiveIndexes) -> None:
        """Write both indexes as new generations; each manifest records the change it reflects."""
        for name, index in ((IMAGES, live.images), (TEXTS, live.texts)):
            manifest = self.stores[name].commit(
                index, last_change_id=live.last_change_id, model_fingerprint=self.fingerprint
            )
            live.generations[name] = manifest.generation
        live.pending_changes = 0
