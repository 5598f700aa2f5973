"""The query service on a constructed collection where every right answer is known.

Real image files (so that ITM re-ranking and captions read them), real catalog and FAISS, the tiny
BLIP model; the stored ITC embeddings are planted so that the expected winner is unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.filters import parse_filters
from blipsearch.search.results import SearchOptions
from blipsearch.search.service import SearchService
from blipsearch.search.vision import CachedVisionTokens, FileVisionTokens
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_writes import FileFacts, ItemMetadata, ItemWrite, TextVector
from blipsearch.storage.schema import SLOT_OF_KIND, ItemStatus, TextKind

from imagesets import TEST_MAX_PIXELS, write_valid_images

QUERY = "a red dress with white dots"
COUNT = 24


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@dataclass
class Collection:
    settings: Settings
    catalog: Catalog
    paths: list[Path]
    ids: list[int]
    embeddings: dict[int, np.ndarray]
    query_vector: np.ndarray
    planted: int
    """The item whose embedding is the text query's own vector."""
    sku_item: int
    """An item far from the query in ITC space whose SKU and brand appear in no other item."""


def _settings(tmp_path: Path, database_url: str, tiny_checkpoints, **changes: object) -> Settings:
    fields: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "retrieval_model": str(tiny_checkpoints.retrieval),
        "caption_model": str(tiny_checkpoints.caption),
        "device": "cpu",
        "dtype": "float32",
        "offline": True,
        "max_image_pixels": TEST_MAX_PIXELS,
        # the calibrated depth reaches the CPU's most (8) on a machine of any speed; calibration
        # itself is tested on a manual clock in test_search_clock.py
        "rerank_budget_ms": 600_000.0,
    }
    fields.update(changes)
    return Settings(**fields)  # type: ignore[arg-type]


def _build(tmp_path: Path, database_url: str, tiny_checkpoints, retrieval: RetrievalModel) -> Collection:
    settings = _settings(tmp_path, database_url, tiny_checkpoints)
    catalog = Catalog.open(settings)
    paths = write_valid_images(tmp_path / "photos", COUNT, seed=21)
    query_vector = retrieval.embed_texts([QUERY])[0]
    rng = np.random.default_rng(3)
    embeddings = []
    for index in range(COUNT):
        noise = _unit(rng.normal(size=query_vector.shape))
        # Similarity to the query falls with the index: item 5 is the query itself.
        weight = 1.0 if index == 5 else max(0.0, 0.8 - 0.03 * index)
        embeddings.append(_unit(weight * query_vector + (1 - weight) * noise) if index != 5 else query_vector)
    embeddings[COUNT - 1] = _unit(-query_vector + 0.1 * rng.normal(size=query_vector.shape))
    writes = []
    for index, path in enumerate(paths):
        title = f"summer item {index}"
        text_vector = _unit(rng.normal(size=query_vector.shape))
        writes.append(
            ItemWrite(
                source=str(path),
                origin=str(path.parent),
                status=ItemStatus.INDEXED,
                file=FileFacts(f"{index:064x}", path.stat().st_size, path.stat().st_mtime, "PNG", 32, 32),
                embedding=embeddings[index],
                model_fingerprint=retrieval.fingerprint,
                metadata=ItemMetadata(
                    external_id="ZX-9000" if index == COUNT - 1 else f"SKU-{index}",
                    title=title,
                    brand="Quokkaware" if index == COUNT - 1 else "acme",
                    category=["dresses", "shoes"][index % 2],
                    price=Decimal(index * 5),
                    tags=("red",) if index % 3 == 0 else (),
                ),
                texts=[TextVector(SLOT_OF_KIND[TextKind.TITLE], TextKind.TITLE.value, title, text_vector)],
            )
        )
    ids = catalog.write(writes)
    return Collection(
        settings=settings,
        catalog=catalog,
        paths=paths,
        ids=ids,
        embeddings=dict(zip(ids, embeddings, strict=True)),
        query_vector=query_vector,
        planted=ids[5],
        sku_item=ids[COUNT - 1],
    )


@pytest.fixture
def collection(tmp_path: Path, tiny_checkpoints, retrieval: RetrievalModel) -> Collection:
    built = _build(tmp_path, f"sqlite:///{tmp_path / 'catalog.sqlite3'}", tiny_checkpoints, retrieval)
    yield built
    built.catalog.close()


@pytest.fixture
def service(collection: Collection, retrieval: RetrievalModel, captioner) -> SearchService:
    return SearchService(collection.settings, retrieval, collection.catalog, captioner=captioner)


def _ids(page) -> list[int]:  # type: ignore[no-untyped-def]
    return [hit.item_id for hit in page.hits]


def _brute_force(collection: Collection, vector: np.ndarray, allowed: list[int], k: int) -> list[int]:
    ranked = sorted(allowed, key=lambda i: (-float(collection.embeddings[i] @ vector), i))
    return ranked[:k]


def test_text_query_returns_the_planted_item_first(service: SearchService, collection: Collection) -> None:
    page = service.text_to_images(QUERY, SearchOptions(k=5, rerank=False, mode="vector"))
    assert _ids(page)[0] == collection.planted and page.hits[0].rank == 1
    assert page.hits[0].itc_score == pytest.approx(1.0, abs=1e-5)
    assert _ids(page) == _brute_force(collection, collection.query_vector, collection.ids, 5)
    first = page.hits[0]
    assert first.item["sku"] == "SKU-5" and first.item["category"] == "shoes" and first.itm_score is None


def test_reranking_orders_the_shortlist_exactly_by_itm(
    service: SearchService, collection: Collection, retrieval: RetrievalModel
) -> None:
    page = service.text_to_images(QUERY, SearchOptions(k=8, rerank_k=6, mode="vector"))
    assert page.reranked
    shortlist = _brute_force(collection, collection.query_vector, collection.ids, 6)
    head = page.hits[:6]
    assert {hit.item_id for hit in head} == set(shortlist), "ITM reorders the ITC shortlist, nothing else"
    by_id = {item_id: collection.paths[collection.ids.index(item_id)] for item_id in shortlist}
    images = [Image.open(by_id[item_id]).convert("RGB") for item_id in shortlist]
    expected = dict(zip(shortlist, retrieval.itm_scores(QUERY, images), strict=True))
    for hit in head:
        assert hit.itm_score == pytest.approx(expected[hit.item_id], abs=1e-5)
        assert hit.score == hit.itm_score
    assert [hit.itm_score for hit in head] == sorted((hit.itm_score for hit in head), reverse=True)
    # After the shortlist, ITC order resumes, unscored.
    rest = _brute_force(collection, collection.query_vector, collection.ids, 8)[6:]
    assert [hit.item_id for hit in page.hits[6:]] == rest and all(h.itm_score is None for h in page.hits[6:])


def test_reranking_with_an_itc_weight_orders_by_itm_log_odds_plus_weighted_cosine(
    collection: Collection, retrieval: RetrievalModel
) -> None:
    weight = 30.0
    settings = collection.settings.model_copy(update={"rerank_itc_weight": weight})
    service = SearchService(settings, retrieval, collection.catalog)
    page = service.text_to_images(QUERY, SearchOptions(k=8, rerank_k=6, mode="vector"))
    shortlist = _brute_force(collection, collection.query_vector, collection.ids, 6)
    by_id = {item_id: collection.paths[collection.ids.index(item_id)] for item_id in shortlist}
    images = [Image.open(by_id[item_id]).convert("RGB") for item_id in shortlist]
    probability = retrieval.itm_scores(QUERY, images).astype(np.float64)
    cosine = np.array([float(collection.embeddings[i] @ collection.query_vector) for i in shortlist])
    key = np.log(probability) - np.log1p(-probability) + weight * cosine
    expected = [shortlist[i] for i in np.argsort(-key, kind="stable")]
    assert _ids(page)[:6] == expected
    assert all(hit.itm_score is not None and 0 <= hit.itm_score <= 1 for hit in page.hits[:6])


def test_filters_return_the_true_filtered_top_k(service: SearchService, collection: Collection) -> None:
    filters = parse_filters(["category=dresses", "price<=80"])
    page = service.text_to_images(QUERY, SearchOptions(k=4, rerank=False, mode="vector", filters=filters))
    allowed = [
        i for i in collection.ids if (i - collection.ids[0]) % 2 == 0 and (i - collection.ids[0]) * 5 <= 80
    ]
    assert _ids(page) == _brute_force(collection, collection.query_vector, allowed, 4)
    assert all(hit.item["category"] == "dresses" and Decimal(hit.item["price"]) <= 80 for hit in page.hits)
    nothing = service.text_to_images(
        QUERY, SearchOptions(filters=parse_filters(["brand=nobody"]), rerank=False)
    )
    assert nothing.hits == [] and nothing.next_offset is None


def test_pages_are_disjoint_deterministic_and_complete(
    service: SearchService, collection: Collection
) -> None:
    seen: list[int] = []
    offset: int | None = 0
    while offset is not None:
        page = service.text_to_images(QUERY, SearchOptions(k=5, offset=offset, rerank=False, mode="vector"))
        assert [hit.rank for hit in page.hits] == list(range(offset + 1, offset + 1 + len(page.hits)))
        seen += _ids(page)
        offset = page.next_offset
    assert seen == _brute_force(collection, collection.query_vector, collection.ids, COUNT)
    again = service.text_to_images(QUERY, SearchOptions(k=5, offset=5, rerank_k=8, mode="vector"))
    assert _ids(again) == _ids(
        service.text_to_images(QUERY, SearchOptions(k=5, offset=5, rerank_k=8, mode="vector"))
    )


def test_image_query_and_more_like_this(
    service: SearchService, collection: Collection, retrieval: RetrievalModel
) -> None:
    upload = collection.paths[2].read_bytes()
    vector = retrieval.embed_images([Image.open(collection.paths[2]).convert("RGB")]).vectors[0]
    page = service.image_to_images(upload, options=SearchOptions(k=3))
    assert _ids(page) == _brute_force(collection, vector, collection.ids, 3)
    similar = service.image_to_images(item_id=collection.planted, options=SearchOptions(k=3))
    assert collection.planted not in _ids(similar)
    others = [i for i in collection.ids if i != collection.planted]
    assert _ids(similar) == _brute_force(collection, collection.embeddings[collection.planted], others, 3)
    with pytest.raises(InvalidInputError, match="not an indexed item"):
        service.image_to_images(item_id=999_999)
    with pytest.raises(InvalidInputError, match="either a query image or the id"):
        service.image_to_images(upload, item_id=collection.planted)
    with pytest.raises(InvalidInputError, match="query image"):
        service.image_to_images(b"not an image")


def test_image_to_texts_finds_the_planted_text(
    service: SearchService, collection: Collection, retrieval: RetrievalModel
) -> None:
    image = Image.open(collection.paths[0]).convert("RGB")
    vector = retrieval.embed_images([image]).vectors[0]
    target = collection.ids[9]
    collection.catalog.write(
        [
            ItemWrite(
                source=str(collection.paths[9]),
                origin=None,
                status=ItemStatus.INDEXED,
                item_id=target,
                model_fingerprint=retrieval.fingerprint,
                texts=[
                    TextVector(SLOT_OF_KIND[TextKind.DESCRIPTION], "description", "the planted words", vector)
                ],
            )
        ]
    )
    page = service.image_to_texts(image, options=SearchOptions(k=3, rerank=False))
    assert page.hits[0].item_id == target and page.hits[0].text == "the planted words"
    assert page.hits[0].kind == "description" and page.hits[0].itc_score == pytest.approx(1.0, abs=1e-5)
    reranked = service.image_to_texts(image, options=SearchOptions(k=3, rerank_k=3))
    expected = retrieval.itm_scores([hit.text for hit in reranked.hits], [image] * 3)
    assert [hit.itm_score for hit in reranked.hits] == pytest.approx(sorted(expected, reverse=True), abs=1e-5)


def test_hybrid_finds_an_exact_sku_that_vector_search_ranks_low(
    service: SearchService, collection: Collection
) -> None:
    query = "ZX-9000 dress"
    vector_only = service.text_to_images(query, SearchOptions(k=COUNT, rerank=False, mode="vector"))
    assert _ids(vector_only).index(collection.sku_item) >= COUNT - 3, "the encoder cannot know the SKU"
    hybrid = service.text_to_images(query, SearchOptions(k=3, rerank=False, mode="hybrid"))
    assert collection.sku_item in _ids(hybrid)
    keyword = service.text_to_images(query, SearchOptions(k=3, rerank=False, mode="keyword"))
    assert _ids(keyword)[0] == collection.sku_item and keyword.hits[0].keyword_score is not None
    assert keyword.hits[0].itc_score is not None, "keyword hits still carry their ITC score"
    brand = service.text_to_images("quokkaware", SearchOptions(k=1, rerank=False, mode="hybrid"))
    assert _ids(brand) == [collection.sku_item]


def test_captions_are_generated_once_and_stored(
    service: SearchService, collection: Collection, captioner, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = captioner.caption

    def counting(images, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(images))
        return original(images, *args, **kwargs)

    monkeypatch.setattr(captioner, "caption", counting)
    first = service.text_to_images(
        QUERY, SearchOptions(k=3, rerank=False, generate_captions=True, mode="vector")
    )
    assert all(hit.caption for hit in first.hits) and calls == [3]
    second = service.text_to_images(
        QUERY, SearchOptions(k=3, rerank=False, generate_captions=True, mode="vector")
    )
    assert [hit.caption for hit in second.hits] == [hit.caption for hit in first.hits] and calls == [3]
    stored = collection.catalog.items_by_ids([first.hits[0].item_id])[0]
    assert stored.caption == first.hits[0].caption and stored.caption_fingerprint == captioner.fingerprint


def test_new_items_are_searchable_without_a_restart(
    service: SearchService, collection: Collection, retrieval: RetrievalModel
) -> None:
    path = write_valid_images(collection.paths[0].parent / "late", 1, seed=99)[0]
    [late] = collection.catalog.write(
        [
            ItemWrite(
                source=str(path),
                origin=None,
                status=ItemStatus.INDEXED,
                file=FileFacts("f" * 64, 1, 1.0),
                embedding=collection.query_vector,
                model_fingerprint=retrieval.fingerprint,
            )
        ]
    )
    page = service.text_to_images(QUERY, SearchOptions(k=2, rerank=False, mode="vector"))
    assert set(_ids(page)) == {collection.planted, late}
    collection.catalog.delete_items([late])
    assert late not in _ids(service.text_to_images(QUERY, SearchOptions(k=2, rerank=False, mode="vector")))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (SearchOptions(k=0), "k must be between"),
        (SearchOptions(k=101), "k must be between"),
        (SearchOptions(offset=-1), "offset must be"),
        (SearchOptions(rerank_k=0), "rerank_k must be"),
        (SearchOptions(mode="fuzzy"), "mode must be"),  # type: ignore[arg-type]
    ],
)
def test_bad_queries_are_clear_errors(service: SearchService, options: SearchOptions, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        service.text_to_images(QUERY, options)


def test_empty_query_is_refused(service: SearchService) -> None:
    with pytest.raises(InvalidInputError):
        service.text_to_images("   ")


def test_cached_vision_tokens_match_the_files_and_stay_bounded(
    collection: Collection, retrieval: RetrievalModel
) -> None:
    items = collection.catalog.items_by_ids(collection.ids[:4])
    direct = FileVisionTokens(retrieval, collection.settings).tokens(items)
    one_entry = int(np.prod(direct[items[0].id].shape)) * 2 + 128
    settings = collection.settings.model_copy(update={"vision_cache_bytes": one_entry * 3})
    cache = CachedVisionTokens(retrieval, settings)
    cold = cache.tokens(items)
    warm = cache.tokens(items[-1:])
    assert cache.misses == 4 and cache.hits == 1
    for item in items:
        assert torch.allclose(cold[item.id].float(), direct[item.id].float(), atol=1e-5)
    assert torch.allclose(warm[items[-1].id].float(), direct[items[-1].id].float(), atol=1e-2)
    assert cache.size_bytes() <= one_entry * 3
    broken = collection.catalog.items_by_ids(collection.ids[4:5])
    Path(broken[0].source).write_bytes(b"gone bad")
    assert cache.tokens(broken) == {}, "an unreadable file is left out, not fatal"


def test_the_rerank_k_setting_scores_exactly_that_many_and_reuses_known_scores(
    collection: Collection, retrieval: RetrievalModel, captioner
) -> None:
    one = SearchService(
        collection.settings.model_copy(update={"rerank_k": 1}),
        retrieval,
        collection.catalog,
        captioner=captioner,
    )
    options = SearchOptions(k=8, mode="vector")
    first = one.text_to_images(QUERY, options)
    assert first.reranked and first.reranked_count == 1 and not first.rerank_deadline_hit
    assert one.reranker.deployment_depth().source == "setting", "an explicit rerank_k is not calibrated"
    shortlist = _brute_force(collection, collection.query_vector, collection.ids, 8)
    # The best ITC candidate was scored; everything after the shortlist follows in ITC order.
    assert first.hits[0].item_id == shortlist[0] and first.hits[0].itm_score is not None
    assert [hit.item_id for hit in first.hits[1:8]] == shortlist[1:]
    assert all(hit.itm_score is None for hit in first.hits[1:])
    # A repeat reuses the known score.
    again = one.text_to_images(QUERY, options)
    assert again.reranked_count == 1 and one.itm_cache.hits == 1

    six = SearchService(
        collection.settings.model_copy(update={"rerank_k": 6}),
        retrieval,
        collection.catalog,
        captioner=captioner,
    )
    full = six.text_to_images(QUERY, options)
    assert full.reranked_count == 6
    scores = {hit.item_id: hit.itm_score for hit in full.hits[:6]}
    assert again.hits[0].itm_score == pytest.approx(scores[again.hits[0].item_id], abs=1e-4)
    assert six.text_to_images(QUERY, SearchOptions(k=8, rerank_k=3, mode="vector")).reranked_count == 3


def test_repeated_queries_come_from_the_query_cache(service: SearchService) -> None:
    options = SearchOptions(k=5, rerank_k=4, mode="vector")
    first = service.text_to_images(QUERY, options)
    hits_before = service.query_vectors.hits
    second = service.text_to_images(QUERY, options)
    assert service.query_vectors.hits == hits_before + 1
    assert [h.item_id for h in second.hits] == [h.item_id for h in first.hits]
    assert [h.itm_score for h in second.hits] == [h.itm_score for h in first.hits]
    assert service.itm_cache.hits >= 4


def test_query_cache_can_be_turned_off(collection: Collection, retrieval: RetrievalModel) -> None:
    off = SearchService(
        collection.settings.model_copy(update={"query_cache_entries": 0}), retrieval, collection.catalog
    )
    off.text_to_images(QUERY, SearchOptions(k=3, rerank=False, mode="vector"))
    off.text_to_images(QUERY, SearchOptions(k=3, rerank=False, mode="vector"))
    assert len(off.query_vectors) == 0 and off.query_vectors.hits == 0
