"""Every fast path computes what transformers' own BLIP modules compute, within stated tolerances."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from transformers import BlipForImageTextRetrieval

from blipsearch.errors import ConfigError, UnsupportedTransformersError
from blipsearch.models import fast
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings

TOLERANCE = 1e-5


@pytest.fixture
def fast_model(stock_retrieval_model: BlipForImageTextRetrieval) -> BlipForImageTextRetrieval:
    model = copy.deepcopy(stock_retrieval_model)
    assert fast.use_sdpa(model) > 0
    return model


def _tokens(retrieval: RetrievalModel, texts: list[str]) -> dict[str, torch.Tensor]:
    return retrieval.tokenizer(texts, padding="longest", return_tensors="pt", return_token_type_ids=False)


def test_sdpa_modules_replace_every_eager_attention(fast_model: BlipForImageTextRetrieval) -> None:
    kinds = {type(module).__name__ for module in fast_model.modules() if "Attention" in type(module).__name__}
    assert "BlipAttention" not in kinds and "BlipTextSelfAttention" not in kinds
    assert {"SdpaVisionAttention", "SdpaTextSelfAttention"} <= kinds


def test_sdpa_vision_encoder_equals_eager(stock_retrieval_model, fast_model, retrieval, images) -> None:
    pixels = retrieval.pixel_values(images)
    with torch.inference_mode():
        expected = stock_retrieval_model.vision_model(pixel_values=pixels).last_hidden_state
        ours = fast_model.vision_model(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(ours, expected, atol=TOLERANCE, rtol=0)
    assert expected.std() > 0.1


def test_sdpa_text_self_attention_with_padding_equals_eager(
    stock_retrieval_model, fast_model, retrieval, texts
) -> None:
    encoded = _tokens(retrieval, texts)
    assert (encoded["attention_mask"] == 0).any(), "the batch must contain padding to test the mask"
    with torch.inference_mode():
        expected = stock_retrieval_model.text_encoder(**encoded).last_hidden_state
        ours = fast_model.text_encoder(**encoded).last_hidden_state
    real = encoded["attention_mask"].bool()
    torch.testing.assert_close(ours[real], expected[real], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("order", ["factorized", "projected"])
def test_cross_attention_in_either_order_equals_eager(
    stock_retrieval_model, fast_model, retrieval, images, texts, order, monkeypatch
) -> None:
    monkeypatch.setattr(fast, "CROSS_ATTENTION_ORDER", order)
    vision = retrieval.vision_tokens(images)
    encoded = _tokens(retrieval, texts[: len(images)])

    def itm(model: BlipForImageTextRetrieval) -> torch.Tensor:
        mask = torch.ones(vision.shape[:-1], dtype=torch.long)
        hidden = model.text_encoder(
            **encoded, encoder_hidden_states=vision, encoder_attention_mask=mask
        ).last_hidden_state
        return model.itm_head(hidden[:, 0, :]).softmax(dim=-1)[:, 1]

    with torch.inference_mode():
        expected, ours = itm(stock_retrieval_model), itm(fast_model)
    torch.testing.assert_close(ours, expected, atol=TOLERANCE, rtol=0)
    assert float(expected.max() - expected.min()) > 1e-3


def test_factorized_order_is_chosen_only_where_it_is_cheaper() -> None:
    # BLIP-base: 577 vision tokens, 64-d heads.
    assert fast.factorized_is_cheaper(8, 577, 64)
    assert fast.factorized_is_cheaper(35, 577, 64)
    assert not fast.factorized_is_cheaper(60, 577, 64)
    # A narrow model with few vision tokens gains nothing.
    assert not fast.factorized_is_cheaper(8, 17, 8)


def test_training_mode_uses_the_stock_attention(stock_retrieval_model, fast_model, retrieval, texts) -> None:
    encoded = _tokens(retrieval, texts[:2])
    fast_model.train()
    try:
        torch.manual_seed(0)
        ours = fast_model.text_encoder(**encoded).last_hidden_state
        stock_retrieval_model.train()
        torch.manual_seed(0)
        expected = stock_retrieval_model.text_encoder(**encoded).last_hidden_state
    finally:
        fast_model.eval()
        stock_retrieval_model.eval()
    torch.testing.assert_close(ours, expected)
    assert ours.requires_grad


def test_int8_quantizes_linear_layers_but_keeps_factorized_weights_float(stock_retrieval_model) -> None:
    model = copy.deepcopy(stock_retrieval_model)
    count = fast.quantize_int8(model, "all")
    assert count > 0 and fast.is_quantized(model)
    for name, module in model.named_modules():
        if name.endswith(("crossattention.self.key", "crossattention.self.value")):
            assert isinstance(module, torch.nn.Linear) and module.weight.dtype == torch.float32
        elif name.endswith(("attention.self.query", "self_attn.qkv")):
            assert not isinstance(module, torch.nn.Linear)
    assert not fast.is_quantized(stock_retrieval_model)


def test_int8_vision_leaves_the_text_side_float(stock_retrieval_model) -> None:
    model = copy.deepcopy(stock_retrieval_model)
    fast.quantize_int8(model, "vision")
    for name, module in model.named_modules():
        if name.endswith("self_attn.qkv"):
            assert not isinstance(module, torch.nn.Linear)
        elif name.startswith("text_encoder.") and name.endswith(".dense"):
            assert isinstance(module, torch.nn.Linear)


@pytest.mark.parametrize(("setting", "precision"), [("all", "int8"), ("vision", "int8-vision")])
def test_int8_retrieval_model_stays_close_to_float32(
    tiny_checkpoints, cpu_settings, retrieval, images, texts, setting, precision
) -> None:
    int8 = RetrievalModel.load(
        str(tiny_checkpoints.retrieval), cpu_settings.model_copy(update={"quantize": setting})
    )
    assert int8.precision == precision and retrieval.precision == "float32"
    ours = int8.embed_images(images).vectors @ int8.embed_texts(texts).T
    reference = retrieval.embed_images(images).vectors @ retrieval.embed_texts(texts).T
    assert 0 < np.abs(ours - reference).max() < 0.05
    pairs = texts[: len(images)]
    itm = int8.itm_scores(pairs, images)
    assert np.all(np.isfinite(itm)) and np.abs(itm - retrieval.itm_scores(pairs, images)).max() < 0.05


def test_quantize_setting_resolves_by_device_and_width(stock_retrieval_model) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fast.resolve_quantize("auto", stock_retrieval_model, cpu, torch.float32) is None, "tiny: overhead"
    wide = copy.deepcopy(stock_retrieval_model.config)
    wide.vision_config.hidden_size = fast.INT8_MIN_HIDDEN
    holder = torch.nn.Module()
    holder.config = wide  # type: ignore[assignment]
    assert fast.resolve_quantize("auto", holder, cpu, torch.float32) == "vision"
    assert fast.resolve_quantize("auto", holder, cpu, torch.bfloat16) is None
    assert fast.resolve_quantize("auto", holder, cuda, torch.float32) is None
    assert fast.resolve_quantize("none", holder, cpu, torch.float32) is None
    assert fast.resolve_quantize("all", holder, cpu, torch.float32) == "all"
    with pytest.raises(ConfigError, match="CPU only"):
        fast.resolve_quantize("vision", holder, cuda, torch.bfloat16)
    with pytest.raises(ConfigError, match="float32 model"):
        fast.resolve_quantize("all", holder, cpu, torch.bfloat16)


def test_eager_attention_setting_leaves_transformers_modules(tiny_checkpoints, cpu_settings) -> None:
    eager = RetrievalModel.load(
        str(tiny_checkpoints.retrieval), Settings(**{**cpu_settings.model_dump(), "attention": "eager"})
    )
    kinds = {type(module).__name__ for module in eager.model.modules()}
    assert "BlipAttention" in kinds and "SdpaVisionAttention" not in kinds


def test_the_installed_transformers_is_in_the_tested_range_that_pyproject_pins() -> None:
    fast.check_transformers_version()
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    low, high = fast.TESTED_TRANSFORMERS
    assert f"transformers>={low},<{high}" in pyproject["project"]["dependencies"]


@pytest.mark.parametrize("version", ["5.26.0", "5.24.1", "6.0.0.dev0", "unknown"])
def test_an_untested_transformers_release_is_refused_before_any_swap(
    stock_retrieval_model, version, monkeypatch
) -> None:
    model = copy.deepcopy(stock_retrieval_model)
    monkeypatch.setattr(transformers, "__version__", version)
    with pytest.raises(UnsupportedTransformersError, match=rf"transformers {version} is installed") as err:
        fast.use_sdpa(model)
    assert ">=5.25,<5.26" in str(err.value) and "attention=eager" in str(err.value)
    assert not any(isinstance(m, fast.SdpaVisionAttention) for m in model.modules())


@pytest.mark.parametrize(("stock", "attribute"), [("BlipAttention", "qkv"), ("BlipTextSelfAttention", "key")])
def test_an_attention_module_lacking_what_the_swap_reads_is_refused(
    stock_retrieval_model, stock, attribute
) -> None:
    model = copy.deepcopy(stock_retrieval_model)
    changed = next(module for module in model.modules() if type(module).__name__ == stock)
    delattr(changed, attribute)
    with pytest.raises(UnsupportedTransformersError, match=rf"{stock} lacks {attribute}\b.*attention=eager"):
        fast.use_sdpa(model)
    swapped = (fast.SdpaVisionAttention, fast.SdpaTextSelfAttention)
    assert not any(isinstance(module, swapped) for module in model.modules()), "refused before any swap"


def test_eager_attention_loads_on_an_untested_transformers(
    tiny_checkpoints, cpu_settings, monkeypatch
) -> None:
    monkeypatch.setattr(transformers, "__version__", "9.0.0")
    settings = Settings(**cpu_settings.model_dump())
    with pytest.raises(UnsupportedTransformersError):
        RetrievalModel.load(str(tiny_checkpoints.retrieval), settings)
    eager = RetrievalModel.load(
        str(tiny_checkpoints.retrieval), settings.model_copy(update={"attention": "eager"})
    )
    assert any(type(module).__name__ == "BlipAttention" for module in eager.model.modules())
