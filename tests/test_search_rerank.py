"""The re-rank stage's own rules: how deep it goes and how ITM and ITC combine into one order.

The whole path (cache, pages) runs through the service in test_search_service.py, and the depth's
independence of load on a manual clock in test_search_clock.py.
"""

from __future__ import annotations

import pytest
import torch

from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.rerank import ItmReranker
from blipsearch.search.rerank_depth import (
    CALIBRATION_CANDIDATES,
    decide_rerank_depth,
    default_rerank_budget_ms,
    default_rerank_k,
    depth_for_budget,
    rerank_deadline_seconds,
)
from blipsearch.search.results import SearchOptions
from blipsearch.search.vision import vision_token_source
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog

from test_search_clock import ManualClock


@pytest.fixture
def reranker_for(retrieval: RetrievalModel, cpu_settings: Settings, tmp_path):
    opened: list[Catalog] = []

    def make(clock: ManualClock | None = None, **updates: object) -> ItmReranker:
        settings = cpu_settings.model_copy(update={"data_dir": tmp_path, **updates})
        catalog = Catalog.open(settings)
        opened.append(catalog)
        vision = vision_token_source(retrieval, settings)
        return ItmReranker(settings, retrieval, catalog, vision, clock=clock or ManualClock())

    yield make
    for catalog in opened:
        catalog.close()


def test_defaults_depend_on_the_device() -> None:
    assert default_rerank_k(torch.device("cpu")) == 8
    assert default_rerank_k(torch.device("cuda")) == 32
    assert default_rerank_budget_ms(torch.device("cpu")) == 400.0
    assert default_rerank_budget_ms(torch.device("cuda")) == 100.0


def test_the_depth_is_what_fits_the_budget_at_least_one_at_most_the_devices() -> None:
    assert depth_for_budget(0.05, 0.4, 8) == 8
    assert depth_for_budget(0.1, 0.4, 8) == 4
    assert depth_for_budget(1.0, 0.4, 8) == 1, "a re-ranked query always scores one candidate"
    assert depth_for_budget(0.0, 0.4, 32) == 32


def test_the_safety_deadline_defaults_to_ten_budgets(cpu_settings: Settings) -> None:
    cpu = torch.device("cpu")
    assert rerank_deadline_seconds(cpu_settings.model_copy(update={"rerank_budget_ms": None}), cpu) == 4.0
    assert rerank_deadline_seconds(cpu_settings.model_copy(update={"rerank_budget_ms": 50.0}), cpu) == 0.5
    assert rerank_deadline_seconds(cpu_settings.model_copy(update={"rerank_deadline_ms": 70.0}), cpu) == 0.07


def test_calibration_times_the_model_on_the_clock_it_is_given(
    retrieval: RetrievalModel, cpu_settings: Settings
) -> None:
    settings = cpu_settings.model_copy(update={"rerank_k": None, "rerank_budget_ms": 100.0})
    # Two readings bracket the timed call: a clock that moves 0.2 s per reading measures 0.2 s for
    # the probe candidates, so 0.05 s each and two fit 100 ms.
    decided = decide_rerank_depth(retrieval, settings, ManualClock(step=0.2))
    assert decided.source == "calibrated" and decided.depth == 2
    assert decided.seconds_per_candidate == pytest.approx(0.2 / CALIBRATION_CANDIDATES)
    files = settings.model_copy(update={"vision_tokens": "files"})
    assert decide_rerank_depth(retrieval, files, ManualClock(step=0.2)).depth == 2
    explicit = decide_rerank_depth(
        retrieval, settings.model_copy(update={"rerank_k": 5}), ManualClock(step=9)
    )
    assert explicit.depth == 5 and explicit.source == "setting" and explicit.seconds_per_candidate is None


def test_depth_follows_the_request_then_the_setting_then_the_device(reranker_for) -> None:
    reranker = reranker_for(rerank=True, rerank_k=None)
    assert reranker.depth(SearchOptions()) == 8, "no time passes in calibration: the CPU's most"
    assert reranker.depth(SearchOptions(rerank_k=3)) == 3
    assert reranker.depth(SearchOptions(rerank=False, rerank_k=3)) == 0
    assert reranker_for(rerank=True, rerank_k=5).depth(SearchOptions()) == 5
    assert reranker_for(rerank=False, rerank_k=5).depth(SearchOptions()) == 0
    assert reranker_for(rerank=False).depth(SearchOptions(rerank=True)) == 8


def test_itm_alone_orders_and_ties_keep_the_first_stage_order(reranker_for) -> None:
    reranker = reranker_for(rerank_itc_weight=0.0)
    shortlist = [10, 20, 30, 40]
    itm = {10: 0.2, 20: 0.9, 30: 0.2, 40: 0.5}
    itc = {10: 0.9, 20: 0.1, 30: 0.95, 40: 0.0}
    assert reranker.by_rerank_key(shortlist, itm, itc, shortlist) == [20, 40, 10, 30]


def test_a_positive_itc_weight_lets_the_cosine_break_near_ties(reranker_for) -> None:
    reranker = reranker_for(rerank_itc_weight=10.0)
    shortlist = [1, 2]
    # Log-odds of 0.50 and 0.52 differ by 0.08; ten times the cosine gap of 0.5 outweighs that.
    itm = {1: 0.52, 2: 0.50}
    itc = {1: 0.1, 2: 0.6}
    assert reranker.by_rerank_key(shortlist, itm, itc, shortlist) == [2, 1]
    assert reranker_for(rerank_itc_weight=0.0).by_rerank_key(shortlist, itm, itc, shortlist) == [1, 2]
