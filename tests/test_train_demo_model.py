"""The demo model's build: BLIP's text encoder on MiniLM's weights gives MiniLM's own states."""

from __future__ import annotations

import pytest
import torch
from transformers import BertModel, BertTokenizerFast

from blipsearch.train.demo_model import build_demo_models, minilm_directory

from demofake import SMALL


@pytest.fixture(scope="module")
def small_models() -> tuple:
    return build_demo_models(SMALL, seed=0)


def test_blip_text_encoder_reproduces_minilm(small_models: tuple) -> None:
    retrieval, captioner, processor = small_models
    directory = minilm_directory()
    bert = BertModel.from_pretrained(directory).eval()
    texts = ["a red apple", "a smiling cat with heart eyes", "bicycle"]
    ours = processor.tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    theirs = BertTokenizerFast.from_pretrained(directory)(texts, padding=True, return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    with torch.no_grad():
        blip = retrieval.text_encoder(**ours).last_hidden_state
        reference = bert(**theirs).last_hidden_state
    mask = ours["attention_mask"].bool()
    torch.testing.assert_close(blip[mask], reference[mask], atol=1e-4, rtol=1e-4)
    assert processor.tokenizer.convert_tokens_to_ids("[DEC]") == captioner.config.text_config.bos_token_id
    decoder = captioner.text_decoder
    assert (
        decoder.cls.predictions.decoder.weight.data_ptr()
        == decoder.bert.embeddings.word_embeddings.weight.data_ptr()
    )
    assert len(decoder.bert.encoder.layer) == SMALL.decoder_layers
    assert retrieval.config.vision_config.initializer_range == pytest.approx(0.02)
