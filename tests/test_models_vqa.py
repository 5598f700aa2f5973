from __future__ import annotations

import pytest
import torch

from blipsearch.errors import FeatureUnavailableError, InvalidInputError
from blipsearch.models.registry import ModelSet


def test_answer_equals_stock_generate(vqa, images) -> None:
    """BLIP's VQA answers greedily with at most 10 new tokens: written out, not read from the module."""
    question = "what colour is the strap?"
    inputs = vqa.processor(images=images[0].convert("RGB"), text=question, return_tensors="pt")
    with torch.no_grad():
        expected = vqa.model.generate(**inputs, max_new_tokens=10, do_sample=False, num_beams=1)
    assert len(expected[0]) > 2, "the tiny model must answer at length for the comparison to mean much"
    assert vqa.answer_ids([images[0]], [question]) == [expected[0].tolist()]
    decoded = vqa.processor.tokenizer.decode(expected[0], skip_special_tokens=True)
    assert vqa.answer(images[0], question) == " ".join(decoded.split())


def test_empty_question_is_rejected(vqa, images) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        vqa.answer(images[0], "   ")


def test_vqa_without_a_model_is_reported_unavailable(cpu_settings) -> None:
    models = ModelSet(cpu_settings.model_copy(update={"vqa_model": None}))
    assert models.vqa_available is False
    with pytest.raises(FeatureUnavailableError, match="BLIPSEARCH_VQA_MODEL"):
        _ = models.vqa


def test_model_set_loads_each_model_once(tiny_checkpoints, cpu_settings) -> None:
    settings = cpu_settings.model_copy(
        update={
            "retrieval_model": str(tiny_checkpoints.retrieval),
            "caption_model": str(tiny_checkpoints.caption),
            "vqa_model": str(tiny_checkpoints.vqa),
        }
    )
    models = ModelSet(settings)
    assert models.vqa_available
    assert models.retrieval is models.retrieval
    assert models.captioner is models.captioner
    assert models.vqa is models.vqa
    assert len({models.retrieval.fingerprint, models.captioner.fingerprint, models.vqa.fingerprint}) == 3
