"""The query side's model work, batched across concurrent requests or run per request.

Every forward a query needs goes through here: query texts to ITC vectors, (text, vision tokens)
pairs to ITM probabilities, query images to ITC vectors and vision tokens, images to captions.
With `batching` (the default) each kind is a `MicroBatcher`; without, a `DirectRunner` (the
baseline the load benchmark compares against). Either way a caller sees the same results, to
float rounding: the equality tests hold the batched paths to the unbatched ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

import numpy as np
import torch
from PIL import Image

from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.search.batching import DirectRunner, MicroBatcher
from blipsearch.settings import Settings

In = TypeVar("In")
Out = TypeVar("Out")
Runner: TypeAlias = MicroBatcher[In, Out] | DirectRunner[In, Out]


@dataclass(frozen=True)
class ItmPair:
    """One ITM question: does `text` match the image these vision tokens [T, H] came from?"""

    text: str
    tokens: torch.Tensor


@dataclass(frozen=True)
class QueryImage:
    """A query image's ITC vector and the vision tokens ITM cross-attends to."""

    vector: np.ndarray
    tokens: torch.Tensor


def default_batch_window_seconds(device: torch.device) -> float:
    """On a CPU a forward is tens of milliseconds, so 2 ms of waiting costs little and arrivals
    during the running forward batch anyway; an accelerator's forward is short enough that waiting
    a little longer for company is what fills it."""
    return 0.002 if device.type == "cpu" else 0.005


class ModelWork:
    """The four kinds of query-time model work, each batched or direct per `settings.batching`."""

    def __init__(
        self,
        settings: Settings,
        model: RetrievalModel,
        captioner: Callable[[], Captioner],
    ) -> None:
        """`captioner` is called on first caption request: the caption model loads only if used."""
        self.settings = settings
        self.model = model
        self._captioner = captioner
        self.model_lock = threading.Lock()
        self.batched = settings.batching
        window = (
            settings.batch_window_ms / 1000.0
            if settings.batch_window_ms is not None
            else default_batch_window_seconds(model.device)
        )

        def make(name: str, run: Callable[[list[In]], Sequence[Out]], most: int) -> Runner[In, Out]:
            if not self.batched:
                return DirectRunner(name, run)
            return MicroBatcher(name, run, window_seconds=window, max_items=most, model_lock=self.model_lock)

        self.texts: Runner[str, np.ndarray] = make("texts", self._embed_texts, settings.batch_max_texts)
        self.itm: Runner[ItmPair, float] = make("itm", self._itm, settings.batch_max_itm_pairs)
        self.images: Runner[Image.Image, QueryImage] = make(
            "images", self._embed_images, settings.batch_max_images
        )
        self.captions: Runner[Image.Image, str] = make("captions", self._caption, settings.batch_max_images)

    def observe(self, observer: Callable[[str, int], None]) -> None:
        """Tell `observer(kind, items)` the size of every batched forward (the API's /metrics)."""
        for runner in (self.texts, self.itm, self.images, self.captions):
            if isinstance(runner, MicroBatcher):
                runner.observer = observer

    def close(self) -> None:
        for runner in (self.texts, self.itm, self.images, self.captions):
            if isinstance(runner, MicroBatcher):
                runner.close()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """ITC vectors [N, D] of query texts (already validated)."""
        rows = self.texts(list(texts))
        if not rows:
            return np.zeros((0, self.model.embedding_dim), dtype=np.float32)
        return np.stack(rows)

    def itm_scores(self, text: str | Sequence[str], tokens: torch.Tensor) -> np.ndarray:
        """ITM probabilities of one text against each of `tokens` [N, T, H], or one text per row."""
        count = int(tokens.shape[0])
        texts = [text] * count if isinstance(text, str) else list(text)
        return np.array(self.itm([ItmPair(t, tokens[row]) for row, t in enumerate(texts)]), dtype=np.float32)

    def query_images(self, images: Sequence[Image.Image]) -> list[QueryImage]:
        return self.images(list(images))

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        return self.captions(list(images))

    # What one call runs ----------------------------------------------------------------

    def _embed_texts(self, texts: list[str]) -> list[np.ndarray]:
        unique = list(dict.fromkeys(texts))  # concurrent shoppers often type the same query
        vectors = self.model.embed_texts(unique)
        row = {text: vectors[index] for index, text in enumerate(unique)}
        return [row[text] for text in texts]

    def _itm(self, pairs: list[ItmPair]) -> list[float]:
        """One query's pairs score as that query against a stack, exactly the unbatched call; pairs
        of several queries score pairwise (each text padded to the longest in its slice)."""
        texts = [pair.text for pair in pairs]
        tokens = torch.stack([pair.tokens for pair in pairs])
        one_query = all(text == texts[0] for text in texts)
        scores = self.model.itm_scores(texts[0] if one_query else texts, vision_tokens=tokens)
        return [float(score) for score in scores]

    def _embed_images(self, images: list[Image.Image]) -> list[QueryImage]:
        result = self.model.embed_images(images, return_vision_tokens=True)
        assert result.vision_tokens is not None
        return [QueryImage(result.vectors[row], result.vision_tokens[row]) for row in range(len(images))]

    def _caption(self, images: list[Image.Image]) -> list[str]:
        return self._captioner().caption(images)
