"""Retrieval quality of a checkpoint on an image-caption set (`blipsearch eval`): runs BLIP, then ranks.

ITC scores every pair with the cosine of the two contrastive vectors; ITM re-ranking takes each
query's top-k by ITC and scores those k pairs with the ITM head, combined by the service's own
rule (`rank_metrics.rerank_matrix`). The sets come from `caption_sets`, the arithmetic from
`rank_metrics`; `evaluate` is the only function here that runs the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blipsearch.errors import InvalidInputError
from blipsearch.images import open_image
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.caption_sets import CaptionSet
from blipsearch.search.rank_metrics import (
    DirectionMetrics,
    image_to_text_ranks,
    rerank_matrix,
    shortlist,
    summarize_ranks,
    text_to_image_ranks,
)
from blipsearch.settings import Settings

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]
"""Called as `(stage, done, total)` after each batch; stages are "texts", "images" and "rerank"."""


@dataclass(frozen=True)
class ModeResult:
    """Both directions under one scoring: ITC alone (`rerank_k` None) or ITC top-k re-ranked by ITM."""

    rerank_k: int | None
    image_to_text: DirectionMetrics
    text_to_image: DirectionMetrics
    image_to_text_ranks: np.ndarray = field(repr=False)
    text_to_image_ranks: np.ndarray = field(repr=False)
    itc_weight: float | None = None
    """How much the ITC cosine counted in the re-ranked order (`rerank_scores`); None for ITC."""

    @property
    def mode(self) -> str:
        if self.rerank_k is None:
            return "ITC"
        return f"ITM+ITC@{self.rerank_k}" if self.itc_weight else f"ITM@{self.rerank_k}"

    @property
    def recall_mean(self) -> float:
        """BLIP's "r_mean": the mean of the six recalls of both directions."""
        return (self.image_to_text.recall_mean + self.text_to_image.recall_mean) / 2

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "rerank_k": self.rerank_k,
            "itc_weight": self.itc_weight,
            "image_to_text": self.image_to_text.as_dict(),
            "text_to_image": self.text_to_image.as_dict(),
            "recall_mean": round(self.recall_mean, 4),
        }


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one checkpoint on one caption set: ITC, then one entry per re-ranking depth."""

    source: Path
    images: int
    texts: int
    fingerprint: str
    itc: ModeResult
    reranked: tuple[ModeResult, ...]
    seconds: float

    @property
    def modes(self) -> tuple[ModeResult, ...]:
        return (self.itc, *self.reranked)

    def as_dict(self) -> dict[str, Any]:
        return {
            "annotations": str(self.source),
            "images": self.images,
            "texts": self.texts,
            "fingerprint": self.fingerprint,
            "results": [mode.as_dict() for mode in self.modes],
            "seconds": round(self.seconds, 3),
        }


def _mode_result(
    rerank_k: int | None,
    sims_i2t: np.ndarray,
    sims_t2i: np.ndarray,
    owner: np.ndarray,
    itc_weight: float | None = None,
) -> ModeResult:
    """`sims_t2i` is indexed like `sims_i2t` ([n_images, n_texts]) but scored for text queries."""
    i2t = image_to_text_ranks(sims_i2t, owner)
    t2i = text_to_image_ranks(sims_t2i, owner)
    return ModeResult(rerank_k, summarize_ranks(i2t), summarize_ranks(t2i), i2t, t2i, itc_weight)


def evaluate(
    model: RetrievalModel,
    dataset: CaptionSet,
    *,
    rerank_k: int | Sequence[int] | None = None,
    image_batch: int = 32,
    max_image_bytes: int = Settings.model_fields["max_image_bytes"].default,
    max_image_pixels: int = Settings.model_fields["max_image_pixels"].default,
    progress: ProgressCallback | None = None,
    itc_weight: float | Sequence[float] = Settings.model_fields["rerank_itc_weight"].default,
) -> EvaluationResult:
    """ITC Recall@K of `model` on `dataset`, and ITM-re-ranked Recall@K for each `rerank_k`.

    With several `itc_weight`s (0 and one other at most), each depth is reported under both rules
    from the same ITM scores: `ITM@k` orders by ITM alone, `ITM+ITC@k` by `rerank_scores`.

    Texts are embedded once and images once (in batches of `image_batch` decoded files), and the
    ITC matrix is their product. Re-ranking needs every text's image shortlist, known only once
    all images are embedded, so it runs the vision encoder a second time, one batch at a time,
    and scores every shortlisted pair of that batch's images (each pair once, even when both
    directions shortlisted it). Holding the vision tokens of every image instead would cost
    about 1.7 MB per image for BLIP-base (8.6 GB for COCO's 5,000 test images); the second
    vision pass costs little next to the n x k ITM passes. The largest k is scored once, and
    smaller k reuse a prefix of its shortlists.
    """
    started = time.perf_counter()
    depths = _rerank_depths(rerank_k)
    weights = [float(itc_weight)] if isinstance(itc_weight, int | float) else [float(w) for w in itc_weight]
    if not weights or len({w for w in weights if w != 0}) > 1 or any(w < 0 for w in weights):
        raise InvalidInputError("Give one ITC weight, or 0 and one other; none may be negative.")
    if image_batch < 1:
        raise InvalidInputError("The image batch must be at least 1.")
    _require_image_files(dataset)
    report = progress or _log_progress
    owner = dataset.text_to_image

    def load(paths: Sequence[Path]) -> list[Any]:
        return [open_image(p, max_bytes=max_image_bytes, max_pixels=max_image_pixels) for p in paths]

    text_vectors = _embed_texts(model, dataset.texts, report)
    image_vectors = _embed_images(model, dataset.images, load, image_batch, report)
    sims = image_vectors @ text_vectors.T
    itc = _mode_result(None, sims, sims, owner)
    reranked: list[ModeResult] = []
    if depths:
        i2t_short = shortlist(sims, max(depths))
        t2i_short = shortlist(sims.T, max(depths))
        i2t_itm, t2i_itm = _itm_for_shortlists(
            model, dataset, load, image_batch, i2t_short, t2i_short, report
        )
        for k in depths:
            for weight in dict.fromkeys(weights):
                by_image = rerank_matrix(sims, i2t_short[:, :k], i2t_itm[:, :k], weight)
                by_text = rerank_matrix(sims.T, t2i_short[:, :k], t2i_itm[:, :k], weight).T
                reranked.append(_mode_result(k, by_image, by_text, owner, weight))
    return EvaluationResult(
        source=dataset.source,
        images=len(dataset.images),
        texts=len(dataset.texts),
        fingerprint=model.fingerprint,
        itc=itc,
        reranked=tuple(reranked),
        seconds=time.perf_counter() - started,
    )


def _rerank_depths(rerank_k: int | Sequence[int] | None) -> list[int]:
    if rerank_k is None:
        return []
    depths = sorted({rerank_k} if isinstance(rerank_k, int) else set(rerank_k))
    if depths and depths[0] < 1:
        raise InvalidInputError(f"A re-ranking depth must be at least 1, not {depths[0]}.")
    return depths


def _require_image_files(dataset: CaptionSet) -> None:
    """Fail before any model work rather than after an hour of embedding."""
    missing = [path for path in dataset.images if not path.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InvalidInputError(f"{dataset.source}: image not found: {missing[0]}{more} (see --images).")


def _log_progress(stage: str, done: int, total: int) -> None:
    log.info("evaluation progress", extra={"stage": stage, "done": done, "total": total})


def _batches(count: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, count, size):
        yield start, min(start + size, count)


def _embed_texts(model: RetrievalModel, texts: Sequence[str], report: ProgressCallback) -> np.ndarray:
    parts: list[np.ndarray] = []
    batch = max(model.text_batch_size, 256)
    for start, stop in _batches(len(texts), batch):
        parts.append(model.embed_texts(texts[start:stop]))
        report("texts", stop, len(texts))
    return np.concatenate(parts)


def _embed_images(
    model: RetrievalModel,
    paths: Sequence[Path],
    load: Callable[[Sequence[Path]], list[Any]],
    image_batch: int,
    report: ProgressCallback,
) -> np.ndarray:
    parts: list[np.ndarray] = []
    for start, stop in _batches(len(paths), image_batch):
        parts.append(model.embed_images(load(paths[start:stop])).vectors)
        report("images", stop, len(paths))
    return np.concatenate(parts)


def _itm_for_shortlists(
    model: RetrievalModel,
    dataset: CaptionSet,
    load: Callable[[Sequence[Path]], list[Any]],
    image_batch: int,
    i2t_short: np.ndarray,
    t2i_short: np.ndarray,
    report: ProgressCallback,
) -> tuple[np.ndarray, np.ndarray]:
    """ITM probabilities aligned with both shortlists: [n_images, k_i2t] and [n_texts, k_t2i]."""
    i2t_itm = np.full(i2t_short.shape, np.nan, dtype=np.float32)
    t2i_itm = np.full(t2i_short.shape, np.nan, dtype=np.float32)
    width = t2i_short.shape[1]
    by_image = np.argsort(t2i_short.ravel(), kind="stable")  # t2i slots grouped by image
    sorted_images = t2i_short.ravel()[by_image]
    n_texts = len(dataset.texts)
    for start, stop in _batches(len(dataset.images), image_batch):
        lo, hi = np.searchsorted(sorted_images, [start, stop])
        t2i_slots = by_image[lo:hi]
        pair_images = np.concatenate(
            [np.repeat(np.arange(start, stop), i2t_short.shape[1]), t2i_short.ravel()[t2i_slots]]
        )
        pair_texts = np.concatenate([i2t_short[start:stop].ravel(), t2i_slots // width])
        keys, back = np.unique(pair_images * n_texts + pair_texts, return_inverse=True)
        tokens = model.vision_tokens(load(dataset.images[start:stop]))
        scores = _score_pairs(model, dataset.texts, tokens, keys // n_texts - start, keys % n_texts)
        head = (stop - start) * i2t_short.shape[1]
        i2t_itm[start:stop] = scores[back[:head]].reshape(stop - start, -1)
        t2i_itm[t2i_slots // width, t2i_slots % width] = scores[back[head:]]
        report("rerank", stop, len(dataset.images))
    return i2t_itm, t2i_itm


def _score_pairs(
    model: RetrievalModel,
    texts: Sequence[str],
    tokens: torch.Tensor,
    local_images: np.ndarray,
    text_ids: np.ndarray,
) -> np.ndarray:
    """ITM of (image, text) pairs, gathering the vision tokens of one ITM batch at a time."""
    scores = np.empty(len(text_ids), dtype=np.float32)
    for start, stop in _batches(len(text_ids), model.itm_batch_size):
        index = torch.as_tensor(local_images[start:stop], device=tokens.device)
        batch_texts = [texts[t] for t in text_ids[start:stop]]
        scores[start:stop] = model.itm_scores(batch_texts, vision_tokens=tokens.index_select(0, index))
    return scores
