from __future__ import annotations

import torch
from transformers import BlipForImageTextRetrieval

from blipsearch.models.fingerprint import model_fingerprint
from blipsearch.models.loading import load_checkpoint
from blipsearch.models.tiny import make_tiny


def _load(path, dtype: str = "float32"):
    return load_checkpoint(
        BlipForImageTextRetrieval, str(path), role="retrieval", device="cpu", dtype=dtype, offline=True
    )


def test_fingerprint_is_stable_across_loads_and_copies(tiny_checkpoints, tmp_path) -> None:
    again = make_tiny(tmp_path / "copy", seed=0)
    assert _load(tiny_checkpoints.retrieval).fingerprint == _load(again.retrieval).fingerprint


def test_fingerprint_ignores_runtime_precision(tiny_checkpoints) -> None:
    assert (
        _load(tiny_checkpoints.retrieval).fingerprint
        == _load(tiny_checkpoints.retrieval, "bfloat16").fingerprint
    )


def test_fingerprint_changes_with_seed(tiny_checkpoints, tmp_path) -> None:
    other = make_tiny(tmp_path / "other", seed=1)
    assert _load(tiny_checkpoints.retrieval).fingerprint != _load(other.retrieval).fingerprint


def test_fingerprint_changes_with_one_weight(tiny_checkpoints) -> None:
    model = _load(tiny_checkpoints.retrieval).model
    before = model_fingerprint(model, model.config)
    with torch.no_grad():
        model.itm_head.bias[0] += 1e-6
    assert model_fingerprint(model, model.config) != before


def test_fingerprint_changes_with_config_but_not_bookkeeping(tiny_checkpoints) -> None:
    model = _load(tiny_checkpoints.retrieval).model
    before = model_fingerprint(model, model.config)
    model.config.transformers_version = "0.0.0"
    model.config._name_or_path = "/elsewhere"
    assert model_fingerprint(model, model.config) == before
    model.config.vision_config.layer_norm_eps = 1e-3
    assert model_fingerprint(model, model.config) != before
