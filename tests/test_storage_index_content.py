"""What the vector indexes must hold, read back from the catalog in pages and by item."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.index_content import text_vector_ids
from blipsearch.storage.item_writes import TextVector
from blipsearch.storage.schema import TEXT_SLOTS

from catalog_rows import FP, indexed_write, unit_vector


@pytest.fixture
def catalog(tmp_path: Path, database_url: str) -> Catalog:
    opened = Catalog.open(Settings(data_dir=tmp_path, database_url=database_url))
    yield opened
    opened.close()


def test_iterating_vectors_for_a_rebuild_pages_through_everything(catalog: Catalog) -> None:
    ids = catalog.write(
        [
            indexed_write(f"/p/{n}.png", n, texts=[TextVector(2, "caption", f"c{n}", unit_vector(n))])
            for n in range(7)
        ]
    )
    pages = list(catalog.iter_image_vectors(FP, batch=3))
    assert [len(page_ids) for page_ids, _ in pages] == [3, 3, 1]
    assert np.concatenate([p for p, _ in pages]).tolist() == sorted(ids)
    text_pages = list(catalog.iter_text_vectors(FP, batch=4))
    assert np.concatenate([p for p, _ in text_pages]).tolist() == [i * TEXT_SLOTS + 2 for i in sorted(ids)]
    assert text_vector_ids([1]).tolist() == list(range(TEXT_SLOTS, 2 * TEXT_SLOTS))


def test_index_content_is_by_model_and_mixes_storage_precisions(tmp_path: Path, database_url: str) -> None:
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    full = Catalog.open(settings)
    half = Catalog(full.engine, embedding_storage="float16")
    try:
        (a,) = full.write([indexed_write("/p/a.png", 1)])
        (b,) = half.write([indexed_write("/p/b.png", 2, texts=[TextVector(0, "title", "b", unit_vector(3))])])
        assert full.indexed_ids(FP).tolist() == [a, b] and full.indexed_ids("blip-other").tolist() == []
        assert full.text_ids(FP).tolist() == [b * TEXT_SLOTS]
        image_ids, image_vectors, text_ids, text_vectors = full.vectors_for_items([a, b], FP)
        assert image_ids.tolist() == [a, b] and text_ids.tolist() == [b * TEXT_SLOTS]
        np.testing.assert_array_equal(image_vectors[0], unit_vector(1))
        np.testing.assert_allclose(image_vectors[1], unit_vector(2), atol=1e-3)
        np.testing.assert_allclose(text_vectors[0], unit_vector(3), atol=1e-3)
    finally:
        full.close()
