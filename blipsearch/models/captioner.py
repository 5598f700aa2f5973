"""Captions from BLIP's image-grounded decoder (`BlipForConditionalGeneration.generate`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from PIL import Image
from transformers import BlipForConditionalGeneration

from blipsearch.errors import InvalidInputError
from blipsearch.models.loading import LoadedCheckpoint, load_configured, preprocess_images
from blipsearch.settings import Settings

Strategy = Literal["greedy", "beam", "nucleus"]


@dataclass(frozen=True)
class CaptionOptions:
    """Decoding settings; the defaults are the BLIP paper's (beam 3, 5-20 tokens; nucleus p=0.9)."""

    strategy: Strategy = "beam"
    max_new_tokens: int = 20
    min_new_tokens: int = 5
    num_beams: int = 3
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    seed: int = 0

    def generate_kwargs(self) -> dict[str, Any]:
        """The exact keyword arguments passed to `generate`, so a caller can reproduce a caption."""
        common: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.strategy == "greedy":
            return {**common, "do_sample": False, "num_beams": 1}
        if self.strategy == "beam":
            return {**common, "do_sample": False, "num_beams": self.num_beams}
        if self.strategy == "nucleus":
            return {**common, "do_sample": True, "top_p": self.top_p, "top_k": 0, "num_beams": 1}
        raise InvalidInputError(f"Unknown caption strategy '{self.strategy}'; use greedy, beam or nucleus.")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Captioner:
    """Writes captions for images, optionally continuing a prompt such as "a picture of"."""

    def __init__(
        self,
        checkpoint: LoadedCheckpoint,
        *,
        batch_size: int = 8,
        default_prompt: str | None = None,
        min_new_tokens: int = CaptionOptions.min_new_tokens,
    ) -> None:
        if not isinstance(checkpoint.model, BlipForConditionalGeneration):
            raise TypeError("Captioner needs a BlipForConditionalGeneration checkpoint")
        self.checkpoint = checkpoint
        self.model: BlipForConditionalGeneration = checkpoint.model
        self.processor = checkpoint.processor
        self.batch_size = batch_size
        self.default_prompt = default_prompt
        """Used when a call passes no prompt: a captioner trained on "a picture of " + caption
        (the demo model) writes junk without it."""
        self.default_options = CaptionOptions(min_new_tokens=min_new_tokens)
        """Used when a call passes no options. BLIP's 5-token minimum suits COCO-style sentences;
        a captioner trained on short names ("red apple") is forced past its answer by it."""

    @classmethod
    def load(cls, source: str, settings: Settings | None = None) -> Captioner:
        settings = settings or Settings()
        checkpoint = load_configured(BlipForConditionalGeneration, source, "caption", settings)
        return cls(
            checkpoint,
            batch_size=settings.caption_batch_size,
            default_prompt=settings.caption_prompt,
            min_new_tokens=settings.caption_min_tokens,
        )

    @property
    def fingerprint(self) -> str:
        return self.checkpoint.fingerprint

    @property
    def image_size(self) -> int:
        vision: Any = self.model.config.vision_config
        return int(vision.image_size)

    def _inputs(self, images: Sequence[Image.Image], prompt: str | None) -> dict[str, torch.Tensor]:
        pixels = preprocess_images(self.processor, images)
        inputs: dict[str, torch.Tensor] = {
            "pixel_values": pixels.to(self.checkpoint.device, self.checkpoint.dtype)
        }
        if prompt is not None:
            encoded = self.processor.tokenizer(
                [prompt] * len(images), return_tensors="pt", return_token_type_ids=False
            )
            inputs["input_ids"] = encoded["input_ids"].to(self.checkpoint.device)
            inputs["attention_mask"] = encoded["attention_mask"].to(self.checkpoint.device)
        return inputs

    @torch.inference_mode()
    def caption_ids(
        self, images: Sequence[Image.Image], prompt: str | None = None, options: CaptionOptions | None = None
    ) -> list[list[int]]:
        """Raw generated token ids (prompt included), batch by batch; what `caption` decodes."""
        options = options or self.default_options
        prompt = _clean_prompt(prompt if prompt is not None else self.default_prompt)
        kwargs = options.generate_kwargs()
        results: list[list[int]] = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            inputs = self._inputs(batch, prompt)
            with torch.random.fork_rng(devices=_rng_devices(self.checkpoint.device)):
                torch.manual_seed(options.seed + start)
                output = self.model.generate(**inputs, **kwargs)  # type: ignore[arg-type]
            results.extend(row.tolist() for row in output.cpu())
        return results

    def caption(
        self, images: Sequence[Image.Image], prompt: str | None = None, options: CaptionOptions | None = None
    ) -> list[str]:
        """One caption per image; a prompt is stripped from the front, as BLIP does."""
        prompt = prompt if prompt is not None else self.default_prompt
        ids = self.caption_ids(images, prompt, options)
        texts = self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        prefix = _clean_prompt(prompt)
        return [_strip_prompt(" ".join(text.split()), prefix) for text in texts]


def _clean_prompt(prompt: str | None) -> str | None:
    if prompt is None:
        return None
    cleaned = " ".join(prompt.split())
    return cleaned or None


def _strip_prompt(text: str, prompt: str | None) -> str:
    if prompt and text.lower().startswith(prompt.lower()):
        return text[len(prompt) :].strip()
    return text


def _rng_devices(device: torch.device) -> list[int]:
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []
