"""Fine-tune a `BlipForImageTextRetrieval` checkpoint with ITC (momentum distillation) + ITM.

It calls the model's sub-modules exactly as `blipsearch.models.retrieval.RetrievalModel` does
at inference (vision_model -> vision_proj on [CLS]; text_encoder -> text_proj on [CLS]; the
text encoder cross-attending into the vision tokens -> itm_head), so what is trained is what
search uses. The transformers class has no temperature parameter (BLIP's `self.temp`), so the
trainer keeps a learnable one: it is checkpointed, and written to `best/training_state.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BlipForImageTextRetrieval

from blipsearch.models.loading import LoadedCheckpoint, load_checkpoint, preprocess_images
from blipsearch.train import losses
from blipsearch.train.loop import PairSet, ProgressCallback, TrainConfig, Trainer, load_images


class RetrievalTrainer(Trainer):
    """ITC + ITM fine-tuning, BLIP's `train_retrieval.py` objective without its queue."""

    kind = "retrieval"

    def __init__(
        self,
        config: TrainConfig,
        pairs: Path | Sequence[tuple[Image.Image, str]] | PairSet,
        *,
        progress: ProgressCallback | None = None,
    ) -> None:
        super().__init__(config, pairs, progress=progress)

    def build_model(self) -> None:
        checkpoint = load_checkpoint(
            BlipForImageTextRetrieval,
            self.config.base,
            role="retrieval",
            device=str(self.device),
            dtype="float32",
            offline=self.config.offline,
        )
        self.checkpoint = checkpoint
        self.processor = checkpoint.processor
        self.model: BlipForImageTextRetrieval = checkpoint.model
        self.model.train()
        for parameter in self.model.parameters():
            parameter.requires_grad_(True)
        self.model_m = losses.make_momentum_model(self.model)
        self.model_m.eval()
        self.temp = torch.nn.Parameter(torch.tensor(self.config.temp_init, device=self.device))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.model.parameters(), self.temp]

    def _tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        encoded = self.processor.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.config.max_text_tokens,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        return {k: v.to(self.device) for k, v in encoded.items()}

    @staticmethod
    def _features(
        model: Any, pixels: torch.Tensor, tokens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vision tokens and the normalised ITC features, the sub-module calls search makes."""
        image_embeds = model.vision_model(pixel_values=pixels).last_hidden_state
        image_feat = F.normalize(model.vision_proj(image_embeds[:, 0, :]), dim=-1)
        text_hidden = model.text_encoder(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).last_hidden_state
        text_feat = F.normalize(model.text_proj(text_hidden[:, 0, :]), dim=-1)
        return image_embeds, image_feat, text_feat

    def _itm_logits(
        self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        hidden = self.model.text_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        ).last_hidden_state
        return self.model.itm_head(hidden[:, 0, :])

    def batch_loss(self, pairs: PairSet) -> tuple[torch.Tensor, dict[str, float]]:
        """L = L_itc + L_itm on one batch (BLIP weights the two equally)."""
        pixels = preprocess_images(self.processor, load_images(pairs.images)).to(self.device)
        tokens = self._tokens(pairs.texts)
        image_ids = torch.tensor(pairs.image_ids, device=self.device)
        image_embeds, image_feat, text_feat = self._features(self.model, pixels, tokens)
        with torch.no_grad():
            _, image_feat_m, text_feat_m = self._features(self.model_m, pixels, tokens)
        itc = losses.itc_loss(
            image_feat, text_feat, image_feat_m, text_feat_m, self.temp, self.config.alpha, image_ids
        )
        size = len(pairs)
        positive = self._itm_logits(image_embeds, tokens["input_ids"], tokens["attention_mask"])
        logits = [positive]
        labels = [torch.ones(size, dtype=torch.long, device=self.device)]
        if len(set(pairs.image_ids)) > 1:  # hard negatives need a second picture in the batch
            tau = self.temp.detach().clamp(losses.TEMP_MIN, losses.TEMP_MAX)
            sim_i2t = image_feat.detach() @ text_feat.detach().t() / tau
            text_for_image, image_for_text = losses.sample_hard_negatives(
                sim_i2t, sim_i2t.t(), self.generator, image_ids
            )
            # each text with a wrong image, then each image with a wrong text
            logits.append(
                self._itm_logits(image_embeds[image_for_text], tokens["input_ids"], tokens["attention_mask"])
            )
            logits.append(
                self._itm_logits(
                    image_embeds,
                    tokens["input_ids"][text_for_image],
                    tokens["attention_mask"][text_for_image],
                )
            )
            labels.append(torch.zeros(2 * size, dtype=torch.long, device=self.device))
        itm = losses.itm_loss(torch.cat(logits), torch.cat(labels))
        loss = itc + itm
        return loss, {"loss": loss.item(), "itc": itc.item(), "itm": itm.item()}

    def after_step(self) -> None:
        losses.clamp_temperature(self.temp)
        losses.momentum_update(self.model, self.model_m, self.config.momentum)

    def model_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_m": self.model_m.state_dict(),
            "temp": self.temp.detach().clone(),
        }

    def load_model_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.model_m.load_state_dict(state["model_m"])
        with torch.no_grad():
            self.temp.copy_(state["temp"])

    def _inference_model(self) -> Any:
        from blipsearch.models.retrieval import RetrievalModel

        checkpoint = LoadedCheckpoint(
            model=self.model,
            processor=self.processor,
            source=str(self.run_dir),
            fingerprint=f"training-step-{self.step}",
            device=self.device,
            dtype=torch.float32,
        )
        return RetrievalModel(
            checkpoint, image_batch_size=self.config.batch, max_text_tokens=self.config.max_text_tokens
        )

    def validate(self) -> dict[str, Any]:
        """Recall@K by `blipsearch eval`'s own code (ITC), on the held-out images."""
        from blipsearch.search.evaluation import evaluate

        assert self.val_pairs is not None
        dataset = self._val_caption_set(self.val_pairs)
        self.model.eval()
        try:
            result = evaluate(self._inference_model(), dataset)
        finally:
            self.model.train()
        itc = result.as_dict()["results"][0]
        return {"metric": float(itc["recall_mean"]), "itc": itc}

    def _val_caption_set(self, pairs: PairSet) -> Any:
        """`evaluate` reads image files; in-memory images are written once into the run directory."""
        import numpy as np

        from blipsearch.search.caption_sets import CaptionSet

        order: dict[int, Path] = {}
        folder = self.run_dir / "val-images"
        for source, image_id in zip(pairs.images, pairs.image_ids, strict=True):
            if image_id in order:
                continue
            image = source() if callable(source) else source
            if isinstance(image, Image.Image):
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{image_id:06d}.png"
                if not path.exists():
                    image.convert("RGB").save(path)
                order[image_id] = path
            else:
                order[image_id] = Path(image)
        position = {image_id: index for index, image_id in enumerate(order)}
        return CaptionSet(
            source=self.run_dir / "validation",
            images=tuple(order.values()),
            texts=pairs.texts,
            text_to_image=np.asarray([position[i] for i in pairs.image_ids], dtype=np.int64),
        )

    def best_state(self) -> dict[str, Any]:
        return {**super().best_state(), "temp": self.temp.item()}


def train_retrieval(
    config: TrainConfig,
    pairs: Path | Sequence[tuple[Image.Image, str]] | PairSet,
    *,
    progress: ProgressCallback | None = None,
) -> RetrievalTrainer:
    """Build the trainer and run it to the end; returns it (history, run directory, best metric)."""
    trainer = RetrievalTrainer(config, pairs, progress=progress)
    trainer.fit()
    return trainer
