"""`index status`, `index verify` and `index rebuild`: looking at and repairing what the indexer wrote.

Status and verify read the committed generation as it is on disk, with the fingerprint its
manifest records, so they need no model and never change anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blipsearch.errors import IndexCorruptError
from blipsearch.indexer.upload_files import UploadFolder, check_litter
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.index_content import text_vector_ids
from blipsearch.storage.live import IMAGES, TEXTS
from blipsearch.storage.schema import TEXT_SLOTS
from blipsearch.storage.snapshots import IndexStore
from blipsearch.storage.vectors import VectorIndex

SAMPLE_VECTORS = 64
"""Vectors per index compared value by value against SQL (exact kinds only)."""


def index_status(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    data_dir = settings.data_dir
    directory = data_dir / "indexes"
    indexes: dict[str, Any] = {}
    for name in (IMAGES, TEXTS):
        try:
            manifest = IndexStore(directory, name).read_manifest()
        except IndexCorruptError as exc:
            indexes[name] = {"state": "corrupt", "reason": str(exc)}
            continue
        if manifest is None:
            indexes[name] = {"state": "absent"}
            continue
        pending, _ = catalog.changed_items_since(manifest.last_change_id)
        indexes[name] = {
            "state": "current" if not pending else "behind",
            "generation": manifest.generation,
            "kind": manifest.spec.get("kind"),
            "vectors": manifest.count,
            "tombstones": manifest.tombstones,
            "last_change_id": manifest.last_change_id,
            "items_changed_since": len(pending),
            "model_fingerprint": manifest.model_fingerprint,
            "committed_at": manifest.created_at,
        }
    return {
        "data_dir": str(data_dir),
        "catalog": catalog.location,
        "items": catalog.status_counts(),
        "indexed_by_model": catalog.fingerprint_counts(),
        "last_change_id": catalog.last_change_id(),
        "indexes": indexes,
        "failures": [{"id": i, "source": s, "error": e} for i, s, e in catalog.failures()],
    }


@dataclass
class VerifyReport:
    checked: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "problems": self.problems, "notes": self.notes}


def verify(settings: Settings, catalog: Catalog) -> VerifyReport:
    """Catalog and committed indexes agree: no missing, phantom or duplicate ids, equal vectors.

    Items changed after the generation was committed are not errors (the next open replays them)
    and are reported as notes; everything else that differs is a problem.
    """
    report = VerifyReport()
    report.problems.extend(catalog.inconsistent_rows())
    directory = settings.data_dir / "indexes"
    counts = catalog.status_counts()
    report.checked["items"] = sum(counts.values())
    for name in (IMAGES, TEXTS):
        store = IndexStore(directory, name)
        try:
            loaded = store.load()
        except IndexCorruptError as exc:
            report.problems.append(f"{name} index: {exc}")
            continue
        if loaded is None:
            if counts.get("indexed", 0):
                # A writer killed before its first checkpoint of this index (or between the two
                # indexes' files) leaves none; SQL holds every vector, and the next open builds it.
                report.notes.append(
                    f"{name} index: no committed generation yet; the next open builds it from the catalog"
                )
            continue
        index, manifest = loaded
        fingerprint = manifest.model_fingerprint
        expected = catalog.indexed_ids(fingerprint) if name == IMAGES else catalog.text_ids(fingerprint)
        pending_items, _ = catalog.changed_items_since(manifest.last_change_id)
        pending = _owned_ids(name, pending_items)
        occurrences = index.id_occurrences()
        actual = np.asarray(sorted(occurrences), dtype=np.int64)
        duplicates = sorted(i for i, n in occurrences.items() if n > 1)
        missing = np.setdiff1d(np.setdiff1d(expected, actual), pending)
        phantom = np.setdiff1d(np.setdiff1d(actual, expected), pending)
        report.checked[f"{name}_vectors"] = len(actual)
        report.checked[f"{name}_generation"] = manifest.generation
        if duplicates:
            report.problems.append(f"{name} index: ids present more than once: {_few(duplicates)}")
        if len(missing):
            report.problems.append(f"{name} index: {len(missing)} catalog ids missing: {_few(missing)}")
        if len(phantom):
            report.problems.append(
                f"{name} index: {len(phantom)} phantom ids not in the catalog: {_few(phantom)}"
            )
        if manifest.count != len(index):
            report.problems.append(
                f"{name} index: manifest says {manifest.count} vectors, file holds {len(index)}"
            )
        if pending_items:
            report.notes.append(
                f"{name} index: {len(pending_items)} items changed after generation {manifest.generation}; "
                "they are applied when the index is next opened"
            )
        report.problems.extend(
            _compare_vectors(
                name, index, catalog, fingerprint, np.intersect1d(np.setdiff1d(expected, pending), actual)
            )
        )
    _check_uploads(settings, catalog, report)
    return report


def _check_uploads(settings: Settings, catalog: Catalog, report: VerifyReport) -> None:
    """Files a crash left in the image store: harmless, but litter; a server start removes them."""
    found = check_litter(UploadFolder.for_settings(settings), catalog)
    report.checked["upload_orphans"] = found.orphans
    report.checked["upload_temporary"] = found.temporary
    report.problems.extend(found.problems)
    report.notes.extend(found.notes)


def _owned_ids(name: str, item_ids: list[int]) -> np.ndarray:
    if name == IMAGES:
        return np.asarray(item_ids, dtype=np.int64)
    return text_vector_ids(item_ids) if item_ids else np.zeros(0, dtype=np.int64)


def _compare_vectors(
    name: str, index: VectorIndex, catalog: Catalog, fingerprint: str, ids: np.ndarray
) -> list[str]:
    if index.spec.kind == "ivfpq" or not len(ids):
        return []  # PQ stores lossy codes; nothing exact to compare
    sample = ids[np.linspace(0, len(ids) - 1, min(SAMPLE_VECTORS, len(ids))).astype(int)]
    item_ids = sorted({int(i) for i in (sample if name == IMAGES else sample // TEXT_SLOTS)})
    image_ids, image_vectors, text_ids, text_vectors = catalog.vectors_for_items(item_ids, fingerprint)
    stored = (
        dict(zip(image_ids.tolist(), image_vectors, strict=True))
        if name == IMAGES
        else dict(zip(text_ids.tolist(), text_vectors, strict=True))
    )
    wrong = []
    for vector_id in sample.tolist():
        if vector_id in stored and not np.allclose(
            index.reconstruct(vector_id), stored[vector_id], atol=1e-5
        ):
            wrong.append(vector_id)
    return [f"{name} index: vectors differ from the catalog for ids {_few(wrong)}"] if wrong else []


def _few(ids: Any, limit: int = 10) -> str:
    values = [int(i) for i in list(ids)[:limit]]
    more = len(ids) - len(values)
    return ", ".join(map(str, values)) + (f" and {more} more" if more > 0 else "")
