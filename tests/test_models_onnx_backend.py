"""`inference_runtime`: ONNX Runtime and OpenVINO give what torch gives, export once per checkpoint,
and refuse what they cannot run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from blipsearch.errors import ConfigError
from blipsearch.models import onnx_backend
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings

TOLERANCE = 1e-4
RUNTIMES = ("onnxruntime", "openvino")


@pytest.fixture(scope="module", params=RUNTIMES)
def backed(request, tiny_checkpoints, cpu_settings: Settings, tmp_path_factory) -> RetrievalModel:
    """The runtime on all three graphs, not only the adopted ones (`inference_runtime_graphs`): a
    model or CPU where it wins at the ViT or ITM too can hand them over without a new code path."""
    settings = cpu_settings.model_copy(
        update={
            "inference_runtime": request.param,
            "inference_runtime_graphs": ["itm", "text", "vision"],
            "data_dir": tmp_path_factory.mktemp(request.param),
        }
    )
    return RetrievalModel.load(str(tiny_checkpoints.retrieval), settings)


def test_the_runtime_runs_the_graphs_it_was_given(backed: RetrievalModel) -> None:
    assert backed.backend is not None
    assert backed.backend.graphs == {"text", "vision", "itm"}


def test_by_default_a_runtime_takes_its_adopted_graphs_only(tiny_checkpoints, cpu_settings, tmp_path) -> None:
    settings = cpu_settings.model_copy(update={"inference_runtime": "openvino", "data_dir": tmp_path})
    model = RetrievalModel.load(str(tiny_checkpoints.retrieval), settings)
    assert model.backend is not None and model.backend.graphs == onnx_backend.ADOPTED["openvino"]
    assert "text" in onnx_backend.ADOPTED["openvino"]


def test_text_vectors_equal_torch(backed: RetrievalModel, retrieval: RetrievalModel, texts) -> None:
    np.testing.assert_allclose(backed.embed_texts(texts), retrieval.embed_texts(texts), atol=TOLERANCE)


def test_image_vectors_and_vision_tokens_equal_torch(backed, retrieval: RetrievalModel, images) -> None:
    ours = backed.embed_images(images, return_vision_tokens=True)
    expected = retrieval.embed_images(images, return_vision_tokens=True)
    np.testing.assert_allclose(ours.vectors, expected.vectors, atol=TOLERANCE)
    assert ours.vision_tokens is not None and expected.vision_tokens is not None
    np.testing.assert_allclose(ours.vision_tokens.numpy(), expected.vision_tokens.numpy(), atol=TOLERANCE)


def test_itm_on_cached_tokens_and_pairwise_equals_torch(
    backed, retrieval: RetrievalModel, images, texts
) -> None:
    tokens = retrieval.vision_tokens(images)
    query = texts[0]
    expected = retrieval.itm_scores(query, vision_tokens=tokens)
    np.testing.assert_allclose(backed.itm_scores(query, vision_tokens=tokens), expected, atol=TOLERANCE)
    assert np.ptp(expected) > 0, "scores that differ, so a wrong order would show"
    pairs = texts[: len(images)]
    np.testing.assert_allclose(
        backed.itm_scores(pairs, images), retrieval.itm_scores(pairs, images), atol=TOLERANCE
    )


def test_graphs_are_exported_once_per_checkpoint(tiny_checkpoints, cpu_settings, tmp_path: Path) -> None:
    settings = cpu_settings.model_copy(update={"inference_runtime": "onnxruntime", "data_dir": tmp_path})
    RetrievalModel.load(str(tiny_checkpoints.retrieval), settings)
    files = sorted((tmp_path / "onnx").rglob("*"))
    graphs = [path for path in files if path.suffix == ".onnx"]
    assert len(graphs) == len(onnx_backend.ADOPTED["onnxruntime"])
    assert not [path for path in files if path.name.endswith(".part")]
    for path in graphs:
        os.utime(path, ns=(1, 1))
    again = RetrievalModel.load(str(tiny_checkpoints.retrieval), settings)
    assert all(path.stat().st_mtime_ns == 1 for path in graphs), "reused, not exported again"
    assert again.embed_texts(["a red apple"]).shape == (1, again.embedding_dim)


def test_bfloat16_is_refused_in_words(tiny_checkpoints, cpu_settings, tmp_path: Path) -> None:
    settings = cpu_settings.model_copy(
        update={"inference_runtime": "openvino", "dtype": "bfloat16", "data_dir": tmp_path}
    )
    with pytest.raises(ConfigError, match="float32 graphs on the CPU") as raised:
        RetrievalModel.load(str(tiny_checkpoints.retrieval), settings)
    assert "/" not in str(raised.value) and "Traceback" not in str(raised.value)


def test_the_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLIPSEARCH_INFERENCE_RUNTIME", "openvino")
    assert Settings().inference_runtime == "openvino"
    assert Settings(inference_runtime="torch").inference_runtime == "torch"
    with pytest.raises(ValidationError):
        Settings(inference_runtime="tensorrt")  # type: ignore[arg-type]
