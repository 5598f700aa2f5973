"""The re-rank stage's own rules: how deep it goes and how ITM and ITC combine into one order.

The whole path (budget, cache, pages) runs through the service in test_search_service.py.
"""

from __future__ import annotations

import pytest
import torch

from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.rerank import ItmReranker, default_rerank_budget_ms, default_rerank_k
from blipsearch.search.results import SearchOptions
from blipsearch.search.vision import vision_token_source
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog


@pytest.fixture
def reranker_for(retrieval: RetrievalModel, cpu_settings: Settings, tmp_path):
    opened: list[Catalog] = []

    def make(**updates: object) -> ItmReranker:
        settings = cpu_settings.model_copy(update={"data_dir": tmp_path, **updates})
        catalog = Catalog.open(settings)
        opened.append(catalog)
        return ItmReranker(settings, retrieval, catalog, vision_token_source(retrieval, settings))

    yield make
    for catalog in opened:
        catalog.close()


def test_defaults_depend_on_the_device() -> None:
    assert default_rerank_k(torch.device("cpu")) == 8
    assert default_rerank_k(torch.device("cuda")) == 32
    assert default_rerank_budget_ms(torch.device("cpu")) == 400.0
    assert default_rerank_budget_ms(torch.device("cuda")) == 100.0


def test_depth_follows_the_request_then_the_setting_then_the_device(reranker_for) -> None:
    reranker = reranker_for(rerank=True, rerank_k=None)
    assert reranker.depth(SearchOptions()) == 8, "the CPU default"
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
