"""Batches of distinct classes, neighbour batches, and ITM's negatives from random to mined."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from blipsearch.train.batches import class_batches, hard_negative_share, negative_weights, neighbour_batches


def test_class_batches_never_repeat_a_class_within_a_pass_and_follow_the_seed() -> None:
    batches = class_batches(10, 3, torch.Generator().manual_seed(0))
    first_pass = [next(batches) for _ in range(3)]  # 3 batches of 3 from one permutation of 10
    drawn = torch.cat(first_pass).tolist()
    assert len(drawn) == len(set(drawn)) == 9
    again = class_batches(10, 3, torch.Generator().manual_seed(0))
    assert all(torch.equal(batch, next(again)) for batch in first_pass)


def test_neighbour_batches_pair_anchors_with_their_neighbours() -> None:
    classes = 12
    table = torch.tensor([[(c + 1) % classes] for c in range(classes)])  # each class's one neighbour
    batches = neighbour_batches(table, classes, 6, torch.Generator().manual_seed(0))
    for _ in range(20):
        batch = next(batches).tolist()
        assert len(batch) == len(set(batch)) == 6
        anchors = batch[:3]
        assert all((anchor + 1) % classes in batch for anchor in anchors)


def test_itm_negatives_move_from_random_to_mined_and_never_hit_the_positive() -> None:
    assert [hard_negative_share(s, 100, 0.3) for s in (0, 15, 30, 90)] == [0.0, 0.5, 1.0, 1.0]
    assert hard_negative_share(1, 100, 0.0) == 1.0
    classes = torch.tensor([0, 1, 2, 2])
    same = classes.view(-1, 1) == classes.view(1, -1)
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) * 5
    for hard in (0.0, 0.4, 1.0):
        weights = negative_weights(logits.masked_fill(same, -torch.inf), same, hard)
        assert torch.all(weights[same] == 0) and torch.allclose(weights.sum(1), torch.ones(4))
    uniform = negative_weights(logits.masked_fill(same, -torch.inf), same, 0.0)
    assert torch.allclose(uniform[0], torch.tensor([0.0, 1 / 3, 1 / 3, 1 / 3]))
    mined = negative_weights(logits.masked_fill(same, -torch.inf), same, 1.0)
    assert torch.allclose(mined, F.softmax(logits.masked_fill(same, -torch.inf), dim=1))
