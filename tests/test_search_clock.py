"""The search service's clock: the generation check and the re-rank budget follow the clock it is given,
so their tests hold on a machine of any speed and never sleep."""

from __future__ import annotations

from pathlib import Path

import pytest

from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.results import SearchOptions
from blipsearch.search.service import GENERATION_CHECK_SECONDS, SearchService
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


def _service(collection: Collection, retrieval: RetrievalModel, clock: ManualClock) -> SearchService:
    # The default budget (400 ms on a CPU), not the suite's generous one: the clock alone decides.
    settings = collection.settings.model_copy(update={"rerank_budget_ms": None})
    return SearchService(settings, retrieval, collection.catalog, clock=clock)


def test_the_rerank_budget_is_measured_on_the_services_clock(
    collection: Collection, retrieval: RetrievalModel
) -> None:
    options = SearchOptions(k=8, rerank_k=6, mode="vector")
    stopped = _service(collection, retrieval, ManualClock()).text_to_images(QUERY, options)
    assert stopped.reranked_count == 6  # no time passes: the whole shortlist fits the budget

    slow = _service(collection, retrieval, ManualClock(step=1.0)).text_to_images(QUERY, options)
    assert slow.reranked_count == 1  # each reading costs a second: only the one sure candidate


def test_a_new_generation_is_looked_for_once_the_check_interval_has_passed(
    collection: Collection, retrieval: RetrievalModel
) -> None:
    clock = ManualClock()
    service = _service(collection, retrieval, clock)
    service.refresh()
    before = dict(service.live.generations)
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
    assert service.live.generations == before  # not yet time to look

    clock.advance(0.01)
    service.refresh()
    assert service.live.generations == committed
