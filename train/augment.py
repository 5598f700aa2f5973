"""The images a training step sees: one drawing style per class, drawn by weight, then augmented.

Augmentation (scale, position, rotation, background, light colour jitter, blur, posterisation) is
done on tensors for the whole batch, since PIL per image would dominate a step. No hue change and
no flips: colour and direction are part of emoji names. A share of images stays clean, flattened
on white exactly as the index will see them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from blipsearch.train.demo_settings import DemoRecipe
from blipsearch.train.emoji_classes import EmojiClasses, flatten_on_white, has_image


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
