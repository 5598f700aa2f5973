"""The models a process needs, loaded lazily from settings and at most once each.

A search server may never caption, and most deployments have no VQA model: nothing is loaded
until it is first used, and a capability with no model configured says so instead of failing.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from blipsearch.errors import FeatureUnavailableError
from blipsearch.settings import Settings

if TYPE_CHECKING:
    from blipsearch.models.captioner import Captioner
    from blipsearch.models.retrieval import RetrievalModel
    from blipsearch.models.vqa import VisualQA


class ModelSet:
    """Retrieval, caption and (optional) VQA models for one set of settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._retrieval: RetrievalModel | None = None
        self._captioner: Captioner | None = None
        self._vqa: VisualQA | None = None

    @property
    def vqa_available(self) -> bool:
        return self.settings.vqa_model is not None

    @property
    def retrieval(self) -> RetrievalModel:
        with self._lock:
            if self._retrieval is None:
                from blipsearch.models.retrieval import RetrievalModel

                self._retrieval = RetrievalModel.load(self.settings.retrieval_model, self.settings)
            return self._retrieval

    @property
    def captioner(self) -> Captioner:
        with self._lock:
            if self._captioner is None:
                from blipsearch.models.captioner import Captioner

                self._captioner = Captioner.load(self.settings.caption_model, self.settings)
            return self._captioner

    @property
    def vqa(self) -> VisualQA:
        if self.settings.vqa_model is None:
            raise FeatureUnavailableError(
                "Visual question answering is not configured; set BLIPSEARCH_VQA_MODEL to a "
                "BlipForQuestionAnswering checkpoint (for example Salesforce/blip-vqa-base) to enable it."
            )
        with self._lock:
            if self._vqa is None:
                from blipsearch.models.vqa import VisualQA

                self._vqa = VisualQA.load(self.settings.vqa_model, self.settings)
            return self._vqa
