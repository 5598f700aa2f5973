"""Training pairs from the catalog reach uploads through the image store, not a path of one machine."""

from __future__ import annotations

import functools
import io
import uuid
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.indexer.items import ItemWriter
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.image_store import open_image_store
from blipsearch.storage.item_writes import ItemMetadata
from blipsearch.train.catalog_pairs import catalog_pairs
from blipsearch.train.loop import load_images

from imagesets import noise_png

_png = functools.partial(noise_png, size=(30, 40))


def test_an_upload_in_a_shared_store_is_trained_on_from_the_store(
    indexer_settings: Callable[..., Settings], retrieval: RetrievalModel
) -> None:
    settings = indexer_settings(None, image_store=f"memory://train-pairs-{uuid.uuid4().hex}/images")
    catalog = Catalog.open(settings)
    try:
        data = _png(5)
        item_id = ItemWriter(settings, retrieval, catalog).add(data, ItemMetadata(title="a red lamp"))

        pairs = catalog_pairs(catalog, settings)
        assert pairs.texts == ("a red lamp",)
        (picture,) = load_images(pairs.images)
        with Image.open(io.BytesIO(data)) as original:
            assert np.array_equal(np.asarray(picture), np.asarray(original.convert("RGB")))

        with pytest.raises(InvalidInputError, match="no indexed image"):
            catalog_pairs(catalog)  # without settings the store is unknown: the upload takes no part
        source = catalog.items_by_ids([item_id])[0].source
        open_image_store(settings).delete(source.removeprefix("upload:"))
        with pytest.raises(InvalidInputError, match="no indexed image"):
            catalog_pairs(catalog, settings)
    finally:
        catalog.close()
