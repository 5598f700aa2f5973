"""The search service's clock: the generation check, the re-rank depth's calibration and the re-rank
safety deadline follow the clock it is given, so their tests hold on a machine of any speed and never
sleep."""

from __future__ import annotations

from pathlib import Path

import pytest

from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.results import SearchOptions
from blipsearch.search.service import SearchService
from blipsearch.storage.faiss_store import GENERATION_CHECK_SECONDS, FaissStore
from blipsearch.storage.live import IndexSet

from test_search_service import QUERY, Collection, _build


class ManualClock:
    """Seconds that pass only when the test says so, or `step` at every reading (a slow machine)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def collection(tmp_path: Path, tiny_checkpoints, retrieval: RetrievalModel) -> Collection:
    built = _build(tmp_path, f"sqlite:///{tmp_path / 'catalog.sqlite3'}", tiny_checkpoints, retrieval)
    yield built
    built.catalog.close()


def _service(
    collection: Collection, retrieval: RetrievalModel, clock: ManualClock, **settings: object
) -> SearchService:
    # The default budget (400 ms on a CPU), not the suite's generous one: the clock alone decides.
    changed = collection.settings.model_copy(update={"rerank_budget_ms": None, **settings})
    return SearchService(changed, retrieval, collection.catalog, clock=clock)


def _ids(page) -> list[int]:
    return [hit.item_id for hit in page.hits]


def test_the_depth_is_calibrated_once_on_the_services_clock(
    collection: Collection, retrieval: RetrievalModel
) -> None:
    options = SearchOptions(k=8, mode="vector")
    stopped = _service(collection, retrieval, ManualClock()).text_to_images(QUERY, options)
    assert stopped.reranked_count == 8  # no time passes: the CPU's most fits the budget

    clock = ManualClock(step=0.4)  # 0.4 s over the probe candidates: 0.1 s each, four fit 400 ms
    service = _service(collection, retrieval, clock)
    first = service.text_to_images(QUERY, options)
    assert first.reranked_count == 4 and not first.rerank_deadline_hit
    clock.step = 0.0  # the machine gets faster, or slower: the depth stays what it was
    assert service.text_to_images("summer", options).reranked_count == 4
    clock.step = 1.0
    assert service.text_to_images("a red bag", options).reranked_count == 4
    assert service.reranker.deployment_depth().source == "calibrated"


def test_an_explicit_rerank_k_is_not_calibrated(collection: Collection, retrieval: RetrievalModel) -> None:
    clock = ManualClock(step=5.0)  # calibration would make this one candidate
    service = _service(collection, retrieval, clock, rerank_k=6, rerank_deadline_ms=600_000.0)
    assert service.text_to_images(QUERY, SearchOptions(k=8, mode="vector")).reranked_count == 6
    assert service.reranker.deployment_depth().seconds_per_candidate is None


def test_a_slow_machine_gives_the_same_order_and_pages(
    collection: Collection, retrieval: RetrievalModel
) -> None:
    def calibrated_at_four(slow_step: float) -> SearchService:
        clock = ManualClock(step=0.4)
        service = _service(collection, retrieval, clock, rerank_deadline_ms=600_000.0)
        service.reranker.deployment_depth()
        clock.step = slow_step  # each ITM slice now costs that much (every reading of the clock)
        return service

    fast, slow = calibrated_at_four(0.0), calibrated_at_four(30.0)
    options = SearchOptions(k=8, mode="vector")
    quick, loaded = fast.text_to_images(QUERY, options), slow.text_to_images(QUERY, options)
    assert _ids(loaded) == _ids(quick) and loaded.reranked_count == quick.reranked_count == 4
    assert not loaded.rerank_deadline_hit
    # the first service filled the float16 vision-token cache the second one reads: equal to that precision
    assert [hit.itm_score for hit in loaded.hits[:4]] == pytest.approx(
        [hit.itm_score for hit in quick.hits[:4]], abs=1e-3
    )

    later = calibrated_at_four(30.0)
    one = later.text_to_images(QUERY, SearchOptions(k=3, mode="vector"))
    two = later.text_to_images(QUERY, SearchOptions(k=3, offset=3, mode="vector"))
    assert _ids(one) + _ids(two) == _ids(quick)[:6], "pages neither overlap nor skip"
    assert one.reranked_count == two.reranked_count == 4


def test_a_hit_deadline_keeps_the_first_stage_order_for_the_rest_and_says_so(
    collection: Collection, retrieval: RetrievalModel
) -> None:
    options = SearchOptions(k=8, mode="vector")
    whole = _service(collection, retrieval, ManualClock(), rerank_k=8).text_to_images(QUERY, options)
    # Unbatched, eight candidates are scored in slices of two, with a reading after each: at 0.6 s a
    # reading, the second slice ends past the 1 s deadline and the other four are never scored.
    # (Batched, the shortlist goes in one shared forward; request_deadline_ms bounds it instead.)
    stalled = _service(
        collection,
        retrieval,
        ManualClock(step=0.6),
        rerank_k=8,
        rerank_deadline_ms=1000.0,
        batching=False,
    )
    cut = stalled.text_to_images(QUERY, options)
    assert cut.rerank_deadline_hit and cut.reranked_count == 4
    assert cut.as_dict()["rerank_deadline_hit"] is True
    assert not whole.rerank_deadline_hit and whole.as_dict()["rerank_deadline_hit"] is False
    first_stage = _ids(
        _service(collection, retrieval, ManualClock(), rerank=False).text_to_images(QUERY, options)
    )
    assert sorted(_ids(cut)[:4]) == sorted(first_stage[:4])
    assert _ids(cut)[4:] == first_stage[4:8]
    assert all(hit.itm_score is not None for hit in cut.hits[:4])
    assert all(hit.itm_score is None for hit in cut.hits[4:])


def test_a_new_generation_is_looked_for_once_the_check_interval_has_passed(
    collection: Collection, retrieval: RetrievalModel
) -> None:
    clock = ManualClock()
    service = _service(collection, retrieval, clock)
    service.refresh()
    before = dict(_faiss(service).live.generations)
    writer = IndexSet(
        collection.settings.data_dir,
        collection.catalog,
        fingerprint=retrieval.fingerprint,
        dim=retrieval.embedding_dim,
    )
    committed = writer.rebuild().generations
    assert committed["images"] > before.get("images", 0)

    clock.advance(GENERATION_CHECK_SECONDS - 0.01)
    service.refresh()
    assert _faiss(service).live.generations == before  # not yet time to look

    clock.advance(0.01)
    service.refresh()
    assert _faiss(service).live.generations == committed


def _faiss(service: SearchService) -> FaissStore:
    assert isinstance(service.store, FaissStore)
    return service.store
