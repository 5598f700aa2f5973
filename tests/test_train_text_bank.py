"""The caption bank: rows per class, draws within a class, cached [CLS] states equal to the live encoder."""

from __future__ import annotations

import torch

from blipsearch.train.demo_model import build_demo_models
from blipsearch.train.text_bank import TextBank, pad_token_ids

from demofake import SMALL


def test_pad_token_ids_right_pads_and_masks() -> None:
    ids, mask = pad_token_ids([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_bank_rows_draws_and_cached_states() -> None:
    retrieval, _, processor = build_demo_models(SMALL, seed=0)
    captions = [["a red apple", "apple emoji"], ["a grinning face"], ["a dog", "dog emoji", "a puppy"]]
    bank = TextBank(retrieval.eval(), processor, captions)
    assert bank.texts == [text for texts in captions for text in texts]
    assert bank.owner == [0, 0, 1, 2, 2, 2] and bank.canonical_rows() == [0, 2, 3]
    classes = torch.tensor([2, 0, 1, 2] * 25)
    drawn = bank.draw(classes, torch.Generator().manual_seed(0))
    assert [bank.owner[row] for row in drawn.tolist()] == classes.tolist()
    assert set(drawn[classes == 2].tolist()) == {3, 4, 5}
    with torch.no_grad():
        for row in (0, len(bank.texts) - 1):
            ids, mask = bank.pad([row])
            live = retrieval.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
            torch.testing.assert_close(live[0], bank.cls[row], atol=1e-5, rtol=1e-5)
