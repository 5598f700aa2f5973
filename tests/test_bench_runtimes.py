"""The runtimes benchmark's own code: agreement tells a runtime that changes the ranking from one that
does not, the adoption rule needs both speed and agreement, and the report sets each row beside
torch fp32 and the default path of the same run. Timings are not asserted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import runtimes
from bench.runtimes_report import markdown
from blipsearch.models.onnx_graphs import GRAPHS, export
from blipsearch.models.retrieval import RetrievalModel


@pytest.fixture(scope="module")
def catalog(retrieval: RetrievalModel, images, texts) -> runtimes.Catalog:
    """14 images (more than a top 10), the 7 pictures and their mirror images."""
    encoded = retrieval.tokenize(texts[: len(images)])
    pixels = retrieval.pixel_values(images).numpy()
    return runtimes.Catalog(
        pixels=np.concatenate([pixels, pixels[..., ::-1]]),
        queries=[(encoded["input_ids"].numpy(), encoded["attention_mask"].numpy())],
        itm_queries=[0, 1, 2],
    )


def test_torch_agrees_with_itself_and_a_changed_ranking_does_not(retrieval, catalog) -> None:
    runner = runtimes.torch_runner("torch fp32", retrieval)
    reference = runtimes.reference(runner, catalog, image_batch=3)
    same = runtimes.agreement(runner, reference, catalog, image_batch=3)
    assert same == {"text": 1.0, "vision": 1.0, "text+vision": 1.0, "itm": 1.0, "itm_max_abs_diff": 0.0}

    def shuffled_vision(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vectors, tokens = runner.vision(pixels)
        return vectors[::-1].copy(), tokens

    def flipped_itm(ids: np.ndarray, mask: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return 1 - runner.itm(ids, mask, tokens)

    changed = runtimes.Runner("changed", runner.text, shuffled_vision, flipped_itm)
    other = runtimes.agreement(
        changed, reference, catalog, image_batch=len(catalog.pixels)
    )  # one batch: reversed whole
    assert other["text"] == 1.0
    assert other["vision"] < 1.0 and other["text+vision"] < 1.0
    assert other["itm"] < 1.0 and other["itm_max_abs_diff"] > 0


def test_onnxruntime_on_exported_graphs_agrees_with_torch(retrieval, catalog, tmp_path: Path) -> None:
    paths = {graph: export(retrieval.model, graph, tmp_path / f"{graph}.onnx") for graph in GRAPHS}
    torch_runner = runtimes.torch_runner("torch fp32", retrieval)
    reference = runtimes.reference(torch_runner, catalog, image_batch=3)
    onnx = runtimes.backend_runner("onnxruntime fp32", "onnxruntime", paths, threads=1)
    result = runtimes.agreement(onnx, reference, catalog, image_batch=3)
    # The tiny model's ITM probabilities are near-ties, so its order is left to the test above.
    assert result["text+vision"] == 1.0 and result["itm_max_abs_diff"] < 1e-4


def test_speed_measures_every_graph_for_every_runtime(retrieval) -> None:
    runner = runtimes.torch_runner("torch fp32", retrieval)
    inputs = runtimes.make_inputs(retrieval, "a red apple")
    assert inputs.texts[0].shape[0] == runtimes.BATCH["text"]
    assert inputs.itm_batch[2].shape[0] == runtimes.BATCH["itm"]
    rows = runtimes.speed({"a": runner, "b": runner}, inputs, rounds=1, per_round=2)
    for name in ("a", "b"):
        assert set(rows[name]) == set(GRAPHS)
        assert all(rows[name][graph]["n"] == 2 and rows[name][graph]["items_per_s"] > 0 for graph in GRAPHS)


def _row(p50: float, per_s: float, agreement: float) -> dict:
    speed = {"p50_ms": p50, "p99_ms": p50, "mean_ms": p50, "n": 3, "items_per_s": per_s}
    return {
        "speed": dict.fromkeys(GRAPHS, speed),
        "agreement": dict.fromkeys(GRAPHS, agreement) | {"text+vision": agreement, "itm_max_abs_diff": 0.01},
    }


ROWS = {
    "torch fp32": _row(10.0, 100.0, 1.0),
    "torch int8": _row(5.0, 200.0, 0.9),
    "onnxruntime fp32": _row(7.0, 140.0, 1.0),  # 1.43x torch fp32 on both
    "onnxruntime int8": _row(2.0, 500.0, 0.95),  # fast, but changes the ranking
    "openvino fp32": _row(5.0, 120.0, 0.99),  # faster at batch 1 only
}


def test_the_rule_needs_speed_on_both_measures_and_agreement() -> None:
    decision = runtimes.decide(ROWS, {"text": "torch fp32", "vision": "torch int8", "itm": "torch fp32"})
    assert decision["text"] == {"default": "torch fp32", "qualifying": ["onnxruntime fp32"]}
    assert decision["itm"]["qualifying"] == ["onnxruntime fp32"]
    assert decision["vision"] == {"default": "torch int8", "qualifying": []}


def test_report_puts_rows_beside_torch_fp32_and_the_default() -> None:
    defaults = {"text": "torch fp32", "vision": "torch int8", "itm": "torch fp32"}
    section = {
        "title": "Some model",
        "catalog_images": 7,
        "itm_queries": 3,
        "export_s": 1.0,
        "onnx_int8_quantize_s": 2.0,
        "onnx_mb": {"text": 1.0, "vision": 2.0, "itm": 3.0},
        "default_torch": defaults,
        "runtimes": ROWS,
        "decision": runtimes.decide(ROWS, defaults),
        "load_average_1min": [1.5, 2.5],
    }
    report = {
        "machine": {"cpu": "Some CPU", "cores": 2, "torch_threads": 2},
        "when": "2026-12-07T00:00:00Z",
        "seconds": 12.0,
        "quick": False,
        "native_bf16": False,
        "versions": {"torch": "2.13", "onnxruntime": "1.31", "openvino": "2026.4", "onnx": "1.23"},
        "rule": {"speedup": 1.3, "agreement": 0.98},
        "subjects": {"some": section},
    }
    text = markdown(report)
    assert "Some CPU, 2 cores" in text and "1.5 and 2.5" in text
    assert "| onnxruntime fp32 | 7.00 | 1.43x | 1.43x | 140.0 | 1.40x | 1.40x | 1.000 |" in text
    assert "| torch int8 (default) | 5.00 | 2.00x | 1.00x | 200.0 | 2.00x | 1.00x | 0.900 |" in text
    assert "| text | torch fp32 | onnxruntime fp32 | openvino fp32 |" in text
    assert "| vision | torch int8 | none | openvino fp32 |" in text
