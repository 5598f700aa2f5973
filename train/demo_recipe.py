"""The demo model's whole training recipe, sized for a 2-core CPU.

Three phases, each a fixed number of steps so that a seed reproduces the run:

1. **ITC.** The ViT learns from scratch against the frozen MiniLM text side. Because the text
   encoder is frozen, each caption's [CLS] state is computed once; a step then projects every
   class's caption (one phrasing drawn per class per step) through `text_proj`, so each image is
   contrasted with every emoji class rather than with a batch, the role BLIP's feature queue plays.
   Both directions are scored (image to all texts, batch texts to batch images) with BLIP's
   learned, clamped temperature. Augmentation (scale, position, rotation, background, light
   colour jitter, blur, posterisation) is done on tensors, since PIL per image would dominate.
   No hue change and no flips: colour and direction are part of emoji names.
2. **ITM.** Vision frozen (or only its last layers learn, held to phase 1's ITC vectors by a
   penalty); the text encoder's new cross-attention layers and the ITM head learn,
   and its own layers at a lower rate, with negatives drawn from the in-batch ITC similarities
   (each image gets a likely wrong text, each text a likely wrong image), random at first and
   fully mined after a ramp. A penalty keeps the captions' ITC embeddings where phase 1 left
   them; the word embeddings stay frozen.
3. **LM.** The captioner's ViT is the retrieval ViT as phases 1 and 2 left it, frozen; its decoder
   (MiniLM's first layers plus new cross-attention) learns "a picture of " + the emoji's name with
   label smoothing.

Phases 2 and 3 compute the frozen part of the ViT without gradients.

The recipe runs on the CPU or a CUDA GPU (`device`). Images are drawn and augmented on the CPU
from its seeded generator, and ITM's negatives are sampled there too, so a seed draws the same
batches on either device. `bf16` runs the ViT's and the text side's forwards under bfloat16
autocast, with projections, normalisation and losses in float32.

This module is the trainer; the recipe's settings are `demo_settings`, its images `emoji_classes`
and `augment`, its batches and ITM negatives `batches`, its captions `text_bank`, and the split
forward passes and caption loss `demo_layers`.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import BlipProcessor

from blipsearch.errors import InvalidInputError
from blipsearch.machine import cpu_has_native_bf16, machine_description
from blipsearch.models.runtime import resolve_device, training_bf16
from blipsearch.train import losses, teacher
from blipsearch.train.augment import augment, pick_images, train_images
from blipsearch.train.batches import class_batches, hard_negative_share, negative_weights, neighbour_batches
from blipsearch.train.demo_layers import (
    caption_loss,
    itm_text_parameters,
    vision_tail,
    vision_tail_parameters,
    vision_trunk,
)
from blipsearch.train.demo_model import build_demo_models
from blipsearch.train.demo_settings import DemoRecipe, check_caption_styles
from blipsearch.train.emoji_classes import flatten_on_white, has_image, load_classes
from blipsearch.train.emoji_packages import PACKAGES, EmojiPackage
from blipsearch.train.paraphrases import PARAPHRASE_QUERIES, paraphrase_hit_rate
from blipsearch.train.schedule import make_optimizer
from blipsearch.train.text_bank import TextBank, encode_frozen, pad_token_ids, token_ids

log = logging.getLogger(__name__)

StepCallback = Callable[[str, int, int, dict[str, float]], None]
"""Called as (phase, step, total steps, numbers) after each optimizer step."""


def style_mean_std(processor: BlipProcessor) -> tuple[torch.Tensor, torch.Tensor]:
    image_processor: Any = processor.image_processor
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    return mean, std


class DemoTrainer:
    """Runs the three phases on fresh models and writes the checkpoints with `save_pretrained`."""

    def __init__(
        self,
        recipe: DemoRecipe,
        progress: StepCallback | None = None,
        *,
        packages: dict[str, EmojiPackage] | None = None,
    ) -> None:
        check_caption_styles(recipe)
        self.device = resolve_device(recipe.device)
        self.bf16 = training_bf16(recipe.bf16, self.device)
        if self.bf16 and self.device.type == "cpu" and not cpu_has_native_bf16():
            log.warning(
                "bf16 on a CPU without AVX512-BF16 or AMX: torch emulates it, and a demo ITC step "
                "runs many times slower than float32 on such a CPU (bench/demo_training.py measures it)"
            )
        # first, so that a missing package or an unknown name fails before minutes of data loading
        self.teacher_model = teacher.load_teacher(recipe.teacher) if recipe.teacher else None
        if self.teacher_model is not None:
            self.teacher_model.to(self.device)
        self.recipe = recipe
        self.progress = progress
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        torch.manual_seed(recipe.seed)
        self.generator = torch.Generator().manual_seed(recipe.seed)
        retrieval, captioner, self.processor = build_demo_models(recipe.arch, seed=recipe.seed)
        self.retrieval, self.captioner = retrieval.to(self.device), captioner.to(self.device)
        self.packages = packages if packages is not None else PACKAGES
        self.classes = load_classes(recipe, self.packages)
        self.mean, self.std = (t.to(self.device) for t in style_mean_std(self.processor))
        self.retrieval.eval()
        self.bank = TextBank(self.retrieval, self.processor, self.classes.captions)
        self.temp = torch.nn.Parameter(torch.tensor(recipe.temp_init, device=self.device))
        self.history: list[dict[str, Any]] = []
        self.seconds: dict[str, float] = {}

    def record(self, entry: dict[str, Any]) -> None:
        """Keep a history line, and append it to history.jsonl at once so a killed run leaves its curve."""
        self.history.append(entry)
        self.recipe.out.mkdir(parents=True, exist_ok=True)
        with open(self.recipe.out / "history.jsonl", "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    def phase_generator(self, phase: int) -> torch.Generator:
        """Phase 1 (ITC) draws from the run's generator; later phases get their own seed, so a
        phase re-run from saved phase-1 weights (`itc_from`) draws exactly what a full run would."""
        return torch.Generator().manual_seed(self.recipe.seed * 1000 + phase)

    def normalise(self, rgb: torch.Tensor) -> torch.Tensor:
        """Model input on the run's device from images drawn on the CPU."""
        return (rgb.to(self.device, non_blocking=True) - self.mean) / self.std

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def on_device(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        return [t.to(self.device) for t in tensors]

    def _log(self, phase: str, step: int, total: int, numbers: dict[str, float]) -> None:
        if step % 25 == 0 or step == total:
            self.record({"phase": phase, "step": step, **numbers})
        if self.progress is not None:
            self.progress(phase, step, total, numbers)

    def image_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.retrieval
        with self.autocast():
            tokens = model.vision_model(pixel_values=pixels).last_hidden_state
        tokens = tokens.float()
        return tokens, F.normalize(model.vision_proj(tokens[:, 0, :]), dim=-1)

    def class_text_features(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One drawn caption per class, projected: [classes, dim], and the rows drawn."""
        everyone = torch.arange(len(self.classes.unified))
        rows = self.bank.draw(everyone, generator)
        return F.normalize(self.retrieval.text_proj(self.bank.cls[rows]), dim=-1), rows

    def train_itc(self) -> None:
        recipe = self.recipe
        model = self.retrieval
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        trainable = [
            *model.vision_model.parameters(),
            *model.vision_proj.parameters(),
            *model.text_proj.parameters(),
        ]
        for parameter in trainable:
            parameter.requires_grad_(True)
        model.vision_model.train()
        optimizer, schedule = make_optimizer(
            [*trainable, self.temp], recipe.itc_lr, recipe.weight_decay, recipe.itc_steps, recipe.warmup_steps
        )
        batches = class_batches(len(self.classes.unified), recipe.itc_batch, self.generator)
        space = self.teacher_space() if recipe.teacher else None  # timed apart, as "teacher"
        started = time.perf_counter()
        for step in range(1, recipe.itc_steps + 1):
            rows = next(batches)
            rgba, which = pick_images(self.classes, recipe, rows, self.generator)
            pixels = self.normalise(augment(rgba, self.generator, recipe.clean_fraction))
            _, image_feat = self.image_features(pixels)
            text_all, _ = self.class_text_features(self.generator)
            batch_text = F.normalize(
                model.text_proj(self.bank.cls[self.bank.draw(rows, self.generator)]), dim=-1
            )
            rows, which = self.on_device(rows, which)
            tau = self.temp.clamp(losses.TEMP_MIN, losses.TEMP_MAX)
            i2t_logits = image_feat @ text_all.t() / tau
            t2i_logits = batch_text @ image_feat.t() / tau
            if space is None:
                i2t = F.cross_entropy(i2t_logits, rows)
            else:
                i2t_target = losses.itc_targets(
                    space.image_to_text(which, rows),
                    recipe.distill_alpha,
                    F.one_hot(rows, len(text_all)).float(),
                )
                i2t = losses.soft_cross_entropy(i2t_logits, i2t_target)
            if space is None or not recipe.distill_text_to_image:
                t2i = F.cross_entropy(t2i_logits, torch.arange(len(rows), device=self.device))
            else:
                t2i_target = losses.itc_targets(
                    space.text_to_image(which, rows),
                    recipe.distill_alpha,
                    torch.eye(len(rows), device=self.device),
                )
                t2i = losses.soft_cross_entropy(t2i_logits, t2i_target)
            loss = (i2t + t2i) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.clamp_temperature(self.temp)
            self._log("itc", step, recipe.itc_steps, {"loss": loss.item(), "temp": self.temp.item()})
            if recipe.validate_every and (step % recipe.validate_every == 0 or step == recipe.itc_steps):
                recall = self.quick_recall()
                log.info(
                    "itc validation step=%d %s", step, " ".join(f"{k}={v:.4f}" for k, v in recall.items())
                )
                self.record({"phase": "itc-validation", "step": step, **recall})
                model.vision_model.train()
        model.vision_model.eval()
        self.seconds["itc"] = time.perf_counter() - started

    def teacher_space(self) -> teacher.TeacherSpace:
        """The trained teacher head's embeddings of the training images and captions (`train.teacher`)."""
        recipe = self.recipe
        assert recipe.teacher is not None
        started = time.perf_counter()
        size = recipe.arch.image_size
        presence = {style: has_image(rgba) for style, rgba in self.classes.pixels.items()}
        features = {
            style: teacher.cached_features(
                recipe.teacher,
                f"{self.packages[style].release}-{size}",
                flatten_on_white(rgba),
                presence[style],
                recipe.cache,
                self.teacher_model,
            )
            for style, rgba in self.classes.pixels.items()
        }
        train = torch.stack([features[s] for s in recipe.train_styles])
        present = torch.stack([presence[s] for s in recipe.train_styles])
        everyone = torch.arange(len(self.classes.unified))
        states = self.bank.cls.cpu()  # the small head trains in seconds on the CPU, on any device's run
        head = teacher.train_head(
            train,
            present,
            states,
            lambda generator: self.bank.draw(everyone, generator),
            self.phase_generator(0),
            steps=recipe.teacher_head_steps,
        )
        canonical = states[self.bank.canonical_rows()]
        recall = {
            f"{k}_{style}": v
            for style, f in features.items()
            for k, v in teacher.head_recall(head, f, canonical).items()
        }
        log.info("teacher head %s", " ".join(f"{k}={v:.4f}" for k, v in recall.items()))
        self.record({"phase": "teacher-head", **recall})
        self.seconds["teacher"] = time.perf_counter() - started
        return teacher.TeacherSpace.build(head, train, canonical, recipe.distill_temp).to(self.device)

    @torch.no_grad()
    def canonical_text_features(self) -> torch.Tensor:
        """Each class's first (canonical) caption in the ITC space: [classes, dim]."""
        return F.normalize(self.retrieval.text_proj(self.bank.cls[self.bank.canonical_rows()]), dim=-1)

    @torch.no_grad()
    def clean_image_features(self, rgba: torch.Tensor) -> torch.Tensor:
        """ITC features of un-augmented images on white (as indexed), in chunks of 256, eval mode."""
        self.retrieval.vision_model.eval()
        return torch.cat(
            [
                self.image_features(self.normalise(flatten_on_white(rgba[i : i + 256])))[1]
                for i in range(0, len(rgba), 256)
            ]
        )

    @torch.no_grad()
    def quick_recall(self) -> dict[str, float]:
        """Text-to-image ITC Recall@1 per style on clean images and canonical captions (no ITM), and
        the paraphrase hit rate (top 5) on the catalog style."""
        texts = self.canonical_text_features()
        result: dict[str, float] = {}
        for style, rgba in self.classes.pixels.items():
            present = has_image(rgba).to(self.device)
            features = self.clean_image_features(rgba)
            sims = texts[present] @ features[present].t()
            hits = sims.argmax(1) == torch.arange(int(present.sum()), device=self.device)
            result[f"t2i_r1_{style}"] = hits.float().mean().item()
            if style == self.recipe.train_styles[0]:
                names = [name.lower() for name in self.classes.names]
                result["paraphrase_top5"] = paraphrase_hit_rate(
                    self.paraphrase_text_features().cpu().numpy(), features.cpu().numpy(), names
                )
        return result

    @torch.no_grad()
    def paraphrase_text_features(self) -> torch.Tensor:
        """`PARAPHRASE_QUERIES` in the ITC space (the text encoder is frozen while this is used)."""
        queries = [query for query, _ in PARAPHRASE_QUERIES]
        cls = encode_frozen(self.retrieval, token_ids(self.processor, queries))
        return F.normalize(self.retrieval.text_proj(cls), dim=-1)

    def _itm_logits(self, vision: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ids, mask = self.on_device(*self.bank.pad(rows.tolist()))
        with self.autocast():
            hidden = self.retrieval.text_encoder(
                input_ids=ids,
                attention_mask=mask,
                encoder_hidden_states=vision,
                encoder_attention_mask=torch.ones(vision.shape[:-1], dtype=torch.long, device=self.device),
            ).last_hidden_state
        return self.retrieval.itm_head(hidden[:, 0, :].float())

    def _text_drift(self, rows: torch.Tensor) -> torch.Tensor:
        """How far these captions' ITC embeddings moved from phase 1's (`itc_drift`).

        The same text layers serve ITC without the image and ITM with it, so a layer that learns to
        read the image may move what ITC (and a person's own wording) relies on. Measured after
        `text_proj`, the penalty leaves free the [CLS] directions ITC ignores, which ITM can use."""
        unique = torch.unique(rows)
        ids, mask = self.on_device(*self.bank.pad(unique.tolist()))
        live = self.retrieval.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        project = self.retrieval.text_proj
        return losses.itc_drift(project(live), project(self.bank.cls[unique]))

    def load_itc(self, run: Path) -> None:
        """Phase 1's result from an earlier run: what ITC trains (ViT, both projections, temperature)."""
        from safetensors.torch import load_file

        weights = load_file(str(run / "retrieval" / "model.safetensors"))
        wanted = ("vision_model.", "vision_proj.", "text_proj.")
        state = {k: v.float() for k, v in weights.items() if k.startswith(wanted)}
        missing = [k for k in self.retrieval.state_dict() if k.startswith(wanted) and k not in state]
        if missing:
            raise InvalidInputError(f"{run} has no phase-1 weights for {missing[:3]}.")
        self.retrieval.load_state_dict(state, strict=False)
        temperature = json.loads((run / "training_state.json").read_text())["temperature"]
        with torch.no_grad():
            self.temp.fill_(float(temperature))
        earlier = json.loads((run / "timing.json").read_text()) if (run / "timing.json").is_file() else {}
        for phase in ("teacher", "itc"):  # what phase 1 cost, so the card's total is the recipe's
            if phase in earlier:
                self.seconds[phase] = float(earlier[phase])
        if (run / "history.jsonl").is_file():  # keep phase 1's curve with the model it made
            for line in (run / "history.jsonl").read_text().splitlines():
                entry = json.loads(line)
                if str(entry.get("phase", "")).startswith("itc"):
                    self.record(entry)
        self.retrieval.vision_model.eval()

    @torch.no_grad()
    def neighbour_table(self, count: int) -> torch.Tensor:
        """Per class, the `count` other classes whose caption its clean image is closest to by ITC."""
        texts = self.canonical_text_features()
        features = self.clean_image_features(self.classes.pixels[self.recipe.train_styles[0]])
        sims = features @ texts.t()
        sims.fill_diagonal_(-torch.inf)
        return sims.topk(min(count, len(texts) - 1), dim=1).indices.cpu()

    def itm_batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Batches of distinct classes; with `itm_neighbours`, each random anchor joined by a class
        ITC confuses it with (`batches.neighbour_batches`)."""
        recipe = self.recipe
        classes = len(self.classes.unified)
        if not recipe.itm_neighbours:
            yield from class_batches(classes, recipe.itm_batch, generator)
            return
        table = self.neighbour_table(recipe.itm_neighbours)  # on the first batch, inside the phase's time
        yield from neighbour_batches(table, classes, recipe.itm_batch, generator)

    def train_itm(self) -> None:
        """BLIP's ITM: each image with a wrong text and each text with a wrong image, both sampled
        from the in-batch ITC similarities (softmax, the positive's own class excluded)."""
        recipe = self.recipe
        model = self.retrieval
        generator = self.phase_generator(1)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        new = [p for n, p in model.text_encoder.named_parameters() if "crossattention" in n]
        new += list(model.itm_head.parameters())
        text = itm_text_parameters(model) if recipe.itm_text_lr > 0 else []
        tail = recipe.itm_vision_layers
        seeing = vision_tail_parameters(model.vision_model, tail) if tail else []
        # phase 1's ViT, kept to mine negatives with and to hold the images' ITC vectors in place
        reference = copy.deepcopy(model.vision_model).eval() if tail else None
        for parameter in [*new, *text, *seeing]:
            parameter.requires_grad_(True)
        groups: list[dict[str, Any]] = [{"params": new}]
        if text:
            groups.append(
                {"params": text, "lr": recipe.itm_text_lr, "weight_decay": 0.0}
            )  # pretrained: no pull to 0
        if seeing:
            groups.append({"params": seeing, "lr": recipe.itm_vision_lr, "weight_decay": 0.0})
        optimizer, schedule = make_optimizer(
            groups, recipe.itm_lr, recipe.weight_decay, recipe.itm_steps, recipe.warmup_steps // 4
        )
        batches = self.itm_batches(generator)
        model.text_encoder.train()
        started = time.perf_counter()
        for step in range(1, recipe.itm_steps + 1):
            rows = next(batches)
            with torch.no_grad():
                pixels = self.normalise(train_images(self.classes, recipe, rows, generator))
                if reference is None:
                    vision, image_feat = self.image_features(pixels)
                else:
                    with self.autocast():
                        trunk = vision_trunk(model.vision_model, pixels, tail)
                        before = vision_tail(reference, trunk, tail)[:, 0]
                    image_feat = F.normalize(model.vision_proj(before.float()), dim=-1)
                positive = self.bank.draw(rows, generator)
                text_feat = F.normalize(model.text_proj(self.bank.cls[positive]), dim=-1)
                same = rows.view(-1, 1) == rows.view(1, -1)
                tau = float(self.temp.detach())
                cosines = (image_feat @ text_feat.t()).cpu()  # mined on the CPU, by its generator
                i2t = (cosines / tau).masked_fill(same, -torch.inf)
                hard = hard_negative_share(step, recipe.itm_steps, recipe.itm_curriculum)
                text_pick = torch.multinomial(negative_weights(i2t, same, hard), 1, generator=generator)[:, 0]
                negative_text = positive[text_pick]
                negative_image = torch.multinomial(
                    negative_weights(i2t.t(), same, hard), 1, generator=generator
                )[:, 0]
            image_drift = torch.zeros((), device=self.device)
            if reference is not None:
                with self.autocast():
                    vision = vision_tail(model.vision_model, trunk, tail)
                vision = vision.float()
                image_drift = losses.itc_drift(model.vision_proj(vision[:, 0]), image_feat)
            logits = torch.cat(
                [
                    self._itm_logits(vision, positive),
                    self._itm_logits(vision, negative_text),
                    self._itm_logits(vision[negative_image.to(self.device)], positive),
                ]
            )
            labels = torch.cat([torch.ones(len(rows)), torch.zeros(2 * len(rows))]).long().to(self.device)
            loss = F.cross_entropy(logits, labels)
            if recipe.itm_rank_weight:
                anchors = torch.arange(len(rows))
                pairs = torch.cat(
                    [
                        cosines.diagonal(),
                        cosines[anchors, text_pick],
                        cosines[negative_image, anchors],
                    ]
                )
                rank = losses.served_rank_loss(logits, pairs.to(self.device), 1.0 / tau, negatives=2)
                loss = loss + recipe.itm_rank_weight * rank
            drift = (
                self._text_drift(torch.cat([positive, negative_text]))
                if text
                else torch.zeros((), device=self.device)
            )
            loss = loss + recipe.itm_keep_text * drift + recipe.itm_keep_image * image_drift
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            accuracy = (logits.argmax(1) == labels).float().mean().item()
            numbers = {"loss": loss.item(), "accuracy": accuracy, "hard": hard, "text_drift": drift.item()}
            if reference is not None:
                numbers["image_drift"] = image_drift.item()
            self._log("itm", step, recipe.itm_steps, numbers)
        model.text_encoder.eval()
        for parameter in seeing:
            parameter.requires_grad_(False)
        self.seconds["itm"] = time.perf_counter() - started

    def train_caption(self) -> None:
        recipe = self.recipe
        captioner = self.captioner
        captioner.vision_model.load_state_dict(self.retrieval.vision_model.state_dict())
        for parameter in captioner.parameters():
            parameter.requires_grad_(False)
        trainable = list(captioner.text_decoder.parameters())
        for parameter in trainable:
            parameter.requires_grad_(True)
        captioner.vision_model.eval()
        captioner.text_decoder.train()
        optimizer, schedule = make_optimizer(
            trainable, recipe.caption_lr, recipe.weight_decay, recipe.caption_steps, recipe.warmup_steps // 4
        )
        tokenizer: Any = self.processor.tokenizer
        prompt_length = len(tokenizer(recipe.prompt, add_special_tokens=False)["input_ids"]) + 1
        bos = captioner.config.text_config.bos_token_id
        targets = [f"{recipe.prompt}{captions[0]}" for captions in self.classes.captions]
        encoded_targets = token_ids(self.processor, targets)
        generator = self.phase_generator(2)
        batches = class_batches(len(self.classes.unified), recipe.caption_batch, generator)
        started = time.perf_counter()
        for step in range(1, recipe.caption_steps + 1):
            rows = next(batches)
            with torch.no_grad():
                images = train_images(self.classes, recipe, rows, generator, recipe.caption_styles)
                with self.autocast():
                    vision = captioner.vision_model(pixel_values=self.normalise(images)).last_hidden_state
            ids, mask = pad_token_ids([encoded_targets[r] for r in rows.tolist()])
            ids[:, 0] = bos
            labels = losses.lm_labels(ids, mask, prompt_length)
            ids, mask, labels = self.on_device(ids, mask, labels)
            with self.autocast():
                loss = caption_loss(captioner, vision, ids, mask, labels, recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            self._log("lm", step, recipe.caption_steps, {"loss": loss.item()})
        captioner.text_decoder.eval()
        self.seconds["lm"] = time.perf_counter() - started

    def save(self) -> dict[str, Path]:
        """float16 safetensors via `save_pretrained`, each next to its processor."""
        out = self.recipe.out
        written: dict[str, Path] = {}
        models: list[tuple[str, Any]] = [("retrieval", self.retrieval)]
        if self.recipe.train_captioner:
            models.append(("caption", self.captioner))
        for role, model in models:
            target = out / role
            copy.deepcopy(model).to("cpu", torch.float16).save_pretrained(target, safe_serialization=True)
            self.processor.save_pretrained(target)
            written[role] = target
        (out / "training_state.json").write_text(
            json.dumps({"temperature": self.temp.item()}, indent=2) + "\n"
        )
        return written

    def run(self) -> dict[str, Path]:
        out = self.recipe.out
        itc_from = self.recipe.itc_from
        if itc_from is not None and itc_from.resolve() == out.resolve():
            raise InvalidInputError("--itc-from must be another run's folder: this run rewrites its own.")
        out.mkdir(parents=True, exist_ok=True)
        (out / "history.jsonl").unlink(missing_ok=True)
        ran = {
            **self.recipe.as_dict(),
            "device": str(self.device),
            "bf16": self.bf16,
            "machine": machine_description(),
        }
        (out / "recipe.json").write_text(json.dumps(ran, indent=2) + "\n")
        (out / "data.json").write_text(
            json.dumps({"images": self.classes.images_per_style()}, indent=2) + "\n"
        )
        if self.recipe.itc_from is not None:
            self.load_itc(self.recipe.itc_from)
        else:
            self.train_itc()
        if self.recipe.itm_steps:
            self.train_itm()
        if self.recipe.train_captioner and self.recipe.caption_steps:
            self.train_caption()
        written = self.save()
        (out / "timing.json").write_text(json.dumps(self.seconds, indent=2) + "\n")
        return written
