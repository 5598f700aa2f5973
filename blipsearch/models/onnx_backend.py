"""ONNX Runtime or OpenVINO in place of torch for BLIP's graphs (`inference_runtime`, the
`runtimes` extra).

bench/runtimes.py measures each runtime against the torch path blipsearch runs by default; a
runtime runs only the graphs where it was measured at least 1.3x faster with top-10 agreement of
at least 0.98 (`ADOPTED`); torch keeps the rest. The graphs are exported once per checkpoint and
attention setting and kept under `data_dir/onnx/`, so a server start after the first skips the
export (tens of seconds for BLIP-base).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from transformers import BlipForImageTextRetrieval

from blipsearch.errors import ConfigError
from blipsearch.models.onnx_graphs import NAMES, export

Runtime = Literal["onnxruntime", "openvino"]
ADOPTED: dict[str, frozenset[str]] = {
    "onnxruntime": frozenset({"text"}),
    "openvino": frozenset({"text"}),
}
"""The graphs each runtime takes over from torch, where it met the rule on both the demo model and
BLIP-base (bench/results/runtimes-amd-epyc-2c-2026-12-07.md): the text graph for both. ONNX
Runtime's ViT and ITM met it on the demo model only; on BLIP-base, torch's int8 ViT and its
factorised ITM cross-attention are as fast."""


class GraphBackend:
    """Sessions of one runtime for some of the three graphs; numpy in, numpy out."""

    def __init__(self, runtime: Runtime, paths: dict[str, Path], threads: int | None = None) -> None:
        self.runtime = runtime
        self.graphs = frozenset(paths)
        self._outputs: dict[str, Any] = {}
        if runtime == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Idle workers sleep instead of spinning: a server shares its cores with tokenizing, HTTP
            # and vector search (and in bench/runtimes.py with the other runtimes' threads).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sessions = {
                graph: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for graph, path in paths.items()
            }
            self._run = {graph: _ort_call(session) for graph, session in sessions.items()}
        elif runtime == "openvino":
            import openvino as ov

            core = ov.Core()
            # f32 stated: on a CPU with native bf16 OpenVINO would otherwise compute in bf16.
            config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            self._run = {
                graph: _openvino_call(core.compile_model(str(path), "CPU", config))
                for graph, path in paths.items()
            }
        else:
            raise ConfigError(
                f"Unknown inference runtime '{runtime}'; choose torch, onnxruntime or openvino."
            )

    def _call(self, graph: str, *arrays: np.ndarray) -> list[np.ndarray]:
        feeds = [np.ascontiguousarray(array) for array in arrays]
        return self._run[graph](dict(zip(NAMES[graph][0], feeds, strict=True)))

    def text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._call("text", input_ids, attention_mask)[0]

    def vision(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vectors, tokens = self._call("vision", pixel_values)
        return vectors, tokens

    def itm(self, input_ids: np.ndarray, attention_mask: np.ndarray, vision_tokens: np.ndarray) -> np.ndarray:
        return self._call("itm", input_ids, attention_mask, vision_tokens)[0]


def _ort_call(session: Any) -> Any:
    return lambda feeds: session.run(None, feeds)


def _openvino_call(compiled: Any) -> Any:
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def call(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = request.infer(feeds)
        return [np.array(result[output]) for output in outputs]

    return call


def exported(model: BlipForImageTextRetrieval, directory: Path, graphs: Iterable[str]) -> dict[str, Path]:
    """Each graph's ONNX file in `directory`, exported now where missing. A file appears whole
    or not at all (written beside, then renamed), so a process killed mid-export leaves no torn
    graph for the next start."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for graph in graphs:
        path = directory / f"{graph}.onnx"
        if not path.is_file():
            handle, temporary = tempfile.mkstemp(dir=directory, suffix=".onnx.part")
            os.close(handle)
            try:
                export(model, graph, Path(temporary))
                os.replace(temporary, path)
            finally:
                Path(temporary).unlink(missing_ok=True)
        paths[graph] = path
    return paths


def open_backend(
    runtime: Runtime,
    model: BlipForImageTextRetrieval,
    cache: Path,
    threads: int | None = None,
    graphs: Iterable[str] | None = None,
) -> GraphBackend:
    """The runtime's sessions for `graphs` (default: its adopted ones), exporting them into `cache`
    first if needed."""
    if runtime not in ADOPTED:
        raise ConfigError(f"Unknown inference runtime '{runtime}'; choose torch, onnxruntime or openvino.")
    try:
        __import__(runtime)
        __import__("onnx")
    except ImportError:
        raise ConfigError(
            f"inference_runtime={runtime} needs the runtimes extra: pip install 'blipsearch[runtimes]'."
        ) from None
    chosen = sorted(set(graphs) if graphs is not None else ADOPTED[runtime])
    return GraphBackend(runtime, exported(model, cache, chosen), threads)
