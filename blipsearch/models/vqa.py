"""Visual question answering with `BlipForQuestionAnswering`, an optional capability."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from transformers import BlipForQuestionAnswering

from blipsearch.errors import InvalidInputError
from blipsearch.models.loading import LoadedCheckpoint, load_configured, preprocess_images
from blipsearch.settings import Settings

MAX_ANSWER_TOKENS = 10


class VisualQA:
    """Answers short questions about one image ("what colour is the strap?")."""

    def __init__(self, checkpoint: LoadedCheckpoint, *, max_question_tokens: int = 35) -> None:
        if not isinstance(checkpoint.model, BlipForQuestionAnswering):
            raise TypeError("VisualQA needs a BlipForQuestionAnswering checkpoint")
        self.checkpoint = checkpoint
        self.model: BlipForQuestionAnswering = checkpoint.model
        self.processor = checkpoint.processor
        self.max_question_tokens = max_question_tokens

    @classmethod
    def load(cls, source: str, settings: Settings | None = None) -> VisualQA:
        settings = settings or Settings()
        checkpoint = load_configured(BlipForQuestionAnswering, source, "vqa", settings)
        return cls(checkpoint, max_question_tokens=settings.max_text_tokens)

    @property
    def fingerprint(self) -> str:
        return self.checkpoint.fingerprint

    @torch.inference_mode()
    def answer_ids(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[list[int]]:
        if len(images) != len(questions):
            raise InvalidInputError("Give one question per image.")
        cleaned = []
        for position, question in enumerate(questions):
            text = " ".join(str(question).split())
            if not text:
                raise InvalidInputError(f"Question #{position} is empty.")
            cleaned.append(text)
        pixels = preprocess_images(self.processor, images)
        encoded = self.processor.tokenizer(
            cleaned,
            padding="longest",
            truncation=True,
            max_length=self.max_question_tokens,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        device = self.checkpoint.device
        output = self.model.generate(
            pixel_values=pixels.to(device, self.checkpoint.dtype),
            input_ids=encoded["input_ids"].to(device),
            attention_mask=encoded["attention_mask"].to(device),
            max_new_tokens=MAX_ANSWER_TOKENS,
            do_sample=False,
            num_beams=1,
        )
        return [row.tolist() for row in output.cpu()]

    def answer(self, image: Image.Image, question: str) -> str:
        ids = self.answer_ids([image], [question])
        return " ".join(self.processor.tokenizer.decode(ids[0], skip_special_tokens=True).split())
