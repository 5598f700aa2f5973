"""BLIP's objectives as pure functions: formulas, masking, and that each one can be minimised."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blipsearch.train import losses


def _features(count: int = 8, width: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, width, generator=generator), torch.randn(count, width, generator=generator)


def _minimise(
    loss_of: object, parameters: list[torch.Tensor], steps: int = 15, lr: float = 0.05
) -> list[float]:
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_of()  # type: ignore[operator]
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history


def test_itc_loss_decreases_with_momentum_targets():
    torch.manual_seed(0)
    images, texts = _features()
    image_proj, text_proj = nn.Linear(16, 8), nn.Linear(16, 8)
    image_proj_m, text_proj_m = losses.make_momentum_model(image_proj), losses.make_momentum_model(text_proj)
    temp = nn.Parameter(torch.tensor(0.07))

    def loss_of() -> torch.Tensor:
        loss = losses.itc_loss(
            F.normalize(image_proj(images), dim=-1),
            F.normalize(text_proj(texts), dim=-1),
            F.normalize(image_proj_m(images), dim=-1),
            F.normalize(text_proj_m(texts), dim=-1),
            temp,
            alpha=0.4,
        )
        return loss

    history = _minimise(loss_of, [*image_proj.parameters(), *text_proj.parameters(), temp])
    assert history[-1] < history[0]


def test_itc_without_distillation_is_symmetric_cross_entropy():
    image, text = (F.normalize(x, dim=-1) for x in _features(6, 8, seed=3))
    temp = 0.05
    sims = image @ text.t() / temp
    target = torch.arange(6)
    expected = (F.cross_entropy(sims, target) + F.cross_entropy(sims.t(), target)) / 2
    torch.testing.assert_close(losses.itc_loss(image, text, image, text, temp, alpha=0.0), expected)


def test_itc_temperature_is_clamped_and_duplicate_images_share_targets():
    image, text = (F.normalize(x, dim=-1) for x in _features(4, 8, seed=4))
    at_floor = losses.itc_loss(image, text, image, text, 1e-6, alpha=0.0)
    torch.testing.assert_close(
        at_floor, losses.itc_loss(image, text, image, text, losses.TEMP_MIN, alpha=0.0)
    )
    temp = torch.tensor(2.0)
    losses.clamp_temperature(temp)
    assert temp.item() == losses.TEMP_MAX
    ids = torch.tensor([0, 0, 1, 2])
    sims = image @ text.t() / 0.1
    positives = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    expected = (
        -(F.log_softmax(sims, 1) * positives).sum(1).mean()
        - (F.log_softmax(sims.t(), 1) * positives).sum(1).mean()
    ) / 2
    torch.testing.assert_close(losses.itc_loss(image, text, image, text, 0.1, 0.0, image_ids=ids), expected)


def test_hard_negatives_are_never_positives():
    generator = torch.Generator().manual_seed(0)
    sims = torch.randn(6, 6) + torch.eye(6) * 20  # the positive dominates the softmax
    for _ in range(200):
        text_for_image, image_for_text = losses.sample_hard_negatives(sims, sims.t(), generator)
        assert (text_for_image != torch.arange(6)).all()
        assert (image_for_text != torch.arange(6)).all()


def test_hard_negatives_skip_every_caption_of_the_same_image():
    generator = torch.Generator().manual_seed(1)
    ids = torch.tensor([0, 0, 1, 1, 1, 2])
    sims = torch.randn(6, 6) + (ids.view(-1, 1) == ids.view(1, -1)).float() * 10
    for _ in range(200):
        text_for_image, image_for_text = losses.sample_hard_negatives(sims, sims.t(), generator, ids)
        assert (ids[text_for_image] != ids).all()
        assert (ids[image_for_text] != ids).all()
    with pytest.raises(ValueError, match="same image"):
        losses.sample_hard_negatives(sims[:2, :2], sims[:2, :2], generator, torch.tensor([3, 3]))


def test_hard_negatives_follow_the_similarity_distribution():
    generator = torch.Generator().manual_seed(2)
    sims = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    picks = torch.stack([losses.sample_hard_negatives(sims, sims.t(), generator)[0][0] for _ in range(400)])
    share = (picks == 1).float().mean().item()  # softmax([3, 0]) gives text 1 about 95 %
    assert 0.88 < share < 0.99


def test_itm_loss_decreases():
    torch.manual_seed(0)
    images, texts = _features()
    head = nn.Linear(32, 2)
    negatives = torch.roll(torch.arange(8), 1)
    pairs = torch.cat([torch.cat([images, texts], 1), torch.cat([images, texts[negatives]], 1)])
    labels = torch.cat([torch.ones(8, dtype=torch.long), torch.zeros(8, dtype=torch.long)])
    history = _minimise(lambda: losses.itm_loss(head(pairs), labels), list(head.parameters()))
    assert history[-1] < history[0]


def test_lm_loss_matches_torch_label_smoothing_and_ignores_the_prompt():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=generator)
    input_ids = torch.randint(1, 11, (3, 7), generator=generator)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[2, 5:] = 0
    labels = losses.lm_labels(input_ids, mask, prompt_length=3)
    assert (labels[:, :3] == losses.IGNORE_INDEX).all() and (labels[2, 5:] == losses.IGNORE_INDEX).all()
    expected = F.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100, label_smoothing=0.1
    )
    torch.testing.assert_close(losses.lm_loss(logits, labels), expected)
    # positions 0-1 predict prompt tokens 1-2: whatever they say, the loss does not move
    changed = logits.clone()
    changed[:, :2] = torch.randn(3, 2, 11, generator=generator) * 10
    torch.testing.assert_close(losses.lm_loss(changed, labels), expected)
    # ... while the caption's positions do count
    changed[:, 4, 0] += 5.0
    assert not torch.allclose(losses.lm_loss(changed, labels), expected)


def test_lm_loss_decreases():
    torch.manual_seed(0)
    tokens = torch.randint(1, 20, (8, 6))
    model = nn.Sequential(nn.Embedding(20, 16), nn.Linear(16, 20))
    labels = losses.lm_labels(tokens, torch.ones_like(tokens), prompt_length=2)
    history = _minimise(lambda: losses.lm_loss(model(tokens), labels), list(model.parameters()))
    assert history[-1] < history[0]


def test_momentum_update_moves_by_one_minus_m_of_the_difference():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    model_m = losses.make_momentum_model(model)
    assert all(not p.requires_grad for p in model_m.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model_m.parameters(), strict=True))
    assert all(
        a.data_ptr() != b.data_ptr() for a, b in zip(model.parameters(), model_m.parameters(), strict=True)
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    before = [p.detach().clone() for p in model_m.parameters()]
    m = 0.9
    losses.momentum_update(model, model_m, m)
    for old, new, online in zip(before, model_m.parameters(), model.parameters(), strict=True):
        # exact up to float32 rounding of the fused multiply-add
        torch.testing.assert_close(new - old, (1 - m) * (online.detach() - old), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(new, old * m + online.detach() * (1 - m), rtol=0, atol=1e-6)


def test_served_rank_loss_asks_only_for_the_order_the_service_serves() -> None:
    itc = torch.tensor([0.30, 0.60, 0.10, 0.40, 0.28, 0.61])  # 2 anchors x (positive, 2 negatives)
    neutral = torch.zeros(6, 2)
    odds = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0], requires_grad=True)
    loss = losses.served_rank_loss(torch.stack([neutral[:, 0], odds], 1), itc, 10.0, negatives=2)
    loss.backward()
    assert odds.grad is not None
    # ITM is pushed up on the positives and down on the negatives, hardest where ITC orders them wrong
    assert (odds.grad[:2] < 0).all() and (odds.grad[2:] > 0).all()
    assert odds.grad[5] > odds.grad[4] > 3 * odds.grad[2]  # ITC wrong (0.61 > 0.60), nearly wrong, right
    # a large enough weight on ITC, where ITC orders every pair right, leaves nothing to learn
    sure = torch.tensor([0.9, 0.9, 0.1, 0.1, 0.1, 0.1])
    assert losses.served_rank_loss(torch.zeros(6, 2), sure, 100.0, negatives=2) < 1e-20
    # and ITM log-odds that order the pairs right lower the loss against neutral ITM
    right = torch.tensor([[0.0, 3.0], [0.0, 3.0], [0.0, -3.0], [0.0, -3.0], [0.0, -3.0], [0.0, -3.0]])
    assert losses.served_rank_loss(right, itc, 10.0, 2) < losses.served_rank_loss(neutral, itc, 10.0, 2)


def test_itc_drift_is_the_mean_of_two_minus_two_cosines():
    then = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    assert losses.itc_drift(then * 5, then) == 0.0  # length does not count, only direction
    turned = torch.tensor([[0.0, 1.0], [0.0, -1.0]])  # a right angle (2 - 0) and a reversal (2 + 2)
    assert losses.itc_drift(turned, then) == pytest.approx((2.0 + 4.0) / 2)
