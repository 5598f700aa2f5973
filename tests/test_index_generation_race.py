"""A reader that loses the race with a writer's commit loads the newer generation (issue 26, item 10).

The race: a server reads the manifest naming generation N+1; before it reads that file, the
indexer commits N+2 and removes N+1. Reproduced deterministically by letting the writer commit
right after the reader's manifest read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import create_catalog_engine, ensure_schema
from blipsearch.storage.index_spec import IndexSpec
from blipsearch.storage.live import IMAGES, IndexSet
from blipsearch.storage.snapshots import IndexManifest, IndexStore
from blipsearch.storage.vectors import VectorIndex

DIM = 16


def _index(count: int, seed: int = 0) -> VectorIndex:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return VectorIndex.build(IndexSpec("flat", DIM), np.arange(count, dtype=np.int64) + 1, vectors)


class OvertakenStore(IndexStore):
    """A reader whose first manifest read is immediately followed by `writer_commits()`."""

    def __init__(self, directory: Path, name: str, writer_commits: Callable[[], None]) -> None:
        super().__init__(directory, name)
        self.writer_commits = writer_commits
        self.overtaken = False

    def read_manifest(self) -> IndexManifest | None:
        manifest = super().read_manifest()
        if not self.overtaken:
            self.overtaken = True
            self.writer_commits()
        return manifest


def test_the_file_removed_by_a_newer_commit_is_not_corruption(tmp_path: Path) -> None:
    writer = IndexStore(tmp_path, "images")
    writer.commit(_index(5), last_change_id=3, model_fingerprint="blip-a")
    newer = _index(8, seed=1)
    reader = OvertakenStore(
        tmp_path, "images", lambda: writer.commit(newer, last_change_id=9, model_fingerprint="blip-a")
    )
    loaded = reader.load("blip-a")
    assert reader.overtaken and loaded is not None
    index, manifest = loaded
    assert manifest.generation == 2 and manifest.last_change_id == 9 and len(index) == 8
    assert not (tmp_path / "images.00000001.faiss").exists()  # the race really removed it


def test_a_reading_service_switches_generation_without_a_rebuild(tmp_path: Path) -> None:
    """What the server does when it sees a newer generation: open the index set as a reader."""
    engine = create_catalog_engine(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    ensure_schema(engine)
    catalog = Catalog(engine)
    directory = tmp_path / "data"
    index_set = IndexSet(directory, catalog, fingerprint="blip-a", dim=DIM, requested_kind="flat")
    empty = _index(0)
    for store in index_set.stores.values():
        store.commit(empty, last_change_id=0, model_fingerprint="blip-a")
    writer = IndexStore(index_set.directory, IMAGES)
    index_set.stores[IMAGES] = OvertakenStore(
        index_set.directory,
        IMAGES,
        lambda: writer.commit(empty, last_change_id=0, model_fingerprint="blip-a"),
    )
    live, report = index_set.open(writer=False)
    assert report.rebuilt == {}, report.rebuilt
    assert report.loaded_generation[IMAGES] == 2 and live.generations[IMAGES] == 2
    catalog.close()
