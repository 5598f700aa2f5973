from __future__ import annotations

import pytest
import torch

from blipsearch.errors import InvalidInputError
from blipsearch.models.captioner import CaptionOptions

# What each strategy means in transformers' own terms, written out here rather than taken from
# CaptionOptions: BLIP's paper decodes by beam search with 3 beams or nucleus sampling at p = 0.9.
STOCK_DECODING = {
    "greedy": {"do_sample": False, "num_beams": 1},
    "beam": {"do_sample": False, "num_beams": 3},
    "nucleus": {"do_sample": True, "top_p": 0.9, "top_k": 0, "num_beams": 1},
}


def _stock_generate(captioner, images, prompt, strategy: str, seed: int) -> list[list[int]]:
    kwargs = {"images": [i.convert("RGB") for i in images], "return_tensors": "pt"}
    if prompt is not None:
        kwargs["text"] = [prompt] * len(images)
    inputs = captioner.processor(**kwargs)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = captioner.model.generate(
            **inputs, max_new_tokens=8, min_new_tokens=2, repetition_penalty=1.0, **STOCK_DECODING[strategy]
        )
    return [row.tolist() for row in out]


@pytest.mark.parametrize("strategy", ["greedy", "beam", "nucleus"])
@pytest.mark.parametrize("prompt", [None, "a picture of"])
def test_caption_ids_equal_stock_generate(captioner, images, strategy, prompt) -> None:
    batch = images[:2]  # one caption batch, so the sampling seed lines up with the stock call
    options = CaptionOptions(strategy=strategy, max_new_tokens=8, min_new_tokens=2, seed=7)
    expected = _stock_generate(captioner, batch, prompt, strategy, seed=7)
    assert captioner.caption_ids(batch, prompt, options) == expected


def test_the_strategies_decode_differently(captioner, images) -> None:
    """Otherwise the stock comparison above could not tell one strategy's settings from another's."""
    batch = images[:2]
    decoded = {
        strategy: tuple(map(tuple, _stock_generate(captioner, batch, None, strategy, seed=7)))
        for strategy in STOCK_DECODING
    }
    assert len(set(decoded.values())) == len(STOCK_DECODING), decoded


def test_captions_are_text_without_the_prompt(captioner, images) -> None:
    prompt = "a picture of"
    options = CaptionOptions(strategy="greedy", max_new_tokens=6, min_new_tokens=3)
    ids = captioner.caption_ids(images, prompt, options)
    captions = captioner.caption(images, prompt, options)
    assert len(captions) == len(images)
    for row, caption in zip(ids, captions, strict=True):
        full = captioner.processor.tokenizer.decode(row, skip_special_tokens=True)
        assert full.startswith(prompt)
        assert caption == " ".join(full[len(prompt) :].split())
        assert caption.strip()


def test_nucleus_sampling_is_reproducible_by_seed(captioner, images) -> None:
    first = captioner.caption(images[:3], options=CaptionOptions(strategy="nucleus", seed=1))
    again = captioner.caption(images[:3], options=CaptionOptions(strategy="nucleus", seed=1))
    other = captioner.caption(images[:3], options=CaptionOptions(strategy="nucleus", seed=2))
    assert first == again
    assert first != other


def test_min_and_max_new_tokens_are_honoured(captioner, images) -> None:
    options = CaptionOptions(strategy="greedy", max_new_tokens=4, min_new_tokens=4)
    for row in captioner.caption_ids(images[:2], None, options):
        assert len(row) == 1 + 4  # the [DEC] start token plus exactly four generated tokens


def test_unknown_strategy_is_rejected(captioner, images) -> None:
    with pytest.raises(InvalidInputError, match="strategy"):
        captioner.caption(images[:1], options=CaptionOptions(strategy="top-k"))  # type: ignore[arg-type]


def test_configured_prompt_applies_when_a_call_gives_none(captioner, images, tiny_checkpoints) -> None:
    from blipsearch.models.captioner import Captioner
    from blipsearch.settings import Settings

    prompted = Captioner.load(
        str(tiny_checkpoints.caption), Settings(device="cpu", caption_prompt="a picture of")
    )
    assert prompted.default_prompt == "a picture of"
    assert prompted.caption(images[:2]) == captioner.caption(images[:2], prompt="a picture of")
    assert prompted.caption(images[:2], prompt="") == captioner.caption(images[:2])
    assert Settings(caption_prompt="  ").caption_prompt is None


def test_configured_minimum_length_applies_when_a_call_gives_no_options(captioner, images, tiny_checkpoints):
    from blipsearch.models.captioner import Captioner
    from blipsearch.settings import Settings

    assert captioner.default_options == CaptionOptions(), "BLIP's paper defaults unless configured"
    short = Captioner.load(str(tiny_checkpoints.caption), Settings(device="cpu", caption_min_tokens=1))
    assert short.default_options.min_new_tokens == 1
    expected = captioner.caption(images[:3], options=CaptionOptions(min_new_tokens=1))
    assert short.caption(images[:3]) == expected
    assert short.caption(images[:3], options=CaptionOptions()) == captioner.caption(images[:3])
