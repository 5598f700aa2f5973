"""An item's texts across its writers: item writes, stored captions, CapFilt's texts and verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_writes import FileFacts, ItemWrite, TextVector
from blipsearch.storage.schema import ItemStatus, ItemText

from catalog_rows import FP, unit_vector

CAPTIONER = "blip-" + "c" * 32


@pytest.fixture
def catalog(tmp_path: Path, database_url: str) -> Catalog:
    opened = Catalog.open(Settings(data_dir=tmp_path, database_url=database_url))
    yield opened
    opened.close()


def _texts(catalog: Catalog) -> list[ItemText]:
    with catalog.sessions() as session:
        return list(session.scalars(select(ItemText).order_by(ItemText.item_id, ItemText.slot)))


def test_catalog_write_keeps_synthetic_texts_only_for_the_same_image(
    tmp_path: Path, database_url: str
) -> None:
    catalog = Catalog.open(Settings(data_dir=tmp_path, database_url=database_url))
    fp = "blip-" + "b" * 32
    vector = np.ones(4, dtype=np.float32) / 2

    def write(content_hash: str, title: str) -> int:
        return catalog.write(
            [
                ItemWrite(
                    source="/photos/a.png",
                    origin="/photos",
                    status=ItemStatus.INDEXED,
                    file=FileFacts(content_hash, 10, 1.0, "PNG", 4, 4),
                    embedding=vector,
                    model_fingerprint=fp,
                    texts=[TextVector(0, "title", title, vector)],
                )
            ]
        )[0]

    try:
        item_id = write("a" * 64, "old title")
        assert catalog.store_synthetic_texts({item_id: [("a dog", vector, "cap-fp")]}, fp) == 1
        assert catalog.store_filter_scores([(item_id, 0, 0.9, False), (item_id, 8, 0.1, True)], "itm") == 2
        last = catalog.last_change_id()
        write("a" * 64, "new title")
        rows = _texts(catalog)
        assert [(r.slot, r.text, r.origin) for r in rows] == [
            (0, "new title", "original"),
            (8, "a dog", "synthetic"),
        ]
        assert rows[0].noisy is None and rows[1].noisy is True  # a new text has no verdict yet
        assert [t.text for t in catalog.clean_texts([item_id])[item_id]] == ["new title"]
        assert catalog.changed_items_since(last)[0] == [item_id]
        write("c" * 64, "new title")  # new image bytes: the captions described the old picture
        assert [(r.slot, r.origin) for r in _texts(catalog)] == [(0, "original")]
        with pytest.raises(ValueError):
            catalog.store_synthetic_texts({item_id: [("x", vector, "cap-fp")] * 9}, fp)
    finally:
        catalog.close()


def test_store_captions_refuses_vectors_without_their_model(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        catalog.store_captions({1: "x"}, CAPTIONER, text_vectors={1: unit_vector(1)})
    with pytest.raises(ValueError, match="without a caption"):
        catalog.store_captions({}, CAPTIONER, text_vectors={1: unit_vector(1)}, model_fingerprint=FP)
    catalog.store_captions({}, CAPTIONER)  # nothing to do
