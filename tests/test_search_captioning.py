"""Captions written at query time: generated once, stored with their text vector, skipped for files
that cannot be read, and never stored for an image outside the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.captioning import CaptionWriter
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_writes import FileFacts, ItemWrite
from blipsearch.storage.schema import SLOT_OF_KIND, TEXT_SLOTS, ItemStatus, TextKind
from blipsearch.storage.vector_codec import round_trip

from imagesets import TEST_MAX_PIXELS, write_valid_images


class Shop(NamedTuple):
    settings: Settings
    catalog: Catalog
    ids: list[int]
    """Two items with a readable image, then one whose file is gone."""
    readable: Path


@pytest.fixture
def shop(tmp_path: Path, tiny_checkpoints, retrieval: RetrievalModel) -> Shop:
    """Two items with readable images and a third whose file is gone; none has a caption yet."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        retrieval_model=str(tiny_checkpoints.retrieval),
        caption_model=str(tiny_checkpoints.caption),
        device="cpu",
        dtype="float32",
        offline=True,
        max_image_pixels=TEST_MAX_PIXELS,
    )
    catalog = Catalog.open(settings)
    paths = write_valid_images(tmp_path / "photos", 3, seed=4)
    vector = retrieval.embed_texts(["anything"])[0]
    ids = catalog.write(
        [
            ItemWrite(
                source=str(path),
                origin=str(tmp_path / "photos"),
                status=ItemStatus.INDEXED,
                file=FileFacts(f"{index:064x}", path.stat().st_size, path.stat().st_mtime),
                embedding=vector,
                model_fingerprint=retrieval.fingerprint,
            )
            for index, path in enumerate(paths)
        ]
    )
    paths[2].unlink()
    yield Shop(settings, catalog, ids, paths[0])
    catalog.close()


def _writer(shop: Shop, retrieval: RetrievalModel, captioner: Captioner) -> CaptionWriter:
    return CaptionWriter(shop.settings, retrieval, shop.catalog, captioner)


def test_captions_are_stored_with_their_text_vector_and_unreadable_files_skipped(
    shop: Shop, retrieval: RetrievalModel, captioner: Captioner
) -> None:
    catalog, (first, second, gone) = shop.catalog, shop.ids
    writer = _writer(shop, retrieval, captioner)
    captions = writer.caption_items([first, second, gone])
    assert sorted(captions) == [first, second] and all(captions.values())

    items = {item.id: item for item in catalog.items_by_ids([first, second, gone])}
    assert [items[i].caption for i in (first, second)] == [captions[first], captions[second]]
    assert items[first].caption_fingerprint == captioner.fingerprint and items[gone].caption is None
    _, _, text_ids, text_vectors = catalog.vectors_for_items([first, second], retrieval.fingerprint)
    slot = SLOT_OF_KIND[TextKind.CAPTION]
    assert text_ids.tolist() == [first * TEXT_SLOTS + slot, second * TEXT_SLOTS + slot]
    expected = round_trip(retrieval.embed_texts([captions[first], captions[second]]), "float32")
    np.testing.assert_allclose(text_vectors, expected, atol=1e-6)


def test_a_stored_caption_is_kept_unless_replaced(
    shop: Shop, retrieval: RetrievalModel, captioner: Captioner
) -> None:
    catalog, first = shop.catalog, shop.ids[0]
    writer = _writer(shop, retrieval, captioner)
    made = writer.caption_items([first])
    before = catalog.last_change_id()
    assert writer.caption_items([first]) == {} and catalog.last_change_id() == before
    assert writer.caption_items([first], replace=True) == made
    assert catalog.last_change_id() > before


def test_an_image_outside_the_catalog_is_captioned_but_nothing_is_stored(
    shop: Shop, retrieval: RetrievalModel, captioner: Captioner
) -> None:
    catalog = shop.catalog
    writer = _writer(shop, retrieval, captioner)
    before = catalog.last_change_id()
    with Image.open(shop.readable) as image:
        [caption] = writer.caption([image.convert("RGB")])
    assert caption and catalog.last_change_id() == before
    assert all(item.caption is None for item in catalog.items_by_ids(shop.ids))
