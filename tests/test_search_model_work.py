"""Batched model work answers every request as an unbatched call would (fp32, to 1e-5).

Each test puts several concurrent requests in one shared forward (the batcher is paused until all
are queued) and compares every request's answer with the model called for that request alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from blipsearch.indexer.pipeline import Indexer
from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.batching import MicroBatcher
from blipsearch.search.model_work import ModelWork
from blipsearch.search.results import SearchOptions
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings

from imagesets import write_valid_images

ATOL = 1e-5
WAIT_S = 120.0
QUERIES = ["red", "a small blue bag with a long strap", "shoes", "a green hat on a wooden table"]


def _together(batcher: Any, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run `calls` in threads released into one batch; their results in order."""
    assert isinstance(batcher, MicroBatcher)
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    before = batcher.calls
    with batcher.paused():
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + WAIT_S
        while batcher.queued() < len(calls):
            assert time.monotonic() < deadline
            time.sleep(0.005)
    for thread in threads:
        thread.join(WAIT_S)
    assert not errors, errors
    assert batcher.calls == before + 1, "the requests did not share one forward"
    return results


@pytest.fixture
def work(cpu_settings: Settings, retrieval: RetrievalModel, captioner: Captioner) -> ModelWork:
    assert retrieval.dtype == torch.float32
    return ModelWork(cpu_settings.model_copy(update={"batching": True}), retrieval, lambda: captioner)


def test_query_texts_encoded_together_equal_each_alone(work: ModelWork, retrieval: RetrievalModel) -> None:
    batched = _together(work.texts, [lambda q=q: work.embed_texts([q])[0] for q in [*QUERIES, QUERIES[0]]])
    for query, vector in zip([*QUERIES, QUERIES[0]], batched, strict=True):
        np.testing.assert_allclose(vector, retrieval.embed_texts([query])[0], atol=ATOL, rtol=0)


def test_itm_pairs_of_several_queries_scored_together_equal_each_query_alone(
    work: ModelWork, retrieval: RetrievalModel, images: list[Image.Image]
) -> None:
    tokens = retrieval.vision_tokens(images[:6])
    shortlists = [tokens[0:3], tokens[2:6], tokens[1:2], tokens[0:6]]
    batched = _together(
        work.itm,
        [lambda q=q, t=t: work.itm_scores(q, t) for q, t in zip(QUERIES, shortlists, strict=True)],
    )
    for query, shortlist, scores in zip(QUERIES, shortlists, batched, strict=True):
        alone = retrieval.itm_scores(query, vision_tokens=shortlist)
        np.testing.assert_allclose(scores, alone, atol=ATOL, rtol=0)
    # one text per image (image-to-text re-ranking) joins the same forwards
    pairwise = _together(
        work.itm, [lambda: work.itm_scores(QUERIES, tokens[:4]), lambda: work.itm_scores("red", tokens[4:])]
    )
    np.testing.assert_allclose(
        pairwise[0], retrieval.itm_scores(QUERIES, vision_tokens=tokens[:4]), atol=ATOL, rtol=0
    )
    np.testing.assert_allclose(
        pairwise[1], retrieval.itm_scores("red", vision_tokens=tokens[4:]), atol=ATOL, rtol=0
    )


def test_query_images_embedded_together_equal_each_alone(
    work: ModelWork, retrieval: RetrievalModel, images: list[Image.Image]
) -> None:
    batched = _together(
        work.images, [lambda image=image: work.query_images([image])[0] for image in images[:4]]
    )
    for image, query in zip(images[:4], batched, strict=True):
        alone = retrieval.embed_images([image], return_vision_tokens=True)
        np.testing.assert_allclose(query.vector, alone.vectors[0], atol=ATOL, rtol=0)
        assert alone.vision_tokens is not None
        torch.testing.assert_close(query.tokens, alone.vision_tokens[0], atol=ATOL, rtol=0)


def test_captions_generated_together_equal_each_alone(
    work: ModelWork, captioner: Captioner, images: list[Image.Image]
) -> None:
    batched = _together(work.captions, [lambda image=image: work.caption([image])[0] for image in images[:3]])
    assert batched == [captioner.caption([image])[0] for image in images[:3]]


@pytest.fixture
def indexed(tmp_path: Path, indexer_settings: Callable[..., Settings], retrieval: RetrievalModel) -> Settings:
    settings = indexer_settings(rerank_k=4, query_cache_entries=0)
    folder = tmp_path / "photos"
    write_valid_images(folder, 10, seed=5)
    Indexer(settings, model=retrieval).run(folder)
    return settings


def test_search_pages_from_the_batched_service_equal_the_unbatched_service(
    indexed: Settings, retrieval: RetrievalModel
) -> None:
    batched = SearchService.open(indexed.model_copy(update={"batching": True}))
    unbatched = SearchService.open(indexed.model_copy(update={"batching": False}))
    try:
        options = SearchOptions(k=6, mode="vector")
        pages = _together(
            batched.work.texts, [lambda q=q: batched.text_to_images(q, options) for q in QUERIES]
        )
        assert batched.work.itm.calls >= 1
        for query, page in zip(QUERIES, pages, strict=True):
            expected = unbatched.text_to_images(query, options)
            assert page.reranked and page.reranked_count == expected.reranked_count == 4
            assert [hit.item_id for hit in page.hits] == [hit.item_id for hit in expected.hits]
            np.testing.assert_allclose(
                [hit.score for hit in page.hits], [hit.score for hit in expected.hits], atol=ATOL, rtol=0
            )
            assert not page.rerank_shed
    finally:
        batched.close()
        unbatched.close()
