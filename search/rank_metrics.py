"""Rank metrics of a similarity matrix, measured the way the BLIP paper does; plain numpy, no model.

The protocol (BLIP's `evaluation()` in `train_retrieval.py`, also CLIP's and ALBEF's):

* Every image is a query against every caption of the set (image->text), and every caption is a
  query against every image (text->image). An image usually has several captions (five in COCO
  and Flickr30k); the image->text rank of an image is the best rank among its own captions, the
  text->image rank of a caption is the rank of its one image.
* Recall@K is the percentage of queries whose rank is at most K; BLIP reports K = 1, 5, 10 and
  their mean. Mean and median rank (1-based) are reported too, because recall saturates.
* ITC scores every pair with the cosine of the two contrastive vectors. ITM re-ranking, as BLIP
  evaluates it, takes each query's top-k by ITC and scores those k pairs with the ITM head; see
  `rerank_matrix` for how the two scores combine and where non-candidates go.

Independent of the model, so the arithmetic is tested on hand-computed matrices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from blipsearch.search.fusion import rerank_scores

RECALL_AT: tuple[int, ...] = (1, 5, 10)

_RANK_CHUNK_ELEMENTS = 8_000_000
"""Rank computation copies at most this many scores at a time (32 MB of float32)."""


@dataclass(frozen=True)
class DirectionMetrics:
    """Recall@1/5/10 in percent, and mean and median rank (1-based), of one retrieval direction."""

    r1: float
    r5: float
    r10: float
    mean_rank: float
    median_rank: float

    @property
    def recall_mean(self) -> float:
        return (self.r1 + self.r5 + self.r10) / 3

    def as_dict(self) -> dict[str, float]:
        return {
            "r1": round(self.r1, 4),
            "r5": round(self.r5, 4),
            "r10": round(self.r10, 4),
            "mean_rank": round(self.mean_rank, 4),
            "median_rank": round(self.median_rank, 4),
        }


def image_to_text_ranks(sims_i2t: np.ndarray, text_to_image: np.ndarray) -> np.ndarray:
    """1-based rank of each image's best-ranked own caption, with the image as the query, [n_images].

    Row `i` of `sims_i2t` [n_images, n_texts] scores image `i` against every text. Rank 1 is the
    highest score. Ties rank the lower text index first: the position a stable sort by descending
    score gives, so equal scores never make a result depend on the sorting algorithm or platform.
    """
    _check_inputs(sims_i2t, text_to_image)
    n_texts = sims_i2t.shape[1]
    pair_ranks = _target_ranks(lambda texts: sims_i2t[text_to_image[texts]], np.arange(n_texts), n_texts)
    ranks = np.full(sims_i2t.shape[0], np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(ranks, text_to_image, pair_ranks)
    return ranks


def text_to_image_ranks(sims_i2t: np.ndarray, text_to_image: np.ndarray) -> np.ndarray:
    """1-based rank of each text's own image, with the text as the query, [n_texts].

    Column `t` of `sims_i2t` scores text `t` against every image; ties rank the lower image index
    first, as in `image_to_text_ranks`.
    """
    _check_inputs(sims_i2t, text_to_image)
    return _target_ranks(lambda texts: sims_i2t[:, texts].T, text_to_image, sims_i2t.shape[0])


def summarize_ranks(ranks: np.ndarray) -> DirectionMetrics:
    """Recall@1/5/10 (percent of queries ranked at most K), mean and median rank."""
    if ranks.size == 0:
        raise ValueError("no ranks to summarise")
    values = np.asarray(ranks, dtype=np.float64)
    r1, r5, r10 = (recall_at(ranks, k) for k in RECALL_AT)
    return DirectionMetrics(
        r1=r1, r5=r5, r10=r10, mean_rank=float(values.mean()), median_rank=float(np.median(values))
    )


def recall_at(ranks: np.ndarray, k: int) -> float:
    """Percentage of queries whose (1-based) rank is at most `k`."""
    return float(100.0 * np.mean(np.asarray(ranks) <= k))


def _check_inputs(sims_i2t: np.ndarray, text_to_image: np.ndarray) -> None:
    if sims_i2t.ndim != 2:
        raise ValueError(f"sims_i2t must be [n_images, n_texts], got shape {sims_i2t.shape}")
    n_images, n_texts = sims_i2t.shape
    if not np.issubdtype(text_to_image.dtype, np.integer):
        raise ValueError(f"text_to_image must hold integer image indices, not {text_to_image.dtype}")
    if text_to_image.shape != (n_texts,):
        raise ValueError(f"text_to_image must have one entry per text ({n_texts}), got {text_to_image.shape}")
    if n_texts and (text_to_image.min() < 0 or text_to_image.max() >= n_images):
        raise ValueError("text_to_image holds an index outside the images")
    if np.bincount(text_to_image, minlength=n_images).min(initial=1) == 0:
        raise ValueError("every image needs at least one text, else its image->text rank is undefined")
    if not np.isfinite(sims_i2t).all():
        raise ValueError("similarities must be finite")


def _target_ranks(rows_of: Callable[[np.ndarray], np.ndarray], targets: np.ndarray, width: int) -> np.ndarray:
    """Rank of column `targets[q]` in score row `rows_of([q])[0]` ([width] scores), for every query q.

    Rows are fetched in chunks of queries, so memory stays bounded whatever the set's size.

    rank = 1 + (scores above the target's) + (scores equal to it at a lower index), which is the
    target's position in a stable sort by descending score, without sorting anything.
    """
    count = len(targets)
    ranks = np.empty(count, dtype=np.int64)
    chunk = max(1, _RANK_CHUNK_ELEMENTS // max(width, 1))
    columns = np.arange(width)
    for start in range(0, count, chunk):
        queries = np.arange(start, min(start + chunk, count))
        rows = rows_of(queries)
        wanted = targets[queries]
        own = rows[np.arange(len(queries)), wanted][:, None]
        above = (rows > own).sum(axis=1)
        tied_before = ((rows == own) & (columns[None, :] < wanted[:, None])).sum(axis=1)
        ranks[queries] = 1 + above + tied_before
    return ranks


def shortlist(rows: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` highest scores of each row, best first, ties to the lower index [r, k].

    The same stable order `_target_ranks` counts in, so the top-k of a smaller k is always a
    prefix of a larger k's: one ITM pass at the largest k serves every smaller k.
    """
    k = min(k, rows.shape[1])
    order = np.empty((rows.shape[0], k), dtype=np.int64)
    chunk = max(1, _RANK_CHUNK_ELEMENTS // max(rows.shape[1], 1))
    for start in range(0, rows.shape[0], chunk):
        order[start : start + chunk] = np.argsort(-rows[start : start + chunk], axis=1, kind="stable")[:, :k]
    return order


def rerank_matrix(
    itc_rows: np.ndarray, candidates: np.ndarray, itm: np.ndarray, itc_weight: float = 0.0
) -> np.ndarray:
    """Scores after ITM re-ranking of each row's shortlist: ordered by `rerank_scores`, above everything else.

    `candidates[r]` are row r's shortlisted columns (its ITC top-k, best first) and `itm[r]` their
    ITM match probabilities. This is the rule the search service applies to a query, so that the
    evaluation measures what users get: the shortlist is ordered by ITM probability alone (with
    `itc_weight` > 0, by ITM log-odds plus `itc_weight` x the cosine; equal keys keep their ITC
    order) and placed above every pair outside it, which keeps its ITC score and order. BLIP's own
    evaluation adds the ITM logit to the cosine (`score + topk_sim`) and sets non-candidates to
    -100. Here ranks up to k come from the re-ranking, ranks beyond k are exactly the ITC ranks, and
    Recall@K for K >= k equals ITC's.
    """
    scores = itc_rows.astype(np.float32, copy=True)
    if candidates.size == 0:
        return scores
    k = candidates.shape[1]
    rows = np.arange(itc_rows.shape[0])[:, None]
    key = rerank_scores(itm, np.take_along_axis(itc_rows, candidates, axis=1), itc_weight)
    # Position within the shortlist: by the key descending, then by the shortlist's own (ITC) order.
    order = np.lexsort((np.broadcast_to(np.arange(k), candidates.shape), -key), axis=1)
    top = np.float32(float(itc_rows.max()) + 1.0)
    ranked = np.empty_like(candidates)
    ranked[:] = np.take_along_axis(candidates, order, axis=1)
    scores[rows, ranked] = top + (k - np.arange(k, dtype=np.float32))[None, :]
    return scores
