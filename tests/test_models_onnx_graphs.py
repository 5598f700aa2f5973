"""The exported graphs compute what transformers' own BLIP modules compute, at batch sizes and text
lengths other than the ones they were traced with."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from transformers import BlipForImageTextRetrieval

from blipsearch.models import fast, onnx_graphs

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def graphs(stock_retrieval_model: BlipForImageTextRetrieval, tmp_path_factory: pytest.TempPathFactory) -> Any:
    model = copy.deepcopy(stock_retrieval_model)
    fast.use_sdpa(model)
    directory = tmp_path_factory.mktemp("onnx")
    return {
        graph: ort.InferenceSession(str(onnx_graphs.export(model, graph, directory / f"{graph}.onnx")))
        for graph in onnx_graphs.GRAPHS
    }


def test_export_restores_the_cross_attention_order(stock_retrieval_model, tmp_path: Path) -> None:
    onnx_graphs.export(stock_retrieval_model, "itm", tmp_path / "itm.onnx")
    assert fast.CROSS_ATTENTION_ORDER == "auto"


def test_text_graph_equals_stock_text_side(graphs, stock_retrieval_model, retrieval, texts) -> None:
    encoded = retrieval.tokenize(texts)
    assert encoded["input_ids"].shape[1] != 7 and len(texts) != 2, "shapes other than the traced ones"
    with torch.inference_mode():
        hidden = stock_retrieval_model.text_encoder(**encoded).last_hidden_state
        expected = F.normalize(stock_retrieval_model.text_proj(hidden[:, 0, :]), dim=-1).numpy()
    ours = graphs["text"].run(None, {k: v.numpy() for k, v in encoded.items()})[0]
    np.testing.assert_allclose(ours, expected, atol=TOLERANCE)


def test_vision_graph_equals_stock_vision_side(graphs, stock_retrieval_model, retrieval, images) -> None:
    pixels = retrieval.pixel_values(images)
    with torch.inference_mode():
        hidden = stock_retrieval_model.vision_model(pixel_values=pixels).last_hidden_state
        expected = F.normalize(stock_retrieval_model.vision_proj(hidden[:, 0, :]), dim=-1).numpy()
    vectors, tokens = graphs["vision"].run(None, {"pixel_values": pixels.numpy()})
    np.testing.assert_allclose(vectors, expected, atol=TOLERANCE)
    np.testing.assert_allclose(tokens, hidden.numpy(), atol=TOLERANCE)


def test_itm_graph_equals_stock_itm(graphs, stock_retrieval_model, retrieval, images, texts) -> None:
    pixels = retrieval.pixel_values(images[:5])
    encoded = retrieval.tokenize(texts[:5])
    with torch.inference_mode():
        tokens = stock_retrieval_model.vision_model(pixel_values=pixels).last_hidden_state
        expected = stock_retrieval_model(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            pixel_values=pixels,
            use_itm_head=True,
        ).itm_score.softmax(dim=-1)[:, 1]
    feeds = {k: v.numpy() for k, v in encoded.items()} | {"vision_tokens": tokens.numpy()}
    ours = graphs["itm"].run(None, feeds)[0]
    np.testing.assert_allclose(ours, expected.numpy(), atol=TOLERANCE)
    assert np.ptp(expected.numpy()) > 0, "scores that differ, so an order could be wrong"
