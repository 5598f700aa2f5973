"""The demo model's whole training recipe, sized for a 2-core CPU.

Three phases, each a fixed number of steps so that a seed reproduces the run:

1. **ITC.** The ViT learns from scratch against the frozen MiniLM text side. Because the text
   encoder is frozen, each caption's [CLS] state is computed once; a step then projects every
   class's caption (one phrasing drawn per class per step) through `text_proj`, so each image is
   contrasted with all ~1,900 emoji rather than with a batch, the role BLIP's feature queue plays.
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
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from blipsearch.train import losses, teacher
from blipsearch.train.demo_model import DemoArchitecture, build_demo_models
from blipsearch.train.emoji import (
    PACKAGES,
    EmojiArchive,
    EmojiPackage,
    EmojiRecord,
    captions_for,
    codepoint_key,
    fetch_package,
    parse_records,
)
from blipsearch.train.paraphrases import PARAPHRASE_QUERIES, paraphrase_hit_rate
from PIL import Image
from transformers import (
    BlipForConditionalGeneration,
    BlipForImageTextRetrieval,
    BlipProcessor,
    BlipVisionModel,
)

from blipsearch.errors import InvalidInputError
from blipsearch.machine import cpu_has_native_bf16, machine_description
from blipsearch.models.runtime import resolve_device, training_bf16

log = logging.getLogger(__name__)

StepCallback = Callable[[str, int, int, dict[str, float]], None]
"""Called as (phase, step, total steps, numbers) after each optimizer step."""


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
    four styles named the emoji on Noto for 78% of images instead of 93%."""
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


# --------------------------------------------------------------------------------------------- data


@dataclass
class EmojiClasses:
    """The emoji the model learns: records per style, captions per class, RGBA pixels per style."""

    unified: list[str]
    names: list[str]
    captions: list[list[str]]
    """Training captions per class (after corruption and dropping)."""
    clean_captions: list[list[str]]
    records: dict[str, list[EmojiRecord]]
    pixels: dict[str, torch.Tensor]
    """style -> [classes, 4, size, size] float in 0..1 (RGBA); a missing image is all zero."""
    corrupted: set[tuple[str, str]] = field(default_factory=set)

    def images_per_style(self) -> dict[str, int]:
        """How many classes each style has an image for."""
        return {style: int(has_image(p).sum()) for style, p in self.pixels.items()}


def has_image(rgba: torch.Tensor) -> torch.Tensor:
    """Per class (leading dimensions kept), whether this style drew it: a missing image is all zero."""
    return rgba[..., 3, :, :].flatten(-2).amax(-1) > 0


def rasterise_svg(svg: bytes, size: int) -> bytes:
    """A PNG of an SVG emoji at `size` px; cairosvg is imported only for styles drawn as SVG."""
    try:
        import cairosvg
    except ImportError:
        raise InvalidInputError(
            "This emoji style is drawn as SVG; install cairosvg (`pip install blipsearch[demo-train]`)."
        ) from None
    try:
        png: bytes = cairosvg.svg2png(bytestring=svg, output_width=size, output_height=size)
    except Exception as exc:  # cairosvg raises parser-specific errors for a broken file
        raise InvalidInputError(f"An SVG emoji cannot be rendered ({exc}).") from None
    return png


def _rgba(image_bytes: bytes, size: int, suffix: str = ".png") -> torch.Tensor:
    """RGBA in 0..1 at `size` px; `suffix` is the package's image format (SVG needs rendering)."""
    png = rasterise_svg(image_bytes, size) if suffix == ".svg" else image_bytes
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("RGBA")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


def load_classes(recipe: DemoRecipe, packages: dict[str, EmojiPackage] | None = None) -> EmojiClasses:
    """Emoji of the training styles (the classes) and the held-out style, from the pinned packages."""
    known = packages if packages is not None else PACKAGES
    styles = [*recipe.train_styles, recipe.holdout_style]
    records: dict[str, list[EmojiRecord]] = {}
    archives: dict[str, EmojiArchive] = {}
    for style in dict.fromkeys(styles):
        if style not in known:
            raise InvalidInputError(f"Unknown emoji style {style!r}; use one of {', '.join(known)}.")
        package = known[style]
        if package.images_at:
            archives[style] = EmojiArchive.read_codepoints(
                fetch_package(package, recipe.cache), package.images_at, package.image_suffix
            )
            continue
        archive = EmojiArchive.read(fetch_package(package, recipe.cache), style)
        archives[style] = archive
        records[style] = parse_records(archive.entries, style, archive.images)
    if recipe.train_styles[0] not in records:
        raise InvalidInputError(
            f"The first training style must be an emoji-datasource set (it names the classes), "
            f"not {recipe.train_styles[0]!r}."
        )
    first = records[recipe.train_styles[0]]
    unified = [r.unified for r in first]
    names = [r.name for r in first]
    clean = [captions_for(r) for r in first]
    size = recipe.arch.image_size
    pixels: dict[str, torch.Tensor] = {}
    for style, archive in archives.items():
        if style in records:
            by_code = {r.unified: archive.images[r.image] for r in records[style]}
        else:
            by_code = {
                code: archive.images[codepoint_key(code)]
                for code in unified
                if codepoint_key(code) in archive.images
            }
        suffix = known[style].image_suffix
        tensor = torch.zeros(len(unified), 4, size, size)
        for index, code in enumerate(unified):
            data = by_code.get(code)
            if data is not None:
                tensor[index] = _rgba(data, size, suffix)
        pixels[style] = tensor
    captions, corrupted = corrupt_captions(clean, unified, recipe.corrupt_fraction, recipe.seed)
    if recipe.drop_captions is not None:
        dropped = {tuple(pair) for pair in json.loads(recipe.drop_captions.read_text())}
        captions = [
            [c for c in texts if (code, c) not in dropped] or texts[:1]
            for code, texts in zip(unified, captions, strict=True)
        ]
    return EmojiClasses(unified, names, captions, clean, records, pixels, corrupted)


def corrupt_captions(
    captions: list[list[str]], unified: list[str], fraction: float, seed: int
) -> tuple[list[list[str]], set[tuple[str, str]]]:
    """Replace `fraction` of all captions by a caption of another emoji (simulated noisy web text).

    Returns the new caption lists and the set of (unified, caption) pairs that are now wrong.
    """
    if fraction <= 0:
        return [list(c) for c in captions], set()
    rng = random.Random(f"corrupt:{seed}")
    result: list[list[str]] = []
    wrong: set[tuple[str, str]] = set()
    for index, texts in enumerate(captions):
        kept: list[str] = []
        for text in texts:
            if rng.random() < fraction:
                other = rng.randrange(len(captions) - 1)
                other += other >= index
                text = rng.choice(captions[other])
                wrong.add((unified[index], text))
            kept.append(text)
        result.append(list(dict.fromkeys(kept)))
    return result, wrong


def style_mean_std(processor: BlipProcessor) -> tuple[torch.Tensor, torch.Tensor]:
    image_processor: Any = processor.image_processor
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    return mean, std


def flatten_on_white(rgba: torch.Tensor) -> torch.Tensor:
    """RGBA over white, as `blipsearch.images` flattens transparent images before indexing."""
    alpha = rgba[:, 3:4]
    return rgba[:, :3] * alpha + (1.0 - alpha)


def augment(rgba: torch.Tensor, generator: torch.Generator, clean_fraction: float) -> torch.Tensor:
    """Random scale/position/rotation, background and colour jitter for a batch of RGBA emoji."""
    n = rgba.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    scale = uniform(0.55, 1.05)
    angle = uniform(-0.2, 0.2)
    room = (1.0 / scale - 1.0).clamp(min=0.0)
    shift_x = uniform(-1.0, 1.0) * room
    shift_y = uniform(-1.0, 1.0) * room
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(rgba.shape), align_corners=False)
    warped = F.grid_sample(rgba, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    alpha = warped[:, 3:4]
    white = torch.rand(n, 1, 1, 1, generator=generator) < 0.5
    background = torch.where(white, torch.ones(n, 3, 1, 1), uniform(0.55, 1.0, 3, 1, 1))
    rgb = warped[:, :3] * alpha + background * (1.0 - alpha)
    brightness = uniform(0.8, 1.2, 1, 1, 1)
    contrast = uniform(0.75, 1.25, 1, 1, 1)
    saturation = uniform(0.6, 1.3, 1, 1, 1)
    gray = rgb.mean(1, keepdim=True)
    rgb = gray + (rgb - gray) * saturation
    mean = rgb.mean((1, 2, 3), keepdim=True)
    rgb = ((rgb - mean) * contrast + mean) * brightness
    blur = torch.rand(n, generator=generator) < 0.3
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None, :]) / 16.0
        blurred = F.conv2d(
            F.pad(rgb[blur], (1, 1, 1, 1), mode="replicate"), kernel.expand(3, 1, 3, 3), groups=3
        )
        rgb[blur] = blurred
    poster = torch.rand(n, generator=generator) < 0.25
    if poster.any():
        levels = 5.0
        rgb[poster] = torch.round(rgb[poster].clamp(0, 1) * levels) / levels
    rgb = rgb.clamp(0.0, 1.0)
    keep = torch.rand(n, generator=generator) < clean_fraction
    if keep.any():
        rgb[keep] = flatten_on_white(rgba[keep])
    return rgb


# --------------------------------------------------------------------------------------------- helpers


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    parameters: Sequence[torch.nn.Parameter] | Sequence[dict[str, Any]],
    lr: float,
    weight_decay: float,
    total: int,
    warmup: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup))
    return optimizer, schedule


def class_batches(classes: int, batch: int, generator: torch.Generator) -> Any:
    """Endless batches of distinct classes; each pass over a permutation covers every class once."""
    while True:
        order = torch.randperm(classes, generator=generator)
        for start in range(0, classes - batch + 1, batch):
            yield order[start : start + batch]


def itm_text_parameters(model: BlipForImageTextRetrieval) -> list[torch.nn.Parameter]:
    """The text layers' own self-attention and feed-forward weights (not embeddings, not cross-attention).

    With these frozen, the image reaches the ITM head only through softmax-normalised cross-attention
    and feed-forward layers trained for language alone: the head sat at the label prior for hundreds
    of steps, even with random negatives and a 4x learning rate."""
    return [p for n, p in model.text_encoder.encoder.named_parameters() if "crossattention" not in n]


def itc_drift(now: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """How far ITC vectors moved in phase 2: mean squared distance of the unit vectors (2 - 2 cos), the
    measure both phase-2 penalties hold, the captions' and the images'."""
    return (F.normalize(now, dim=-1) - F.normalize(then, dim=-1)).pow(2).sum(1).mean()


def vision_trunk(vision: BlipVisionModel, pixels: torch.Tensor, tail: int) -> torch.Tensor:
    """The ViT's hidden states before its last `tail` layers; `vision_tail` finishes the forward pass."""
    layers = vision.encoder.layers
    hidden = vision.embeddings(pixels)
    for layer in layers[: len(layers) - tail]:
        hidden = layer(hidden)
    return hidden


def vision_tail(vision: BlipVisionModel, hidden: torch.Tensor, tail: int) -> torch.Tensor:
    """`last_hidden_state` from `vision_trunk`'s output: the last `tail` layers and the final norm."""
    layers = vision.encoder.layers
    for layer in layers[len(layers) - tail :]:
        hidden = layer(hidden)
    return vision.post_layernorm(hidden)


def vision_tail_parameters(vision: BlipVisionModel, tail: int) -> list[torch.nn.Parameter]:
    layers = vision.encoder.layers
    return [
        *(p for layer in layers[len(layers) - tail :] for p in layer.parameters()),
        *vision.post_layernorm.parameters(),
    ]


def hard_negative_share(step: int, total: int, curriculum: float) -> float:
    """1 at and after `curriculum * total` steps, rising linearly from 0 before that."""
    ramp = curriculum * total
    return 1.0 if ramp <= 0 else min(1.0, step / ramp)


def negative_weights(logits: torch.Tensor, same: torch.Tensor, hard: float) -> torch.Tensor:
    """Sampling weights over the batch for one negative per row: a `hard` share by the ITC softmax
    (BLIP's mining), the rest uniform; a row's own class never has weight."""
    uniform = (~same).float()
    uniform = uniform / uniform.sum(1, keepdim=True)
    weights = hard * F.softmax(logits, dim=1) + (1.0 - hard) * uniform
    return weights.masked_fill(same, 0.0)


def pad_token_ids(chosen: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists right-padded to the longest: ids and attention mask."""
    width = max(len(c) for c in chosen)
    ids = torch.zeros(len(chosen), width, dtype=torch.long)
    mask = torch.zeros(len(chosen), width, dtype=torch.long)
    for row, tokens in enumerate(chosen):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return ids, mask


def token_ids(processor: BlipProcessor, texts: Sequence[str]) -> list[list[int]]:
    """Unpadded token ids, truncated at BLIP's 35 text positions, as every phase reads its texts."""
    tokenizer: Any = processor.tokenizer
    ids: list[list[int]] = tokenizer(list(texts), truncation=True, max_length=35)["input_ids"]
    return ids


class TextBank:
    """Every training caption, tokenised once, with its frozen MiniLM [CLS] state."""

    def __init__(self, model: BlipForImageTextRetrieval, processor: BlipProcessor, captions: list[list[str]]):
        self.texts: list[str] = []
        self.owner: list[int] = []
        self.offsets: list[tuple[int, int]] = []
        for index, texts in enumerate(captions):
            start = len(self.texts)
            self.texts.extend(texts)
            self.owner.extend([index] * len(texts))
            self.offsets.append((start, len(texts)))
        self.ids = token_ids(processor, self.texts)
        self.cls = encode_frozen(model, self.ids)

    def pad(self, rows: Sequence[int] | range) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_token_ids([self.ids[r] for r in rows])

    def canonical_rows(self) -> list[int]:
        """Each class's first caption, its canonical one ("a red apple"): what measures and teachers use."""
        return [start for start, _ in self.offsets]

    def draw(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One caption row per class, uniformly among that class's captions."""
        starts = torch.tensor([self.offsets[c][0] for c in classes.tolist()])
        counts = torch.tensor([self.offsets[c][1] for c in classes.tolist()])
        pick = (torch.rand(len(classes), generator=generator) * counts).long()
        return starts + pick


@torch.no_grad()
def encode_frozen(model: BlipForImageTextRetrieval, token_ids: list[list[int]]) -> torch.Tensor:
    """The text encoder's [CLS] states without the image, in chunks, on the model's device."""
    device = model.text_proj.weight.device
    states = []
    for start in range(0, len(token_ids), 512):
        ids, mask = (t.to(device) for t in pad_token_ids(token_ids[start : start + 512]))
        states.append(model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0, :])
    return torch.cat(states)


def pick_images(
    classes: EmojiClasses,
    recipe: DemoRecipe,
    rows: torch.Tensor,
    generator: torch.Generator,
    styles: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-augmented RGBA of `rows`, each from one of `styles` (default: all training styles) drawn by
    `style_weights` among those that have it, and each row's index into `styles`; the first training
    style has every class."""
    chosen = [s for s in recipe.train_styles if styles is None or s in styles]
    weights_given = recipe.style_weights or [1.0] * len(recipe.train_styles)
    weight_of = dict(zip(recipe.train_styles, weights_given, strict=True))
    if len(chosen) == 1:
        return classes.pixels[chosen[0]][rows], torch.zeros(len(rows), dtype=torch.long)
    stacked = torch.stack([classes.pixels[s][rows] for s in chosen])
    present = has_image(stacked)
    weights = torch.tensor([float(weight_of[s]) for s in chosen]).view(-1, 1) * present
    weights[0] += (weights.sum(0) == 0).float()  # the first style names the classes: it always has one
    which = torch.multinomial(weights.t(), 1, generator=generator)[:, 0]
    return stacked[which, torch.arange(len(rows))], which


def train_images(
    classes: EmojiClasses,
    recipe: DemoRecipe,
    rows: torch.Tensor,
    generator: torch.Generator,
    styles: Sequence[str] | None = None,
) -> torch.Tensor:
    """Augmented images of `rows` (see `pick_images`)."""
    rgba, _ = pick_images(classes, recipe, rows, generator, styles)
    return augment(rgba, generator, recipe.clean_fraction)


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


def caption_loss(
    captioner: BlipForConditionalGeneration,
    vision: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float,
) -> torch.Tensor:
    """`losses.lm_loss(text_decoder(...).logits, labels)`, with the LM head run on scored positions only.

    The 30k-way head on every position (prompt and padding included) costs more than the decoder
    itself here; a test checks that both give the same loss.
    """
    hidden = captioner.text_decoder.bert(
        input_ids=ids,
        attention_mask=mask,
        encoder_hidden_states=vision,
        encoder_attention_mask=torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device),
        is_decoder=True,
    ).last_hidden_state
    targets = labels[:, 1:]
    scored = targets != losses.IGNORE_INDEX
    logits = captioner.text_decoder.cls(hidden[:, :-1][scored])
    return F.cross_entropy(logits.float(), targets[scored], label_smoothing=label_smoothing)


# --------------------------------------------------------------------------------------------- phases


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
                "measured 35x slower than float32 on such a CPU (bench/demo_training.py)"
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
        return itc_drift(project(live), project(self.bank.cls[unique]))

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

    def itm_batches(self, generator: torch.Generator) -> Any:
        """Batches of distinct classes; with `itm_neighbours`, half are random anchors and half are
        classes ITC confuses them with, so that in-batch mining finds the negatives re-ranking meets."""
        recipe = self.recipe
        classes = len(self.classes.unified)
        if not recipe.itm_neighbours:
            yield from class_batches(classes, recipe.itm_batch, generator)
            return
        table = self.neighbour_table(recipe.itm_neighbours)
        while True:
            anchors = torch.randperm(classes, generator=generator)[: recipe.itm_batch // 2].tolist()
            chosen = dict.fromkeys(anchors)
            for anchor in anchors:
                pick = table[anchor, int(torch.randint(table.shape[1], (1,), generator=generator))]
                chosen.setdefault(int(pick))
            while len(chosen) < recipe.itm_batch:
                chosen.setdefault(int(torch.randint(classes, (1,), generator=generator)))
            yield torch.tensor(list(chosen)[: recipe.itm_batch])

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
                image_drift = itc_drift(model.vision_proj(vision[:, 0]), image_feat)
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
