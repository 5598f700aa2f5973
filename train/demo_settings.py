"""What a demo-model run is: every setting of the recipe, and the checks they must pass together.

Kept apart from the trainer so that the data, augmentation and card modules can read a recipe
without importing the training loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blipsearch.errors import InvalidInputError
from blipsearch.train.demo_model import DemoArchitecture


@dataclass
class DemoRecipe:
    """Every setting of a demo-model run; written to `recipe.json` in full. The defaults are the
    shipped model's recipe (demo/model/README.md), so `blipsearch train demo OUT` reproduces it."""

    out: Path
    cache: Path
    train_styles: tuple[str, ...] = ("google", "emojione", "fluent-3d", "fluent-flat")
    holdout_style: str = "twitter"
    style_weights: tuple[float, ...] | None = (2.0, 1.0, 1.0, 1.0)
    """How often each training style is drawn, among those that have the emoji (None: equally)."""
    arch: DemoArchitecture = field(default_factory=DemoArchitecture)
    seed: int = 0
    itc_steps: int = 5000
    itc_batch: int = 256
    itc_lr: float = 5e-4
    warmup_steps: int = 200
    weight_decay: float = 0.05
    temp_init: float = 0.07
    itm_steps: int = 600
    itm_batch: int = 48
    itm_lr: float = 5e-4
    caption_steps: int = 800
    caption_batch: int = 96
    caption_lr: float = 3e-4
    prompt: str = "a picture of "
    label_smoothing: float = 0.1
    clean_fraction: float = 0.2
    """Share of training images shown un-augmented, exactly as the index will see them."""
    corrupt_fraction: float = 0.0
    """CapFilt experiment: this share of captions replaced by another emoji's caption."""
    drop_captions: Path | None = None
    """CapFilt experiment: a JSON list of [unified, caption] pairs the filter marked noisy."""
    train_captioner: bool = True
    caption_styles: tuple[str, ...] | None = ("google",)
    """Training styles phase 3 draws from, with their `style_weights` (None: all of them). The captioner
    stays on the catalog's style while retrieval learns from many: the same caption steps spread over
    four styles named the emoji on Noto less often (demo/model/notes.md)."""
    itm_neighbours: int = 4
    """ITM batches pair random anchors with one of their `itm_neighbours` ITC-nearest classes (0: random)."""
    itm_text_lr: float = 2e-5
    """Phase 2 learning rate of the text layers' own weights (0: frozen, only cross-attention learns)."""
    itm_keep_text: float = 200.0
    """Weight of the penalty on moving the captions' ITC embeddings in phase 2 (see `_text_drift`)."""
    itm_vision_layers: int = 1
    """Phase 2 also trains the ViT's last this many layers (and its final norm) for ITM. Phase 1 trains
    the patch tokens of the last layer for nothing (ITC reads only [CLS]), yet they are most of what
    ITM's cross-attention reads."""
    itm_vision_lr: float = 1e-4
    itm_keep_image: float = 200.0
    """Weight of the penalty on moving the images' ITC embeddings in phase 2 (see `itc_drift`)."""
    itm_rank_weight: float = 5.0
    """Weight of `losses.served_rank_loss` in phase 2: the re-ranking rule's own order (ITM log-odds
    plus ITC cosine / temperature), positive above each mined negative, beside BLIP's binary loss."""
    itm_curriculum: float = 0.3
    """Share of ITM steps over which negatives go from uniformly random to fully ITC-mined. Hard
    negatives alone give a head that starts from scratch nothing it can tell apart: it sat at the
    label prior for hundreds of steps."""
    itc_from: Path | None = None
    """Skip phase 1 and take its weights (ViT, projections, temperature) from this earlier run's output."""
    teacher: str | None = "efficientnet-lite0"
    """Phase 1 distils this pretrained CNN's caption distribution into the ViT (`train.teacher`)."""
    distill_alpha: float = 1.0
    """Share of the teacher's distribution in the ITC targets (the rest: the true class)."""
    distill_temp: float = 0.1
    """Softmax temperature of the teacher's distribution."""
    distill_text_to_image: bool = False
    """Also mix the teacher into the caption-to-images direction: more paraphrases, a point less
    held-out R@1 in the A/B (demo/model/notes.md), so off by default."""
    teacher_head_steps: int = 1500
    validate_every: int = 500
    """ITC steps between quick Recall@1 checks (logged to history.jsonl; never used to pick weights)."""
    threads: int | None = None
    device: str = "auto"
    """auto, cpu or cuda[:N] (`blipsearch.models.runtime.resolve_device`)."""
    bf16: bool | None = None
    """bfloat16 autocast of the model forwards; None: on a CUDA GPU that has it, off on a CPU, where
    only AMX or AVX512-BF16 units make it faster (demo/model/notes.md)."""

    @classmethod
    def plain(cls, out: Path, cache: Path, **changes: Any) -> DemoRecipe:
        """Noto alone, no teacher, BLIP's own ITM loss on a frozen ViT: the recipe before the shipped
        model's additions, which the CapFilt experiment was measured with and small tests run."""
        settings: dict[str, Any] = {
            "train_styles": ("google",),
            "style_weights": None,
            "caption_styles": None,
            "teacher": None,
            "itm_vision_layers": 0,
            "itm_rank_weight": 0.0,
        }
        return cls(out=out, cache=cache, **{**settings, **changes})

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("out", "cache", "drop_captions", "itc_from"):
            data[key] = None if data[key] is None else str(data[key])
        return data


def check_caption_styles(recipe: DemoRecipe) -> None:
    """The captioner's styles must be training styles and include the first, which draws every class."""
    if recipe.caption_styles is None:
        return
    unknown = [s for s in recipe.caption_styles if s not in recipe.train_styles]
    if unknown:
        raise InvalidInputError(f"Caption style(s) {', '.join(unknown)} are not training styles.")
    if recipe.train_styles[0] not in recipe.caption_styles:
        raise InvalidInputError(
            f"The caption styles must include {recipe.train_styles[0]!r}, the first training style: "
            "it is the one with an image of every emoji."
        )
