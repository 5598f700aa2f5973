"""ITM re-ranking, the second stage: a shortlist of first-stage candidates scored by the ITM head.

Kept apart from the service because it has its own state (scores already known, the measured cost
per candidate) and its own rules (how deep, how long, how ITM and ITC combine).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.fusion import rerank_scores
from blipsearch.search.query_cache import LruCache, RerankPace
from blipsearch.search.results import SearchOptions
from blipsearch.search.vision import FileVisionTokens
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.schema import Item, ItemText


def default_rerank_k(device: torch.device) -> int:
    """On a CPU each candidate costs a cross-attention pass (and a vision-encoder pass when its
    tokens are not cached), so 8 keeps a query within seconds (bench/results/); on an accelerator
    both passes batch and cost far less, so the shortlist is 32."""
    return 8 if device.type == "cpu" else 32


def default_rerank_budget_ms(device: torch.device) -> float:
    """On a CPU, about eight cached BLIP-base candidates fit in 400 ms (bench/results/), which keeps
    a query interactive; on an accelerator 100 ms covers a deep shortlist."""
    return 400.0 if device.type == "cpu" else 100.0


class ItmReranker:
    """Orders a query's shortlist by ITM (with `rerank_itc_weight`, ITM and ITC: `rerank_scores`)."""

    def __init__(
        self,
        settings: Settings,
        model: RetrievalModel,
        catalog: Catalog,
        vision: FileVisionTokens,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.model = model
        self.catalog = catalog
        self.vision = vision
        self.clock = clock
        self.itm_cache: LruCache[float] = LruCache(settings.query_cache_entries * 8)
        self.rerank_pace = RerankPace()

    def depth(self, options: SearchOptions) -> int:
        enabled = self.settings.rerank if options.rerank is None else options.rerank
        if not enabled:
            return 0
        return options.rerank_k or self.settings.rerank_k or default_rerank_k(self.model.device)

    def images_for_text(
        self, query: str, ids: list[int], rerank_k: int, itc: dict[int, float]
    ) -> tuple[list[int], dict[int, float]]:
        """The shortlist ordered by ITM (with `rerank_itc_weight`, ITM and ITC: `rerank_scores`), as
        deep as the time budget allows.

        Candidates are scored best-ITC first, in batches sized to the time left; scores already
        known for this query and image (an earlier page, a repeated query) cost nothing. Whatever
        is not scored, or cannot be (its file is gone), follows in first-stage order.
        """
        shortlist = ids[:rerank_k]
        items = {item.id: item for item in self.catalog.items_by_ids(shortlist)}
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
        deadline = self.clock() + self.budget_seconds()
        while pending:
            take = self.rerank_pace.affordable(deadline - self.clock(), len(pending), scored=len(itm))
            if take == 0:
                break
            batch, pending = pending[:take], pending[take:]
            started = self.clock()
            tokens = self.vision.tokens(batch)
            scorable = [item for item in batch if item.id in tokens]
            if scorable:
                stacked = torch.stack([tokens[item.id] for item in scorable])
                probabilities = self.model.itm_scores(query, vision_tokens=stacked)
                for item, probability in zip(scorable, probabilities, strict=True):
                    itm[item.id] = float(probability)
                    self.itm_cache.put((query, item.id, item.content_hash), float(probability))
            self.rerank_pace.observe(len(batch), self.clock() - started)
        if not itm:
            return ids, {}
        ordered = self.by_rerank_key(list(itm), itm, itc, shortlist)
        unscored = [item_id for item_id in shortlist if item_id not in itm]
        return ordered + unscored + ids[rerank_k:], itm

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

    def budget_seconds(self) -> float:
        budget = self.settings.rerank_budget_ms or default_rerank_budget_ms(self.model.device)
        return budget / 1000.0

    def texts_for_image(
        self,
        image: Image.Image | None,
        item_id: int | None,
        order: list[int],
        rows: dict[int, ItemText],
        rerank_k: int,
        itc: dict[int, float],
    ) -> tuple[list[int], dict[int, float]]:
        shortlist = order[:rerank_k]
        if image is not None:
            tokens = self.model.vision_tokens([image])
        else:
            found = self.vision.tokens(self.catalog.items_by_ids([item_id] if item_id is not None else []))
            if item_id not in found:
                return order, {}
            tokens = found[item_id][None]
        expanded = tokens.expand(len(shortlist), *tokens.shape[1:])
        probabilities = self.model.itm_scores([rows[i].text for i in shortlist], vision_tokens=expanded)
        itm = {vector_id: float(p) for vector_id, p in zip(shortlist, probabilities, strict=True)}
        return self.by_rerank_key(shortlist, itm, itc, shortlist) + order[rerank_k:], itm
