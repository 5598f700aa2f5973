"""The indexer end to end on real files, SQLite and PostgreSQL, real FAISS, the tiny BLIP model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from blipsearch.errors import IndexLockedError, ModelMismatchError
from blipsearch.indexer.maintenance import verify
from blipsearch.indexer.pipeline import Indexer, IndexOptions
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.live import IndexSet, LiveIndexes, OpenReport
from blipsearch.storage.lock import WriterLock
from blipsearch.storage.schema import TEXT_SLOTS, Item, ItemText

from imagesets import write_broken_images, write_odd_valid_images, write_valid_images


class CountingModel(RetrievalModel):
    """The real model, counting how many images it was asked to embed."""

    def __init__(self, base: RetrievalModel) -> None:
        self.__dict__.update(base.__dict__)
        self.images_embedded = 0

    def embed_images(self, images, *, return_vision_tokens=False):  # type: ignore[no-untyped-def]
        self.images_embedded += len(images)
        return super().embed_images(images, return_vision_tokens=return_vision_tokens)


_PIPELINE = {"index_chunk_items": 16, "index_checkpoint_items": 5}


@pytest.fixture
def settings(database_url: str, indexer_settings) -> Settings:
    return indexer_settings(database_url, **_PIPELINE)


@pytest.fixture
def sqlite_settings(indexer_settings) -> Settings:
    """For behaviour that does not depend on the database."""
    return indexer_settings(**_PIPELINE)


@pytest.fixture
def model(retrieval: RetrievalModel) -> CountingModel:
    return CountingModel(retrieval)


def _indexer(settings: Settings, model: RetrievalModel, captioner=None) -> Indexer:
    return Indexer(settings, model=model, captioner=captioner)


def _items(indexer: Indexer) -> dict[str, Item]:
    with indexer.catalog.sessions() as session:
        query = select(Item).options(selectinload(Item.tags), selectinload(Item.texts))
        return {Path(item.source).name: item for item in session.scalars(query)}


def _live(
    indexer: Indexer, kind: str | None = None, *, writer: bool = False
) -> tuple[LiveIndexes, OpenReport]:
    """The FAISS indexes as a server of this data directory would open them."""
    settings = indexer.settings
    return IndexSet(
        settings.data_dir,
        indexer.catalog,
        fingerprint=indexer.model.fingerprint,
        dim=indexer.model.embedding_dim,
        requested_kind=kind or settings.index_kind,  # type: ignore[arg-type]
        memory_budget=settings.index_memory_budget,
    ).open(writer=writer)


def _assert_verified(indexer: Indexer) -> None:
    report = verify(indexer.settings, indexer.catalog)
    assert report.ok, report.problems


def test_folder_with_valid_odd_and_broken_files(
    tmp_path: Path, settings: Settings, model: CountingModel
) -> None:
    folder = tmp_path / "photos"
    valid = write_valid_images(folder, 9, seed=3)
    odd = write_odd_valid_images(folder / "odd")
    broken = write_broken_images(folder / "broken")
    indexer = _indexer(settings, model)
    report = indexer.run(folder)

    good = len(valid) + len(odd)
    assert report.embedded == good and model.images_embedded == good
    assert report.failed == len(broken)
    items = _items(indexer)
    for kind, path in broken.items():
        item = items[path.name]
        assert item.status == "failed" and item.error, kind
        assert item.embedding is None
    for path in [*valid, *odd.values()]:
        item = items[path.name]
        assert item.status == "indexed" and item.embedding_dim == model.embedding_dim
        assert item.content_hash and len(item.content_hash) == 64 and item.width and item.format
    assert report.indexed_total == good
    _assert_verified(indexer)

    live, _ = _live(indexer)
    own = items[valid[0].name]
    vector = np.frombuffer(own.embedding or b"", dtype="<f4")[None, :].copy()
    _, ids = live.images.search(vector, 1)
    assert ids[0, 0] == own.id


def test_reindexing_an_unchanged_folder_embeds_nothing(
    tmp_path: Path, settings: Settings, model: CountingModel
) -> None:
    folder = tmp_path / "photos"
    write_valid_images(folder, 6, seed=1)
    write_broken_images(folder / "broken")
    indexer = _indexer(settings, model)
    first = indexer.run(folder)
    embedded_once = model.images_embedded
    second = indexer.run(folder)
    assert model.images_embedded == embedded_once
    assert second.embedded == 0 and second.unchanged == first.embedded
    assert second.failed == first.failed
    assert second.generation == first.generation, "nothing changed, so no new index generation"
    _assert_verified(indexer)


def test_changed_copied_touched_deleted_and_returning_files(
    tmp_path: Path, settings: Settings, model: CountingModel
) -> None:
    folder = tmp_path / "photos"
    paths = write_valid_images(folder, 5, seed=2)
    indexer = _indexer(settings, model)
    indexer.run(folder)
    before = _items(indexer)

    Image.new("RGB", (30, 30), (250, 10, 10)).save(paths[0], format=Image.open(paths[1]).format or "PNG")
    shutil.copyfile(paths[2], folder / "copy-of-two.bin.png")
    os.utime(paths[3], (1_000_000_000, 1_000_000_000))
    moved = paths[4].read_bytes()
    paths[4].unlink()
    count = model.images_embedded
    report = indexer.run(folder)
    assert (report.embedded, report.reused, report.missing) == (1, 1, 1)
    assert model.images_embedded == count + 1, "only the changed file reaches the model"
    after = _items(indexer)
    assert after[paths[0].name].id == before[paths[0].name].id
    assert after[paths[0].name].embedding != before[paths[0].name].embedding
    assert after["copy-of-two.bin.png"].embedding == after[paths[2].name].embedding
    assert after[paths[3].name].file_mtime == 1_000_000_000
    assert after[paths[4].name].status == "missing"
    _assert_verified(indexer)
    live, _ = _live(indexer)
    assert before[paths[4].name].id not in set(live.images.ids().tolist())

    paths[4].write_bytes(moved)
    count = model.images_embedded
    report = indexer.run(folder)
    assert report.embedded == 0 and model.images_embedded == count, "a returning file is not re-embedded"
    assert _items(indexer)[paths[4].name].status == "indexed"

    paths[4].unlink()
    report = indexer.run(folder, IndexOptions(prune=True))
    assert report.pruned == 1 and paths[4].name not in _items(indexer)
    _assert_verified(indexer)


def test_manifest_metadata_texts_and_metadata_only_updates(
    tmp_path: Path, settings: Settings, model: CountingModel
) -> None:
    images = write_valid_images(tmp_path / "img", 3, seed=4)
    manifest = tmp_path / "catalog.csv"
    lines = ["image,sku,title,description,category,brand,price,tags,material"]
    for n, path in enumerate(images):
        lines.append(
            f"{path.relative_to(tmp_path)},SKU-{n},Shoe {n},A nice shoe,shoes,Acme,{10 + n},a|b,leather"
        )
    lines.append("img/missing.png,SKU-X,Ghost,,,,1,,")
    manifest.write_text("\n".join(lines) + "\n")
    indexer = _indexer(settings, model)
    report = indexer.run(manifest)
    assert report.embedded == 3 and report.failed == 1
    items = _items(indexer)
    shoe = items[images[1].name]
    assert (shoe.external_id, shoe.title, shoe.category, str(shoe.price)) == (
        "SKU-1",
        "Shoe 1",
        "shoes",
        "11.00",
    )
    assert [t.tag for t in shoe.tags] == ["a", "b"] and shoe.attributes == {"material": "leather"}
    assert "not found" in (items["missing.png"].error or "")
    assert items["missing.png"].external_id == "SKU-X", "a failed row keeps its metadata"
    with indexer.catalog.sessions() as session:
        kinds = sorted(t.kind for t in session.scalars(select(ItemText).where(ItemText.item_id == shoe.id)))
    assert kinds == ["description", "title"]
    live, _ = _live(indexer)
    assert len(live.texts) == 6
    title_vector = model.embed_texts(["Shoe 1"])
    _, ids = live.texts.search(title_vector, 1)
    assert ids[0, 0] == shoe.id * TEXT_SLOTS + 0

    manifest.write_text(manifest.read_text().replace("Shoe 1,", "Boot 1,"))
    count = model.images_embedded
    report = indexer.run(manifest)
    assert report.metadata_updated == 1 and report.embedded == 0 and model.images_embedded == count
    assert _items(indexer)[images[1].name].title == "Boot 1"
    live, _ = _live(indexer)
    _, ids = live.texts.search(model.embed_texts(["Boot 1"]), 1)
    assert ids[0, 0] == shoe.id * TEXT_SLOTS + 0
    _assert_verified(indexer)


def test_captions_at_index_time(tmp_path: Path, settings: Settings, model: CountingModel, captioner) -> None:
    write_valid_images(tmp_path / "p", 3, seed=5)
    indexer = _indexer(settings, model, captioner)
    report = indexer.run(tmp_path / "p", IndexOptions(captions=True))
    assert report.captioned == 3
    for item in _items(indexer).values():
        assert item.caption and item.caption_fingerprint == captioner.fingerprint
        assert [t.kind for t in item.texts] == ["caption"]
    again = indexer.run(tmp_path / "p", IndexOptions(captions=True))
    assert again.captioned == 0 and again.embedded == 0
    _assert_verified(indexer)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq"])
def test_approximate_index_kinds_stay_consistent_through_deletes(
    tmp_path: Path, sqlite_settings: Settings, model: CountingModel, kind: str
) -> None:
    settings = sqlite_settings
    paths = write_valid_images(tmp_path / "p", 12, seed=6)
    indexer = _indexer(settings, model)
    report = indexer.run(tmp_path / "p", IndexOptions(index_kind=kind))  # type: ignore[arg-type]
    live, _ = _live(indexer, kind)
    assert live.images.spec.kind == kind and len(live.images) == report.embedded
    for path in paths[:4]:
        path.unlink()
    indexer.run(tmp_path / "p", IndexOptions(index_kind=kind))  # type: ignore[arg-type]
    live, _ = _live(indexer, kind)
    assert len(live.images) == 8
    _assert_verified(indexer)


def test_one_writer_at_a_time(tmp_path: Path, settings: Settings, model: CountingModel) -> None:
    write_valid_images(tmp_path / "p", 1)
    with (
        WriterLock(settings.data_dir, "index elsewhere"),
        pytest.raises(IndexLockedError, match="index elsewhere"),
    ):
        _indexer(settings, model).run(tmp_path / "p")


def test_missing_corrupt_and_stale_indexes_are_rebuilt_or_caught_up(
    tmp_path: Path, settings: Settings, model: CountingModel
) -> None:
    write_valid_images(tmp_path / "p", 6, seed=7)
    indexer = _indexer(settings, model)
    indexer.run(tmp_path / "p")
    expected = indexer.catalog.indexed_ids(model.fingerprint)
    index_dir = settings.data_dir / "indexes"

    committed = sorted(index_dir.glob("images.*.faiss"))[-1]
    data = bytearray(committed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    committed.write_bytes(bytes(data))
    live, report = _live(indexer)
    assert "images" in report.rebuilt and "corrupt" in report.rebuilt["images"]
    assert np.array_equal(live.images.ids(), expected)

    shutil.rmtree(index_dir)
    live, report = _live(indexer, writer=True)
    assert set(report.rebuilt) == {"images", "texts"}
    assert np.array_equal(live.images.ids(), expected)
    _assert_verified(indexer)

    # Catalog changes the index never saw (a crash before the index commit): replayed on open.
    new = write_valid_images(tmp_path / "q", 2, seed=8)
    other = IndexSet(
        settings.data_dir, indexer.catalog, fingerprint=model.fingerprint, dim=model.embedding_dim
    )
    generation = other.manifests()["images"]
    from blipsearch.storage.item_writes import FileFacts, ItemWrite
    from blipsearch.storage.schema import ItemStatus

    vectors = model.embed_images([Image.open(p) for p in new]).vectors
    ids = indexer.catalog.write(
        [
            ItemWrite(
                source=str(p),
                origin=None,
                status=ItemStatus.INDEXED,
                file=FileFacts("0" * 64, 1, 1.0),
                embedding=v,
                model_fingerprint=model.fingerprint,
            )
            for p, v in zip(new, vectors, strict=True)
        ]
    )
    assert not verify(settings, indexer.catalog).problems, "pending changes are notes, not problems"
    live, report = other.open(writer=False)
    assert report.caught_up_items == 2 and set(ids) <= set(live.images.ids().tolist())
    assert other.manifests()["images"] == generation, "a reader never commits"


def test_an_index_is_never_opened_with_another_model(
    tmp_path: Path, settings: Settings, model: CountingModel
) -> None:
    write_valid_images(tmp_path / "p", 2)
    indexer = _indexer(settings, model)
    indexer.run(tmp_path / "p")
    other = IndexSet(
        settings.data_dir, indexer.catalog, fingerprint="blip-" + "0" * 32, dim=model.embedding_dim
    )
    with pytest.raises(ModelMismatchError, match="blip-0000"):
        other.open(writer=False)


def test_catalog_keeps_float16_embeddings_and_the_index_matches_them(
    tmp_path: Path, settings: Settings, model: CountingModel
) -> None:
    write_valid_images(tmp_path / "p", 3, seed=9)
    half = settings.model_copy(update={"embedding_storage": "float16"})
    indexer = Indexer(half, model=model, catalog=Catalog.open(half))
    indexer.run(tmp_path / "p")
    item = next(iter(_items(indexer).values()))
    assert item.embedding_dtype == "float16" and len(item.embedding or b"") == 2 * model.embedding_dim
    _assert_verified(indexer)


def test_indexing_with_another_model_reembeds_and_replaces_the_index(
    tmp_path: Path, sqlite_settings: Settings, model: CountingModel, cpu_settings: Settings
) -> None:
    from blipsearch.models.tiny import make_tiny

    write_valid_images(tmp_path / "p", 3, seed=12)
    _indexer(sqlite_settings, model).run(tmp_path / "p")
    other_checkpoints = make_tiny(tmp_path / "other-model", seed=1)
    other = CountingModel(RetrievalModel.load(str(other_checkpoints.retrieval), cpu_settings))
    assert other.fingerprint != model.fingerprint
    indexer = _indexer(sqlite_settings, other)
    report = indexer.run(tmp_path / "p")
    assert report.embedded == 3 and other.images_embedded == 3
    assert "model changed" in report.rebuilt["images"]
    live, _ = _live(indexer)
    assert live.fingerprint == other.fingerprint and len(live.images) == 3
    with pytest.raises(ModelMismatchError):
        IndexSet(
            sqlite_settings.data_dir, indexer.catalog, fingerprint=model.fingerprint, dim=model.embedding_dim
        ).open(writer=False)
    _assert_verified(indexer)


def test_indexing_fills_the_vision_token_cache_for_reranking(
    tmp_path: Path, indexer_settings, model: CountingModel
) -> None:
    from blipsearch.search.vision import CachedVisionTokens

    settings = indexer_settings(**_PIPELINE, vision_tokens="cache")
    paths = write_valid_images(tmp_path / "photos", 6, seed=4)
    indexer = _indexer(settings, model)
    indexer.run(tmp_path / "photos")
    items = list(_items(indexer).values())
    assert len(items) == 6 and model.images_embedded == 6
    source = CachedVisionTokens(model, settings)
    cached = source.tokens(items)
    assert source.hits == 6 and source.misses == 0, "re-ranking needs no vision pass after indexing"
    by_name = {path.name: path for path in paths}
    for item in items:
        with Image.open(by_name[Path(item.source).name]) as opened:
            expected = model.vision_tokens([opened.convert("RGB")])[0]
        torch.testing.assert_close(cached[item.id], expected, atol=2e-3, rtol=2e-3)
    indexer.catalog.close()


def test_files_mode_writes_no_vision_tokens(tmp_path: Path, indexer_settings, model) -> None:
    settings = indexer_settings(**_PIPELINE, vision_tokens="files")
    write_valid_images(tmp_path / "photos", 3, seed=5)
    indexer = _indexer(settings, model)
    indexer.run(tmp_path / "photos")
    assert not (settings.data_dir / "vision-cache").exists()
    indexer.catalog.close()


def test_indexing_fills_the_vision_cache_only_up_to_its_bound(
    tmp_path: Path, indexer_settings, model
) -> None:
    from blipsearch.storage.vision_cache import VisionTokenCache

    one_item = 17 * 32 * 2 + 128  # the tiny model's tokens in float16 plus the .npy header
    settings = indexer_settings(**_PIPELINE, vision_tokens="cache", vision_cache_bytes=3 * one_item)
    write_valid_images(tmp_path / "photos", 6, seed=6)
    indexer = _indexer(settings, model)
    indexer.run(tmp_path / "photos")
    cache = VisionTokenCache.for_model(settings, model)
    files = list(cache.directory.glob("*.npy"))
    assert 1 <= len(files) <= 3 and cache.size_bytes() <= settings.vision_cache_bytes + one_item
    indexer.catalog.close()
