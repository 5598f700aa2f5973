"""The demo phases' partial passes: ViT trunk then tail, and the LM loss on scored positions only."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from blipsearch.train import losses
from blipsearch.train.demo_layers import caption_loss, vision_tail, vision_trunk
from blipsearch.train.demo_model import build_demo_models

from demofake import SMALL


@pytest.fixture(scope="module")
def small_models() -> tuple:
    return build_demo_models(SMALL, seed=0)


def test_caption_loss_on_scored_positions_equals_the_full_lm_loss(small_models: tuple) -> None:
    _, captioner, processor = small_models
    captioner.eval()
    encoded = processor.tokenizer(
        ["a picture of a red apple", "a picture of a dog"],
        padding=True,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    ids[:, 0] = captioner.config.text_config.bos_token_id
    labels = losses.lm_labels(ids, mask, prompt_length=4)
    vision = torch.randn(2, 5, SMALL.vision_width)
    with torch.no_grad():
        fast = caption_loss(captioner, vision, ids, mask, labels, 0.1)
        logits = captioner.text_decoder(
            input_ids=ids,
            attention_mask=mask,
            encoder_hidden_states=vision,
            encoder_attention_mask=torch.ones(2, 5, dtype=torch.long),
        ).logits
        full = losses.lm_loss(logits, labels, 0.1)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_vision_trunk_then_tail_is_the_whole_vit() -> None:
    arch = replace(SMALL, vision_layers=3)
    retrieval, _, _ = build_demo_models(arch, seed=1)
    vision = retrieval.vision_model.eval()
    pixels = torch.randn(2, 3, arch.image_size, arch.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = vision(pixel_values=pixels).last_hidden_state
        for tail in (1, 2, 3):
            split = vision_tail(vision, vision_trunk(vision, pixels, tail), tail)
            torch.testing.assert_close(split, whole, atol=1e-6, rtol=1e-6)
