"""What a checkpoint is, in numbers a person checks before indexing a million images with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import (
    BlipForConditionalGeneration,
    BlipForImageTextRetrieval,
    BlipForQuestionAnswering,
    PreTrainedModel,
)

from blipsearch.errors import ModelLoadError
from blipsearch.models.loading import load_checkpoint
from blipsearch.settings import Settings

_ARCHITECTURES: dict[str, tuple[type[PreTrainedModel], str]] = {
    "BlipForImageTextRetrieval": (BlipForImageTextRetrieval, "retrieval"),
    "BlipForConditionalGeneration": (BlipForConditionalGeneration, "caption"),
    "BlipForQuestionAnswering": (BlipForQuestionAnswering, "vqa"),
}


def _architecture_of(source: str, settings: Settings) -> str:
    path = Path(source).expanduser()
    if (path / "config.json").is_file():
        try:
            names = json.loads((path / "config.json").read_text()).get("architectures") or []
        except (OSError, json.JSONDecodeError):
            names = []
        for name in names:
            if name in _ARCHITECTURES:
                return str(name)
        if names:
            raise ModelLoadError(
                f"{path} holds a {names[0]} checkpoint; blipsearch uses {', '.join(_ARCHITECTURES)}."
            )
    return "BlipForImageTextRetrieval"


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def checkpoint_info(source: str, settings: Settings | None = None) -> dict[str, Any]:
    """Architecture, sizes, parameter counts and fingerprint of a checkpoint (loads its weights)."""
    settings = settings or Settings()
    architecture = _architecture_of(source, settings)
    model_class, role = _ARCHITECTURES[architecture]
    loaded = load_checkpoint(
        model_class, source, role=role, device="cpu", dtype="float32", offline=settings.offline
    )
    model = loaded.model
    config = model.config
    vision, text = config.vision_config, config.text_config
    image_size = int(vision.image_size)
    patch = int(vision.patch_size)
    text_module = getattr(model, "text_encoder", None) or getattr(model, "text_decoder", None)
    params = {
        "total": _count(model),
        "vision": _count(model.vision_model),
        "text": _count(text_module),
    }
    if role == "vqa":
        params["text_decoder"] = _count(model.text_decoder)
    params["heads"] = params["total"] - sum(v for k, v in params.items() if k != "total")
    tokenizer = loaded.processor.tokenizer
    return {
        "source": source,
        "architecture": architecture,
        "role": role,
        "fingerprint": loaded.fingerprint,
        "embedding_dim": int(config.image_text_hidden_size) if role == "retrieval" else None,
        "image_size": image_size,
        "patch_size": patch,
        "vision_tokens": (image_size // patch) ** 2 + 1,
        "vision": {
            "layers": vision.num_hidden_layers,
            "hidden": vision.hidden_size,
            "heads": vision.num_attention_heads,
        },
        "text": {
            "layers": text.num_hidden_layers,
            "hidden": text.hidden_size,
            "heads": text.num_attention_heads,
            "vocab_size": text.vocab_size,
        },
        "tokenizer": {
            "class": type(tokenizer).__name__,
            "vocab_size": len(tokenizer),
            "max_text_tokens": settings.max_text_tokens,
        },
        "parameters": params,
        "stored_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
