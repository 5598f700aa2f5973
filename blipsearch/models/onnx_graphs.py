"""BLIP's three inference graphs as ONNX files, for runtimes other than torch (bench/runtimes.py).

`RetrievalModel` calls the text encoder, the ViT and the ITM forward as three separate steps
(queries, indexing, re-ranking with cached vision tokens), so each is exported on its own, with a
dynamic batch (and text length). The graphs are traced from a float32 model with blipsearch's SDPA
attention; the ITM graph fixes the factorised cross-attention order, the one `auto` picks for
short queries, since a graph cannot choose an order per call.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BlipForImageTextRetrieval

from blipsearch.models.fast import cross_attention_order

GRAPHS = ("text", "vision", "itm")
OPSET = 18


class TextGraph(nn.Module):
    """input_ids, attention_mask -> L2-normalised ITC text vectors."""

    def __init__(self, model: BlipForImageTextRetrieval) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.model.text_proj(hidden[:, 0, :]), dim=-1)


class VisionGraph(nn.Module):
    """pixel_values -> (L2-normalised ITC image vectors, vision tokens for ITM)."""

    def __init__(self, model: BlipForImageTextRetrieval) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model.vision_model(pixel_values=pixel_values).last_hidden_state
        return F.normalize(self.model.vision_proj(hidden[:, 0, :]), dim=-1), hidden


class ItmGraph(nn.Module):
    """input_ids, attention_mask, vision tokens -> match probability (ITM head, class 1)."""

    def __init__(self, model: BlipForImageTextRetrieval) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vision_tokens: torch.Tensor
    ) -> torch.Tensor:
        image_mask = torch.ones(vision_tokens.shape[:-1], dtype=torch.long, device=vision_tokens.device)
        hidden = self.model.text_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=vision_tokens,
            encoder_attention_mask=image_mask,
        ).last_hidden_state
        return torch.softmax(self.model.itm_head(hidden[:, 0, :]), dim=-1)[:, 1]


def _examples(
    model: BlipForImageTextRetrieval, graph: str
) -> tuple[tuple[torch.Tensor, ...], dict[str, dict[int, str]]]:
    config: Any = model.config
    vision = config.vision_config
    size = int(vision.image_size)
    tokens = (size // int(vision.patch_size)) ** 2 + 1
    ids = torch.arange(14).view(2, 7) % int(config.text_config.vocab_size)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    text_axes = {0: "batch", 1: "length"}
    if graph == "text":
        return (ids, mask), {"input_ids": text_axes, "attention_mask": text_axes}
    if graph == "vision":
        return (torch.randn(2, 3, size, size),), {"pixel_values": {0: "batch"}}
    states = torch.randn(2, tokens, int(vision.hidden_size))
    return (ids, mask, states), {
        "input_ids": text_axes,
        "attention_mask": text_axes,
        "vision_tokens": {0: "batch"},
    }


NAMES = {
    "text": (["input_ids", "attention_mask"], ["vectors"]),
    "vision": (["pixel_values"], ["vectors", "vision_tokens"]),
    "itm": (["input_ids", "attention_mask", "vision_tokens"], ["probability"]),
}


def export(model: BlipForImageTextRetrieval, graph: str, path: Path) -> Path:
    """Write one graph of a float32 CPU model (fast.use_sdpa already applied) to `path`."""
    module = {"text": TextGraph, "vision": VisionGraph, "itm": ItmGraph}[graph](model).eval()
    args, axes = _examples(model, graph)
    inputs, outputs = NAMES[graph]
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        cross_attention_order("factorized"),
        warnings.catch_warnings(),
        torch.inference_mode(False),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path
