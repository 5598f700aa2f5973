"""Fine-tune a `BlipForConditionalGeneration` checkpoint with BLIP's LM objective.

Teacher forcing on "a picture of " + caption, the prompt masked out of the loss and label
smoothing 0.1, as BLIP's `train_caption.py`. The logits come from the same sub-modules that
`generate` uses (vision_model, then text_decoder cross-attending into the vision tokens), so the
loss is the one `blipsearch.train.losses.lm_loss` documents, not the library's built-in one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import BlipForConditionalGeneration

from blipsearch.models.loading import load_checkpoint, preprocess_images
from blipsearch.train import losses
from blipsearch.train.loop import PairSet, ProgressCallback, TrainConfig, Trainer, load_images


class CaptionTrainer(Trainer):
    """LM fine-tuning of the image-grounded decoder."""

    kind = "captioner"

    def build_model(self) -> None:
        checkpoint = load_checkpoint(
            BlipForConditionalGeneration,
            self.config.base,
            role="caption",
            device=str(self.device),
            dtype="float32",
            offline=self.config.offline,
        )
        self.processor = checkpoint.processor
        self.model: BlipForConditionalGeneration = checkpoint.model
        self.model.train()
        for parameter in self.model.parameters():
            parameter.requires_grad_(True)
        prompt = self.config.prompt
        # [CLS] + prompt tokens, without [SEP]: the number of leading positions never scored.
        self.prompt_length = (
            len(self.processor.tokenizer(prompt, add_special_tokens=False)["input_ids"]) + 1 if prompt else 0
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def _loss(self, pairs: PairSet) -> torch.Tensor:
        pixels = preprocess_images(self.processor, load_images(pairs.images)).to(self.device)
        encoded = self.processor.tokenizer(
            [self.config.prompt + text for text in pairs.texts],
            padding="longest",
            truncation=True,
            max_length=self.config.max_text_tokens,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        input_ids = encoded["input_ids"].to(self.device)
        attention_mask = encoded["attention_mask"].to(self.device)
        text_config: Any = self.model.config.text_config
        input_ids[:, 0] = text_config.bos_token_id  # BLIP's [DEC] start token
        labels = losses.lm_labels(input_ids, attention_mask, self.prompt_length)
        image_embeds = self.model.vision_model(pixel_values=pixels).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        logits = self.model.text_decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        ).logits
        return losses.lm_loss(logits, labels, self.config.label_smoothing)

    def batch_loss(self, pairs: PairSet) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self._loss(pairs)
        return loss, {"loss": loss.item(), "lm": loss.item()}

    def model_state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Mean LM loss on the held-out pairs; the metric is its negative (higher is better)."""
        assert self.val_pairs is not None
        self.model.eval()
        total, count = 0.0, 0
        try:
            for start in range(0, len(self.val_pairs), self.config.batch):
                chunk = list(range(start, min(start + self.config.batch, len(self.val_pairs))))
                total += float(self._loss(self.val_pairs.subset(chunk))) * len(chunk)
                count += len(chunk)
        finally:
            self.model.train()
        mean = total / max(1, count)
        return {"metric": -mean, "lm_loss": mean, "perplexity": math.exp(min(mean, 50.0))}


def train_captioner(
    config: TrainConfig,
    pairs: Path | Sequence[tuple[Image.Image, str]] | PairSet,
    *,
    progress: ProgressCallback | None = None,
) -> CaptionTrainer:
    """Build the caption trainer and run it to the end."""
    trainer = CaptionTrainer(config, pairs, progress=progress)
    trainer.fit()
    return trainer
