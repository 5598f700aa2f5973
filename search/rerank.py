"""ITM re-ranking, the second stage: a shortlist of first-stage candidates scored by the ITM head.

Kept apart from the service because it has its own state (scores already known, the deployment's
depth) and its own rules (how deep, when to give up, how ITM and ITC combine).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from blipsearch.errors import FeatureUnavailableError
from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.fusion import rerank_scores
from blipsearch.search.model_work import ModelWork
from blipsearch.search.query_cache import LruCache
from blipsearch.search.rerank_depth import RerankDepth, decide_rerank_depth, rerank_deadline_seconds
from blipsearch.search.results import SearchOptions
from blipsearch.search.vision import FileVisionTokens
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.schema import Item, ItemText

log = logging.getLogger(__name__)

DepthAgreement = Callable[[Callable[[], RerankDepth]], RerankDepth]
"""Given this process's way to decide the depth, the depth every serving process uses."""

DEADLINE_CHECKS = 4
"""Slices a shortlist is scored in, so the safety deadline can stop between them."""


@dataclass
class Reranked:
    """A text query's order after re-ranking, its ITM scores, and whether the safety deadline
    stopped scoring before the whole shortlist (the unscored rest then keeps its first-stage order)."""

    ids: list[int]
    itm: dict[int, float]
    deadline_hit: bool = False


class ItmReranker:
    """Orders a query's shortlist by ITM (with `rerank_itc_weight`, ITM and ITC: `rerank_scores`)."""

    def __init__(
        self,
        settings: Settings,
        model: RetrievalModel,
        catalog: Catalog,
        vision: FileVisionTokens,
        work: ModelWork | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`work` is the service's shared model work; alone, the reranker batches only its own."""
        self.settings = settings
        self.model = model
        self.catalog = catalog
        self.vision = vision
        self.work = work or ModelWork(settings, model, captioner=_no_captioner)
        self.clock = clock
        self.itm_cache: LruCache[float] = LruCache(settings.query_cache_entries * 8)
        self.decided: RerankDepth | None = None
        self.agreement: DepthAgreement | None = None
        """Set by a server running several worker processes: they must all use one depth."""
        self._deciding = threading.Lock()

    def deployment_depth(self) -> RerankDepth:
        """The depth every query of this deployment uses, decided on first need and then kept."""
        with self._deciding:
            if self.decided is None:
                agree = self.agreement or (lambda decide: decide())
                self.decided = agree(lambda: decide_rerank_depth(self.model, self.settings, self.clock))
                log.info(
                    "re-rank depth decided",
                    extra={
                        "rerank_depth": self.decided.depth,
                        "source": self.decided.source,
                        "seconds_per_candidate": self.decided.seconds_per_candidate,
                        "rerank_budget_ms": self.decided.budget_ms,
                        "rerank_deadline_ms": self.deadline_seconds() * 1000.0,
                    },
                )
            return self.decided

    def depth(self, options: SearchOptions) -> int:
        enabled = self.settings.rerank if options.rerank is None else options.rerank
        if not enabled:
            return 0
        return options.rerank_k or self.deployment_depth().depth

    def images_for_text(self, query: str, ids: list[int], rerank_k: int, itc: dict[int, float]) -> Reranked:
        """The first `rerank_k` ids ordered by ITM (with `rerank_itc_weight`, ITM and ITC:
        `rerank_scores`), every one of them scored unless the safety deadline passes.

        Scores already known for this query and image (an earlier page, a repeated query) cost
        nothing. The rest are scored best-ITC first, in slices; once the deadline has passed no
        further slice starts, and the scored candidates lead, the unscored follow in first-stage
        order, and the result says so. A candidate that cannot be scored (its file is gone)
        follows in first-stage order too, without the flag.
        """
        shortlist = ids[:rerank_k]
        items = {item.id: item for item in self.catalog.items_by_ids(shortlist, related=False)}
        itm: dict[int, float] = {}
        pending: list[Item] = []
        for item_id in shortlist:
            item = items.get(item_id)
            if item is None:
                continue
            known = self.itm_cache.get((query, item_id, item.content_hash))
            if known is None:
                pending.append(item)
            else:
                itm[item_id] = known
        deadline = self.clock() + self.deadline_seconds()
        # batched, the whole shortlist goes at once: the batcher itself drops a request past its deadline
        checks = 1 if self.work.batched else DEADLINE_CHECKS
        slice_size = max(1, -(-len(shortlist) // checks))
        deadline_hit = False
        while pending:
            batch, pending = pending[:slice_size], pending[slice_size:]
            tokens = self.vision.tokens(batch)
            scorable = [item for item in batch if item.id in tokens]
            if scorable:
                stacked = torch.stack([tokens[item.id] for item in scorable])
                probabilities = self.work.itm_scores(query, stacked)
                for item, probability in zip(scorable, probabilities, strict=True):
                    itm[item.id] = float(probability)
                    self.itm_cache.put((query, item.id, item.content_hash), float(probability))
            if pending and self.clock() >= deadline:
                deadline_hit = True
                log.warning(
                    "re-rank deadline hit",
                    extra={"scored": len(itm), "unscored": len(pending), "rerank_k": rerank_k},
                )
                break
        if not itm:
            return Reranked(ids, {}, deadline_hit)
        ordered = self.by_rerank_key(list(itm), itm, itc, shortlist)
        unscored = [item_id for item_id in shortlist if item_id not in itm]
        return Reranked(ordered + unscored + ids[rerank_k:], itm, deadline_hit)

    def by_rerank_key(
        self, scored: list[int], itm: dict[int, float], itc: dict[int, float], shortlist: list[int]
    ) -> list[int]:
        """`scored` best first by `rerank_scores`; equal keys keep their first-stage order."""
        position = {item_id: index for index, item_id in enumerate(shortlist)}
        keys = rerank_scores(
            np.array([itm[i] for i in scored]),
            np.array([itc.get(i, 0.0) for i in scored]),
            self.settings.rerank_itc_weight,
        )
        key = dict(zip(scored, keys.tolist(), strict=True))
        return sorted(scored, key=lambda item_id: (-key[item_id], position[item_id]))

    def deadline_seconds(self) -> float:
        return rerank_deadline_seconds(self.settings, self.model.device)

    def texts_for_image(
        self,
        image_tokens: torch.Tensor | None,
        item_id: int | None,
        order: list[int],
        rows: dict[int, ItemText],
        rerank_k: int,
        itc: dict[int, float],
    ) -> tuple[list[int], dict[int, float]]:
        shortlist = order[:rerank_k]
        if image_tokens is not None:
            tokens = image_tokens[None]
        else:
            found = self.vision.tokens(self.catalog.items_by_ids([item_id] if item_id is not None else []))
            if item_id not in found:
                return order, {}
            tokens = found[item_id][None]
        expanded = tokens.expand(len(shortlist), *tokens.shape[1:])
        probabilities = self.work.itm_scores([rows[i].text for i in shortlist], expanded)
        itm = {vector_id: float(p) for vector_id, p in zip(shortlist, probabilities, strict=True)}
        return self.by_rerank_key(shortlist, itm, itc, shortlist) + order[rerank_k:], itm


def _no_captioner() -> Captioner:
    raise FeatureUnavailableError("The re-ranker writes no captions.")
