"""The training loop both trainers share: data, schedule, accumulation, checkpoints, exact resume.

A run directory holds everything needed to continue or to audit a run:

* `recipe.json`: every setting, written before the first step;
* `checkpoints/step-NNNNNNN.pt` and `checkpoints/latest`: model, momentum model, extra trainable
  state (the ITC temperature), optimizer, scheduler, every RNG state, the step and the position in
  the epoch, so that `resume=True` continues bit-identically with an uninterrupted run;
* `best/`: the best model so far by the validation metric, written with `save_pretrained` next to
  its processor so that every other command loads it like any checkpoint;
* `history.jsonl`: one line per optimizer step (losses, learning rate) and per validation.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.train.schedule import make_optimizer

log = logging.getLogger(__name__)

ImageSource = Path | Image.Image | Callable[[], Image.Image]
"""A file, a picture in memory, or a loader called when its batch needs it (an upload in the image store)."""
ProgressCallback = Callable[[int, int, dict[str, float]], None]
"""Called after each optimizer step with (step, total steps, losses)."""


@dataclass
class TrainConfig:
    """Every setting of a run; written to `recipe.json` in full."""

    base: str
    out: Path
    epochs: int = 1
    batch: int = 8
    accumulate: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    steps: int | None = None
    checkpoint_every: int = 0
    resume: bool = False
    val_fraction: float = 0.0
    seed: int = 0
    device: str = "cpu"
    offline: bool = False
    bf16: bool | None = None
    max_text_tokens: int = 35
    max_grad_norm: float = 0.0
    # retrieval
    momentum: float = 0.995
    alpha: float = 0.4
    temp_init: float = 0.07
    # captioner
    prompt: str = "a picture of "
    label_smoothing: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data


@dataclass(frozen=True)
class PairSet:
    """Image-text pairs; `image_ids[i]` says which picture pair i shows (several captions share one)."""

    images: tuple[ImageSource, ...]
    texts: tuple[str, ...]
    image_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> PairSet:
        return PairSet(
            images=tuple(self.images[i] for i in indices),
            texts=tuple(self.texts[i] for i in indices),
            image_ids=tuple(self.image_ids[i] for i in indices),
        )


def load_pairs(source: Path | Sequence[tuple[Image.Image, str]]) -> PairSet:
    """A TSV of `image<TAB>caption` lines (paths relative to the file), or (PIL image, text) pairs.

    The TSV goes through the evaluation loader, so training and `blipsearch eval` read one format.
    """
    if isinstance(source, Path | str):
        from blipsearch.search.caption_sets import load_caption_set

        dataset = load_caption_set(Path(source), fmt="tsv")
        ids = [int(i) for i in dataset.text_to_image]
        return PairSet(
            images=tuple(dataset.images[i] for i in ids), texts=dataset.texts, image_ids=tuple(ids)
        )
    pairs = list(source)
    if not pairs:
        raise InvalidInputError("No image-text pairs to train on.")
    seen: dict[int, int] = {}
    ids = [seen.setdefault(id(image), len(seen)) for image, _ in pairs]
    texts = [" ".join(text.split()) for _, text in pairs]
    if any(not text for text in texts):
        raise InvalidInputError("Every training pair needs a non-empty text.")
    return PairSet(images=tuple(image for image, _ in pairs), texts=tuple(texts), image_ids=tuple(ids))


def split_pairs(pairs: PairSet, val_fraction: float, seed: int) -> tuple[PairSet, PairSet | None]:
    """Hold out whole images (all their captions), so validation never sees a training picture."""
    if val_fraction <= 0:
        return pairs, None
    if val_fraction >= 1:
        raise InvalidInputError("--val-fraction must be below 1.")
    unique = sorted(set(pairs.image_ids))
    order = np.random.default_rng(seed).permutation(len(unique))
    held = max(1, round(len(unique) * val_fraction))
    if held >= len(unique):
        raise InvalidInputError("The validation split would take every image; lower --val-fraction.")
    val_ids = {unique[i] for i in order[:held]}
    train = [i for i, image in enumerate(pairs.image_ids) if image not in val_ids]
    val = [i for i, image in enumerate(pairs.image_ids) if image in val_ids]
    return pairs.subset(train), pairs.subset(val)


def load_images(sources: Sequence[ImageSource]) -> list[Image.Image]:
    from blipsearch.images import open_image
    from blipsearch.settings import Settings

    limits = Settings.model_fields
    max_bytes = int(limits["max_image_bytes"].default)
    max_pixels = int(limits["max_image_pixels"].default)
    loaded = []
    for source in sources:
        if isinstance(source, Image.Image):
            loaded.append(source)
        elif callable(source):
            loaded.append(source())
        else:
            loaded.append(open_image(source, max_bytes=max_bytes, max_pixels=max_pixels))
    return loaded


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Shared loop; subclasses define the model, the loss of one batch, validation and saving."""

    kind = "base"
    model: Any
    """Set by `build_model`: the transformers model being trained."""
    processor: Any

    def __init__(
        self,
        config: TrainConfig,
        pairs: Path | Sequence[tuple[Image.Image, str]] | PairSet,
        *,
        progress: ProgressCallback | None = None,
    ) -> None:
        from blipsearch.models.runtime import resolve_device, training_bf16

        self.config = config
        self.run_dir = Path(config.out)
        self.device = resolve_device(config.device)
        self.bf16 = training_bf16(config.bf16, self.device)
        self.progress = progress
        seed_everything(config.seed)
        all_pairs = pairs if isinstance(pairs, PairSet) else load_pairs(pairs)
        self.train_pairs, self.val_pairs = split_pairs(all_pairs, config.val_fraction, config.seed)
        if len(self.train_pairs) == 0:
            raise InvalidInputError("No training pairs left after the validation split.")
        self.generator = torch.Generator().manual_seed(config.seed)
        self.build_model()
        self.batches_per_epoch = math.ceil(len(self.train_pairs) / config.batch)
        steps_per_epoch = math.ceil(self.batches_per_epoch / config.accumulate)
        planned = steps_per_epoch * config.epochs
        self.total_steps = min(planned, config.steps) if config.steps else planned
        self.warmup_steps = int(self.total_steps * config.warmup_fraction)
        params = [p for p in self.trainable_parameters() if p.requires_grad]
        self.optimizer, self.scheduler = make_optimizer(
            params, config.lr, config.weight_decay, self.total_steps, self.warmup_steps
        )
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_metric: float | None = None
        self.history: list[dict[str, Any]] = []

    # --- subclass hooks -------------------------------------------------------------------------
    def build_model(self) -> None:
        raise NotImplementedError

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def batch_loss(self, pairs: PairSet) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_step(self) -> None:
        """Runs after each optimizer step (momentum update, temperature clamp)."""

    def model_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_model_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def validate(self) -> dict[str, Any]:
        """Validation metrics; `metric` (higher is better) picks the best checkpoint."""
        raise NotImplementedError

    def best_state(self) -> dict[str, Any]:
        """What `training_state.json` records beside the best model (subclasses add to it)."""
        return {"step": self.step, "epoch": self.epoch, "metric": self.best_metric}

    def save_best(self, directory: Path) -> None:
        """The best model as a checkpoint every command loads (`save_pretrained`), and its state."""
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        (directory / "training_state.json").write_text(json.dumps(self.best_state(), indent=2) + "\n")

    # --- the loop -------------------------------------------------------------------------------
    def recipe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "config": self.config.as_dict(),
            "train_pairs": len(self.train_pairs),
            "val_pairs": len(self.val_pairs) if self.val_pairs is not None else 0,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "batches_per_epoch": self.batches_per_epoch,
            "device": str(self.device),
            "bf16": self.bf16,
            "torch": torch.__version__,
        }

    def epoch_order(self, epoch: int) -> list[int]:
        """A permutation per epoch from (seed, epoch) alone, so a resumed run sees the same order."""
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_pairs), generator=generator).tolist()

    def fit(self, until_step: int | None = None) -> list[dict[str, Any]]:
        """Train to `total_steps` (or stop early at `until_step`, checkpointing there); the history."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.config.resume:
            self.check_recipe()
            self.load_checkpoint()
        else:
            (self.run_dir / "recipe.json").write_text(json.dumps(self.recipe(), indent=2) + "\n")
        stop = self.total_steps if until_step is None else min(until_step, self.total_steps)
        accumulate = self.config.accumulate
        while self.step < stop:
            order = self.epoch_order(self.epoch)
            while self.batch_in_epoch < self.batches_per_epoch and self.step < stop:
                first = self.batch_in_epoch
                last = min(first + accumulate, self.batches_per_epoch)
                self.optimizer.zero_grad(set_to_none=True)
                parts: dict[str, float] = {}
                for index in range(first, last):
                    chunk = order[index * self.config.batch : (index + 1) * self.config.batch]
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                        loss, losses = self.batch_loss(self.train_pairs.subset(chunk))
                    (loss / (last - first)).backward()
                    for key, value in losses.items():
                        parts[key] = parts.get(key, 0.0) + value / (last - first)
                if self.config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.config.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.after_step()
                self.batch_in_epoch = last
                self.step += 1
                record = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "lr": self.scheduler.get_last_lr()[0],
                    **parts,
                }
                self._record(record)
                if self.progress is not None:
                    self.progress(self.step, self.total_steps, parts)
                every = self.config.checkpoint_every
                if every and self.step % every == 0:
                    self.save_checkpoint()
            if self.batch_in_epoch >= self.batches_per_epoch:
                self.end_epoch()
        if until_step is not None and self.step < self.total_steps:
            self.save_checkpoint()
        elif self.batch_in_epoch > 0:  # stopped by --steps inside an epoch: validate what we have
            self.end_epoch()
        return self.history

    def check_recipe(self) -> None:
        """Refuse to resume under other settings: the schedule and data order would silently change."""
        path = self.run_dir / "recipe.json"
        if not path.is_file():
            raise InvalidInputError(f"{self.run_dir} has no recipe.json; nothing to resume.")
        recorded = json.loads(path.read_text())["config"]
        current = self.config.as_dict()
        changed = sorted(k for k in current if k != "resume" and recorded.get(k, current[k]) != current[k])
        if changed:
            detail = ", ".join(f"{k}: {recorded[k]!r} -> {current[k]!r}" for k in changed)
            raise InvalidInputError(
                f"Resuming {self.run_dir} with other settings than it started with ({detail})."
            )

    def end_epoch(self) -> None:
        metrics: dict[str, Any] = {}
        if self.val_pairs is not None and len(self.val_pairs):
            metrics = self.validate()
        metric = float(metrics.get("metric", -math.inf)) if metrics else None
        if metric is None:  # nothing to compare: the final model is the best one
            improved = self.step >= self.total_steps
        else:
            improved = self.best_metric is None or metric > self.best_metric
        if improved:
            self.best_metric = metric if metric is not None else self.best_metric
            self.save_best(self.run_dir / "best")
        self._record({"step": self.step, "epoch": self.epoch, "validation": metrics, "best": improved})
        self.epoch += 1
        self.batch_in_epoch = 0

    def _record(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        with (self.run_dir / "history.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def save_checkpoint(self) -> Path:
        """Everything `resume` needs, written to a temporary name first and renamed (crash-safe)."""
        folder = self.run_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{self.step:07d}.pt"
        state = {
            "model": self.model_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(self.generator),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_metric": self.best_metric,
        }
        partial = path.with_suffix(".pt.partial")
        torch.save(state, partial)
        partial.replace(path)
        (folder / "latest").write_text(path.name + "\n")
        return path

    def load_checkpoint(self) -> None:
        pointer = self.run_dir / "checkpoints" / "latest"
        if not pointer.is_file():
            raise InvalidInputError(f"{self.run_dir} has no checkpoint to resume from.")
        path = pointer.parent / pointer.read_text().strip()
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.load_model_state(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], self.generator)
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.best_metric = state["best_metric"]
        log.info("resumed training", extra={"step": self.step, "checkpoint": str(path)})
