"""Index generations: committed by the manifest, checksum-verified, old ones removed afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blipsearch.errors import IndexCorruptError, ModelMismatchError
from blipsearch.storage.index_spec import IndexSpec
from blipsearch.storage.snapshots import IndexStore
from blipsearch.storage.vectors import VectorIndex

DIM = 16


def _index(count: int, seed: int = 0) -> VectorIndex:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return VectorIndex.build(IndexSpec("flat", DIM), np.arange(count, dtype=np.int64) + 1, vectors)


def test_nothing_committed_reads_as_none(tmp_path: Path) -> None:
    store = IndexStore(tmp_path, "images")
    assert store.read_manifest() is None and store.load() is None


def test_commit_then_load_and_older_generations_are_removed(tmp_path: Path) -> None:
    store = IndexStore(tmp_path, "images")
    first = store.commit(_index(5), last_change_id=3, model_fingerprint="blip-a")
    second = store.commit(_index(7, seed=1), last_change_id=9, model_fingerprint="blip-a")
    assert (first.generation, second.generation) == (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.00000002.faiss", "images.manifest.json"]
    loaded = store.load("blip-a")
    assert loaded is not None
    index, manifest = loaded
    assert manifest == second and manifest.count == len(index) == 7 and manifest.last_change_id == 9
    assert np.array_equal(index.ids(), np.arange(7) + 1)


def test_another_model_is_refused_with_both_fingerprints(tmp_path: Path) -> None:
    store = IndexStore(tmp_path, "images")
    store.commit(_index(2), last_change_id=1, model_fingerprint="blip-a")
    with pytest.raises(ModelMismatchError, match=r"blip-a.*blip-b"):
        store.load("blip-b")


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_damage_is_detected_not_served(tmp_path: Path, damage: str) -> None:
    store = IndexStore(tmp_path, "images")
    manifest = store.commit(_index(20), last_change_id=1, model_fingerprint="blip-a")
    path = tmp_path / manifest.file
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[:-10]))
    elif damage == "delete":
        path.unlink()
    else:
        store.manifest_path.write_text('{"generation": ')
    with pytest.raises(IndexCorruptError):
        store.load("blip-a")


def test_a_crash_before_the_manifest_leaves_the_previous_generation(tmp_path: Path) -> None:
    store = IndexStore(tmp_path, "images")
    store.commit(_index(4), last_change_id=1, model_fingerprint="blip-a")
    # What a crash between the file rename and the manifest write leaves behind:
    (tmp_path / "images.00000002.faiss").write_bytes(b"partial")
    (tmp_path / ".images.00000003.faiss.999.tmp").write_bytes(b"partial")
    loaded = store.load("blip-a")
    assert loaded is not None and loaded[1].generation == 1 and len(loaded[0]) == 4
    # The next commit never reuses a generation number, and sweeps the debris.
    manifest = store.commit(_index(6), last_change_id=2, model_fingerprint="blip-a")
    assert manifest.generation == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.00000003.faiss", "images.manifest.json"]


def test_manifest_cannot_point_outside_its_directory(tmp_path: Path) -> None:
    store = IndexStore(tmp_path, "images")
    store.commit(_index(2), last_change_id=1, model_fingerprint="blip-a")
    data = json.loads(store.manifest_path.read_text())
    data["file"] = "../elsewhere.faiss"
    store.manifest_path.write_text(json.dumps(data))
    with pytest.raises(IndexCorruptError, match="plain name"):
        store.read_manifest()


def test_discard_forgets_everything(tmp_path: Path) -> None:
    store = IndexStore(tmp_path, "images")
    store.commit(_index(2), last_change_id=1, model_fingerprint="blip-a")
    store.discard()
    assert store.load() is None and not list(tmp_path.iterdir())
