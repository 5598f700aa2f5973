from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from blipsearch.errors import CatalogError
from blipsearch.settings import Settings
from blipsearch.storage.catalog import (
    Catalog,
    FileFacts,
    ItemMetadata,
    ItemWrite,
    TextVector,
    decode_vectors,
    encode_vector,
    round_trip,
    text_vector_ids,
)
from blipsearch.storage.schema import TEXT_SLOTS, ItemStatus

FP = "blip-" + "a" * 32


@pytest.fixture
def catalog(tmp_path: Path, database_url: str) -> Catalog:
    opened = Catalog.open(Settings(data_dir=tmp_path, database_url=database_url))
    yield opened
    opened.close()


def _vector(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _write(source: str, seed: int, **kwargs) -> ItemWrite:
    return ItemWrite(
        source=source,
        origin="/photos",
        status=ItemStatus.INDEXED,
        file=FileFacts(f"{seed:064x}", 10, 1.0, "PNG", 4, 4),
        embedding=_vector(seed),
        model_fingerprint=FP,
        **kwargs,
    )


def test_vectors_round_trip_in_both_storage_precisions() -> None:
    vector = _vector(1, 256)
    assert np.array_equal(decode_vectors([encode_vector(vector, "float32")], "float32", 256)[0], vector)
    half = decode_vectors([encode_vector(vector, "float16")], "float16", 256)[0]
    assert np.array_equal(half, round_trip(vector[None, :], "float16")[0])
    assert np.abs(half - vector).max() < 1e-3
    with pytest.raises(CatalogError, match="does not have 256"):
        decode_vectors([b"\x00" * 12], "float32", 256)


def test_a_batch_write_records_one_change_per_item_and_is_replayable(catalog: Catalog) -> None:
    meta = ItemMetadata(external_id="SKU-1", title="Red shoe", price=Decimal("9.99"), tags=("b", "a", "a"))
    texts = [TextVector(0, "title", "Red shoe", _vector(9))]
    ids = catalog.write([_write("/photos/1.png", 1, metadata=meta, texts=texts), _write("/photos/2.png", 2)])
    assert len(set(ids)) == 2
    changed, last = catalog.changed_items_since(0)
    assert changed == sorted(ids) and last == catalog.last_change_id() == 2

    image_ids, image_vectors, text_ids, _ = catalog.vectors_for_items(ids, FP)
    assert image_ids.tolist() == sorted(ids)
    assert np.allclose(image_vectors[0], _vector(1))
    assert text_ids.tolist() == [ids[0] * TEXT_SLOTS]
    item = catalog.items_by_sources(["/photos/1.png"])["/photos/1.png"]
    assert [t.tag for t in item.tags] == ["a", "b"] and item.price == Decimal("9.99")

    catalog.write([_write("/photos/1.png", 3)])  # same source: an update, not a new item
    assert catalog.items_by_sources(["/photos/1.png"])["/photos/1.png"].id == ids[0]
    assert catalog.changed_items_since(2) == ([ids[0]], 3)


def test_failed_missing_and_deleted_items_leave_the_index_content(catalog: Catalog) -> None:
    a, b, c = catalog.write([_write(f"/photos/{n}.png", n) for n in range(3)])
    catalog.write(
        [ItemWrite(source="/photos/0.png", origin="/photos", status=ItemStatus.FAILED, error="bad")]
    )
    catalog.mark_missing([b])
    catalog.delete_items([c])
    image_ids, *_ = catalog.vectors_for_items([a, b, c], FP)
    assert image_ids.tolist() == []
    assert catalog.status_counts() == {"pending": 0, "indexed": 0, "failed": 1, "missing": 1}
    assert catalog.indexed_ids(FP).tolist() == []
    assert catalog.vectors_for_items([b], "blip-other")[0].tolist() == []
    assert catalog.sources_in_origin("/photos") == {
        "/photos/0.png": (a, "failed"),
        "/photos/1.png": (b, "missing"),
    }
    assert catalog.changed_items_since(3)[0] == [a, b, c]


def test_embeddings_are_reused_by_content_hash_for_the_same_model_only(catalog: Catalog) -> None:
    catalog.write([_write("/photos/1.png", 1)])
    found = catalog.embeddings_by_hash([f"{1:064x}", f"{2:064x}"], FP)
    assert list(found) == [f"{1:064x}"] and np.allclose(found[f"{1:064x}"][0], _vector(1))
    assert catalog.embeddings_by_hash([f"{1:064x}"], "blip-other") == {}


def test_iterating_vectors_for_a_rebuild_pages_through_everything(catalog: Catalog) -> None:
    ids = catalog.write(
        [_write(f"/p/{n}.png", n, texts=[TextVector(2, "caption", f"c{n}", _vector(n))]) for n in range(7)]
    )
    pages = list(catalog.iter_image_vectors(FP, batch=3))
    assert [len(page_ids) for page_ids, _ in pages] == [3, 3, 1]
    assert np.concatenate([p for p, _ in pages]).tolist() == sorted(ids)
    text_pages = list(catalog.iter_text_vectors(FP, batch=4))
    assert np.concatenate([p for p, _ in text_pages]).tolist() == [i * TEXT_SLOTS + 2 for i in sorted(ids)]
    assert text_vector_ids([1]).tolist() == list(range(TEXT_SLOTS, 2 * TEXT_SLOTS))


def test_an_embedding_without_its_model_is_refused(catalog: Catalog) -> None:
    write = _write("/p/x.png", 1)
    write.model_fingerprint = None
    with pytest.raises(ValueError, match="fingerprint"):
        catalog.write([write])
