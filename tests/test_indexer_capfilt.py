"""CapFilt end to end: real files, SQLite and PostgreSQL, the tiny BLIP checkpoints, real FAISS."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from blipsearch.indexer.capfilt import CapFilt
from blipsearch.indexer.maintenance import verify
from blipsearch.indexer.pipeline import Indexer, IndexOptions
from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.results import SearchOptions
from blipsearch.search.service import SearchService
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.live import IndexSet
from blipsearch.storage.schema import (
    SLOT_OF_KIND,
    SYNTHETIC_SLOTS,
    TEXT_SLOTS,
    ItemText,
    TextKind,
    synthetic_slot,
)
from blipsearch.train.catalog_pairs import catalog_pairs

from imagesets import TEST_MAX_PIXELS, write_valid_images


def _manifest(root: Path, paths: list[Path], titles: list[str]) -> Path:
    manifest = root / "products.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "sku", "title"])
        for index, (path, title) in enumerate(zip(paths, titles, strict=True)):
            writer.writerow([path.relative_to(root).as_posix(), f"SKU-{index}", title])
    return manifest


@pytest.fixture
def setup(
    tmp_path: Path, database_url: str, indexer_settings, retrieval: RetrievalModel, captioner: Captioner
) -> tuple[Indexer, Path, list[Path]]:
    """Three products with a title each, indexed with captions: two original texts per item."""
    root = tmp_path / "shop"
    paths = write_valid_images(root, 3, seed=5)
    manifest = _manifest(root, paths, [f"product number {i}" for i in range(3)])
    indexer = Indexer(indexer_settings(database_url), model=retrieval, captioner=captioner)
    indexer.run(manifest, IndexOptions(captions=True))
    yield indexer, manifest, paths
    indexer.catalog.close()


def _texts(catalog: Catalog) -> list[ItemText]:
    with catalog.sessions() as session:
        return list(session.scalars(select(ItemText).order_by(ItemText.item_id, ItemText.slot)))


def _capfilt(indexer: Indexer, captioner: Captioner) -> CapFilt:
    return CapFilt(indexer.settings, indexer.model, captioner, catalog=indexer.catalog)


def _assert_indexes_agree(indexer: Indexer) -> None:
    settings = indexer.settings
    live, _ = IndexSet(
        settings.data_dir,
        indexer.catalog,
        fingerprint=indexer.model.fingerprint,
        dim=indexer.model.embedding_dim,
    ).open(writer=False)
    text_ids = {int(i) for i in live.texts.ids()}
    expected = {row.item_id * TEXT_SLOTS + row.slot for row in _texts(indexer.catalog)}
    assert text_ids == expected
    report = verify(indexer.settings, indexer.catalog)
    assert report.ok, report.problems


def test_synthetic_slots_stay_inside_the_item_id_range() -> None:
    assert set(SLOT_OF_KIND.values()).isdisjoint(SYNTHETIC_SLOTS)
    assert synthetic_slot(0) == 8 and synthetic_slot(7) == TEXT_SLOTS - 1
    with pytest.raises(ValueError):
        synthetic_slot(8)


def test_capfilt_writes_provenance_and_never_alters_originals(setup, captioner: Captioner) -> None:
    indexer, _, _ = setup
    before = {(t.item_id, t.slot): t.text for t in _texts(indexer.catalog)}
    assert len(before) == 6

    report = _capfilt(indexer, captioner).run(synthetic_per_image=2, threshold=1.01, batch=2)
    assert report.items == 3 and report.skipped == 0
    assert report.synthetic_written == 6
    assert report.texts_scored == 12
    assert report.noisy_original == 6 and report.noisy_synthetic == 6  # 1.01: everything is noisy

    rows = _texts(indexer.catalog)
    originals = [t for t in rows if t.origin == "original"]
    synthetic = [t for t in rows if t.origin == "synthetic"]
    assert {(t.item_id, t.slot): t.text for t in originals} == before  # kept word for word
    assert len(synthetic) == 6
    for row in rows:
        assert row.filter_score is not None and 0.0 <= row.filter_score <= 1.0
        assert row.noisy is True
        assert row.filter_fingerprint == indexer.model.fingerprint
    for row in synthetic:
        assert row.kind == TextKind.SYNTHETIC.value and row.slot in SYNTHETIC_SLOTS
        assert row.generator_fingerprint == captioner.fingerprint
        assert row.model_fingerprint == indexer.model.fingerprint and row.embedding
        assert row.text.strip()
    for row in originals:
        assert row.generator_fingerprint is None
    # Noisy texts are kept but left out of what training and search may use.
    ids = sorted({t.item_id for t in rows})
    assert indexer.catalog.clean_texts(ids) == {i: [] for i in ids}
    _assert_indexes_agree(indexer)


def test_rerun_replaces_synthetic_texts_and_thresholds_decide(setup, captioner: Captioner) -> None:
    indexer, _, _ = setup
    runner = _capfilt(indexer, captioner)
    runner.run(synthetic_per_image=3, threshold=0.5)
    report = runner.run(synthetic_per_image=1, threshold=0.0)
    assert report.noisy_original == report.noisy_synthetic == 0  # threshold 0 marks nothing
    rows = _texts(indexer.catalog)
    synthetic = [t for t in rows if t.origin == "synthetic"]
    assert len(synthetic) == 3 and {t.slot for t in synthetic} == {8}  # replaced, not appended
    assert all(t.noisy is False for t in rows)
    clean = indexer.catalog.clean_texts(sorted({t.item_id for t in rows}))
    assert sum(len(texts) for texts in clean.values()) == len(rows) == 9

    # The same seed and batches sample the same captions: a re-run is idempotent.
    first = [(t.item_id, t.slot, t.text) for t in synthetic]
    runner.run(synthetic_per_image=1, threshold=0.0)
    again = [(t.item_id, t.slot, t.text) for t in _texts(indexer.catalog) if t.origin == "synthetic"]
    assert again == first
    _assert_indexes_agree(indexer)


def test_search_and_training_use_only_the_texts_capfilt_kept(setup, captioner: Captioner) -> None:
    indexer, _, _ = setup
    _capfilt(indexer, captioner).run(synthetic_per_image=1, threshold=0.5)
    scores = sorted(t.filter_score for t in _texts(indexer.catalog))
    middle = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    _capfilt(indexer, captioner).run(synthetic_per_image=1, threshold=middle)  # about half are noisy
    rows = _texts(indexer.catalog)
    noisy = {(t.item_id, t.text) for t in rows if t.noisy}
    kept = {(t.item_id, t.text) for t in rows if not t.noisy}
    assert noisy and kept

    pairs = catalog_pairs(indexer.catalog)
    sources = {
        item.id: Path(item.source) for item in indexer.catalog.items_by_ids(sorted({t.item_id for t in rows}))
    }
    by_path = {path: item_id for item_id, path in sources.items()}
    trained = {(by_path[Path(image)], text) for image, text in zip(pairs.images, pairs.texts, strict=True)}
    assert trained == kept

    service = SearchService.open(indexer.settings)
    try:
        for item_id in sources:
            clean = service.image_to_texts(item_id=item_id, options=SearchOptions(k=50, rerank=False))
            every = service.image_to_texts(
                item_id=item_id, options=SearchOptions(k=50, rerank=False, include_noisy=True)
            )
            found = {(hit.item_id, hit.text) for hit in clean.hits}
            assert found and not found & noisy
            assert {(hit.item_id, hit.text) for hit in every.hits} == noisy | kept
    finally:
        service.close()


def test_the_indexer_keeps_synthetic_texts(setup, captioner: Captioner) -> None:
    indexer, manifest, paths = setup
    _capfilt(indexer, captioner).run(synthetic_per_image=2, threshold=0.5)
    synthetic = {(t.item_id, t.slot, t.text) for t in _texts(indexer.catalog) if t.origin == "synthetic"}
    assert len(synthetic) == 6

    indexer.run(manifest, IndexOptions(captions=True))  # nothing changed
    # A changed title rewrites that item's texts: its synthetic texts describe the image and stay.
    _manifest(manifest.parent, paths, ["a new title", "product number 1", "product number 2"])
    indexer.run(manifest, IndexOptions(captions=True))
    rows = _texts(indexer.catalog)
    assert {(t.item_id, t.slot, t.text) for t in rows if t.origin == "synthetic"} == synthetic
    assert "a new title" in {t.text for t in rows if t.origin == "original"}
    _assert_indexes_agree(indexer)


def test_cli_capfilt_smoke(tmp_path: Path, tiny_checkpoints) -> None:
    paths = write_valid_images(tmp_path / "photos", 2, seed=9)
    env = {
        **os.environ,
        "BLIPSEARCH_DATA_DIR": str(tmp_path / "data"),
        "BLIPSEARCH_RETRIEVAL_MODEL": str(tiny_checkpoints.retrieval),
        "BLIPSEARCH_CAPTION_MODEL": str(tiny_checkpoints.caption),
        "BLIPSEARCH_DEVICE": "cpu",
        "BLIPSEARCH_OFFLINE": "1",
        "BLIPSEARCH_MAX_IMAGE_PIXELS": str(TEST_MAX_PIXELS),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "blipsearch", *args], capture_output=True, text=True, timeout=300, env=env
        )

    indexed = cli("index", str(paths[0].parent), "--no-progress")
    assert indexed.returncode == 0, indexed.stderr
    result = cli("capfilt", "--synthetic", "2", "--threshold", "0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["items"] == 2 and report["synthetic_written"] == 4
    assert report["noisy_original"] == report["noisy_synthetic"] == 0
    assert cli("index", "verify").returncode == 0
    text = cli("capfilt", "--limit", "1")
    assert text.returncode == 0, text.stderr
    assert "1 items" in text.stdout
    trained = cli(
        "train",
        "retrieval",
        "--from-catalog",
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "1",
        "--batch",
        "2",
        "--json",
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["steps"] == 1
    both = cli(
        "train", "retrieval", str(tmp_path / "pairs.tsv"), "--from-catalog", "--out", str(tmp_path / "x")
    )
    assert both.returncode != 0 and "one of them" in both.stdout + both.stderr
