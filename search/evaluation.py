"""Retrieval quality of a checkpoint on an image-caption set, measured the way the BLIP paper does.

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

Everything below `CaptionSet` is plain numpy and independent of the model, so the arithmetic is
tested on hand-computed matrices; `evaluate` is the only function that runs BLIP.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from blipsearch.search.fusion import rerank_scores

from blipsearch.errors import InvalidInputError
from blipsearch.images import open_image
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings

log = logging.getLogger(__name__)

AnnotationFormat = Literal["auto", "karpathy", "tsv"]
FORMATS: tuple[str, ...] = ("auto", "karpathy", "tsv")
RECALL_AT: tuple[int, ...] = (1, 5, 10)

ProgressCallback = Callable[[str, int, int], None]
"""Called as `(stage, done, total)` after each batch; stages are "texts", "images" and "rerank"."""

_RANK_CHUNK_ELEMENTS = 8_000_000
"""Rank computation copies at most this many scores at a time (32 MB of float32)."""


# --------------------------------------------------------------------------------------------
# The data set


@dataclass(frozen=True)
class CaptionSet:
    """Images with one or more captions each: the unit both retrieval directions are measured on.

    `text_to_image[t]` is the position in `images` of the image caption `t` describes. Every image
    has at least one caption; images are kept in the order the annotation file first names them.
    """

    source: Path
    images: tuple[Path, ...]
    texts: tuple[str, ...]
    text_to_image: np.ndarray = field(repr=False)

    def first_images(self, count: int) -> CaptionSet:
        """The first `count` images with all of their captions (for quick runs with `--limit`)."""
        if count < 1:
            raise InvalidInputError("The image limit must be at least 1.")
        keep = np.flatnonzero(self.text_to_image < count)
        return CaptionSet(
            source=self.source,
            images=self.images[:count],
            texts=tuple(self.texts[t] for t in keep),
            text_to_image=self.text_to_image[keep],
        )


class _SetBuilder:
    """Collects (image, caption) pairs; an image named twice gets the captions of both mentions."""

    def __init__(self, source: Path, images_root: Path) -> None:
        self.source = source
        self.images_root = images_root
        self._position: dict[Path, int] = {}
        self._texts: list[str] = []
        self._text_to_image: list[int] = []

    def add(self, image: str, caption: str) -> None:
        path = self.images_root / image
        position = self._position.setdefault(path, len(self._position))
        self._texts.append(" ".join(caption.split()))
        self._text_to_image.append(position)

    @property
    def caption_count(self) -> int:
        return len(self._texts)

    def build(self) -> CaptionSet:
        if not self._texts:
            raise InvalidInputError(f"{self.source}: no image with a caption; nothing to evaluate.")
        return CaptionSet(
            source=self.source,
            images=tuple(self._position),
            texts=tuple(self._texts),
            text_to_image=np.asarray(self._text_to_image, dtype=np.int64),
        )


def load_caption_set(
    annotations: Path,
    *,
    images_root: Path | None = None,
    fmt: AnnotationFormat | str = "auto",
    split: str = "test",
) -> CaptionSet:
    """Read an evaluation set from a Karpathy-style JSON or an `image<TAB>caption` TSV file.

    Image paths are relative to `images_root` (default: the annotation file's folder). `split`
    picks images from the original Karpathy `dataset_*.json` layout; BLIP's per-split list files
    are already one split and ignore it. `fmt="auto"` goes by the suffix (.json; .tsv or .txt),
    else by the first character (`[` or `{` means JSON).
    """
    if fmt not in FORMATS:
        raise InvalidInputError(f"Unknown annotation format {fmt!r}; use one of {', '.join(FORMATS)}.")
    text = _read_text(annotations)
    builder = _SetBuilder(annotations, images_root if images_root is not None else annotations.parent)
    if _resolve_format(annotations, text, fmt) == "karpathy":
        _parse_karpathy(_parse_json(annotations, text), split, builder)
    else:
        _parse_tsv(text, builder)
    return builder.build()


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InvalidInputError(f"Annotation file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text (byte {exc.start}).") from None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot be read ({exc.strerror}).") from None


def _resolve_format(path: Path, text: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "karpathy"
    if suffix in (".tsv", ".txt"):
        return "tsv"
    return "karpathy" if text.lstrip()[:1] in ("[", "{") else "tsv"


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from None


def _parse_karpathy(data: Any, split: str, builder: _SetBuilder) -> None:
    """BLIP's list of `{"image", "caption"}` objects, or Karpathy's `{"images": [...]}` dataset."""
    if isinstance(data, list):
        for number, entry in enumerate(data, start=1):
            _add_blip_entry(entry, number, builder)
    elif isinstance(data, dict) and isinstance(data.get("images"), list):
        _add_karpathy_split(data["images"], split, builder)
    else:
        raise InvalidInputError(
            f"{builder.source}: expected a list of {{'image', 'caption'}} objects (BLIP) or an object "
            "with an 'images' list (Karpathy dataset_*.json)."
        )


def _add_blip_entry(entry: Any, number: int, builder: _SetBuilder) -> None:
    where = f"{builder.source}: entry #{number}"
    if not isinstance(entry, dict):
        raise InvalidInputError(f"{where} is not an object (got {type(entry).__name__}).")
    image = entry.get("image")
    if not isinstance(image, str) or not image.strip():
        raise InvalidInputError(f"{where} has no 'image' path.")
    captions = entry.get("caption")
    captions = [captions] if isinstance(captions, str) else captions
    if not isinstance(captions, list) or not captions:
        raise InvalidInputError(f"{where} has no 'caption' (a string or a list of strings).")
    for caption in captions:
        if not isinstance(caption, str) or not caption.strip():
            raise InvalidInputError(f"{where} has an empty or non-string caption.")
        builder.add(image, caption)


def _add_karpathy_split(images: list[Any], split: str, builder: _SetBuilder) -> None:
    splits_seen: set[str] = set()
    for number, entry in enumerate(images, start=1):
        where = f"{builder.source}: images[{number - 1}]"
        if not isinstance(entry, dict):
            raise InvalidInputError(f"{where} is not an object (got {type(entry).__name__}).")
        splits_seen.add(str(entry.get("split")))
        if entry.get("split") != split:
            continue
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            raise InvalidInputError(f"{where} has no 'filename'.")
        filepath = entry.get("filepath")
        image = f"{filepath}/{filename}" if isinstance(filepath, str) and filepath else filename
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise InvalidInputError(f"{where} has no 'sentences'.")
        for sentence in sentences:
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if not isinstance(raw, str) or not raw.strip():
                raise InvalidInputError(f"{where} has a sentence without a 'raw' text.")
            builder.add(image, raw)
    if builder.caption_count == 0:
        available = ", ".join(sorted(splits_seen)) or "none"
        raise InvalidInputError(
            f"{builder.source}: no image in split {split!r} (splits in the file: {available})."
        )


def _parse_tsv(text: str, builder: _SetBuilder) -> None:
    """One `image<TAB>caption` per line; blank lines and an `image<TAB>caption` header are skipped."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise InvalidInputError(f"{builder.source}, line {number}: no tab between image and caption.")
        image, caption = (part.strip() for part in line.split("\t", 1))
        if number == 1 and (image.lower(), caption.lower()) == ("image", "caption"):
            continue
        if not image:
            raise InvalidInputError(f"{builder.source}, line {number}: the image path is empty.")
        if not caption:
            raise InvalidInputError(f"{builder.source}, line {number}: the caption is empty.")
        builder.add(image, caption)


# --------------------------------------------------------------------------------------------
# Metrics: pure numpy


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


# --------------------------------------------------------------------------------------------
# Running a model


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
