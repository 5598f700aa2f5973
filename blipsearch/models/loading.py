"""Finding and loading BLIP checkpoints, from a hub id or a local directory, with one-sentence errors.

A checkpoint that loads "with some weights newly initialised" is a silent disaster for search (a
random ITM head ranks at random), so missing weights are an error here, not a warning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from transformers import BlipProcessor, PreTrainedModel

from blipsearch.errors import ModelLoadError
from blipsearch.models.fingerprint import model_fingerprint
from blipsearch.models.runtime import resolve_device, resolve_dtype
from blipsearch.settings import Settings

if TYPE_CHECKING:
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil


log = logging.getLogger(__name__)

ROLE_SETTING = {
    "retrieval": "BLIPSEARCH_RETRIEVAL_MODEL",
    "caption": "BLIPSEARCH_CAPTION_MODEL",
    "vqa": "BLIPSEARCH_VQA_MODEL",
}


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model ready for inference plus what every caller needs to know about it."""

    model: Any
    processor: BlipProcessor
    source: str
    fingerprint: str
    device: torch.device
    dtype: torch.dtype


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", "./", "../", "~", "."))
        or source.endswith(("/", os.sep))
        or source.count("/") > 1
        or "\\" in source
    )


def _local_directory(source: str, role: str) -> Path | None:
    """The checkpoint directory if `source` names one; None if it should be treated as a hub id."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(
                f"The {role} model path {path} is a file; point {ROLE_SETTING[role]} at the checkpoint "
                "directory that holds config.json."
            )
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"The {role} model directory {path} has no config.json, so it is not a transformers "
                f"checkpoint; point {ROLE_SETTING[role]} at a directory written by save_pretrained."
            )
        return path
    if _looks_like_path(source):
        raise ModelLoadError(
            f"The {role} model path {path} does not exist; fix {ROLE_SETTING[role]} (or --model), "
            "or create test weights with `blipsearch model make-tiny DIR`."
        )
    return None


def _check_architecture(path_or_id: str, expected_class: type[PreTrainedModel], role: str) -> None:
    """Refuse a checkpoint of the wrong model type before transformers half-loads it."""
    local = Path(path_or_id)
    if not local.is_dir():
        return
    try:
        config = json.loads((local / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"The {role} model's config.json in {local} is unreadable: {exc}.") from None
    model_type = config.get("model_type")
    if model_type != "blip":
        raise ModelLoadError(
            f"The {role} model at {local} is a '{model_type}' checkpoint, not BLIP; blipsearch needs a "
            f"{expected_class.__name__} checkpoint."
        )


def load_checkpoint(
    model_class: type[PreTrainedModel],
    source: str,
    *,
    role: str,
    device: str = "auto",
    dtype: str = "auto",
    offline: bool = False,
) -> LoadedCheckpoint:
    """Load model + processor, fingerprint the stored weights, then move to the runtime device/dtype."""
    source = source.strip()
    if not source:
        raise ModelLoadError(f"No {role} model is configured; set {ROLE_SETTING[role]}.")
    local = _local_directory(source, role)
    target = str(local) if local is not None else source
    _check_architecture(target, model_class, role)
    runtime_device = resolve_device(device)
    runtime_dtype = resolve_dtype(dtype, runtime_device, role=role)

    try:
        loaded: Any = model_class.from_pretrained(
            target, local_files_only=offline or local is not None, dtype="auto", output_loading_info=True
        )
        model: Any = loaded[0]
        info: dict[str, list[str]] = loaded[1]
        processor = BlipProcessor.from_pretrained(target, local_files_only=offline or local is not None)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers and huggingface_hub raise many types for the same problem
        raise _explain_failure(source, role, local is not None, offline, exc) from None

    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        shown = ", ".join(sorted(missing)[:3])
        raise ModelLoadError(
            f"The {role} model '{source}' lacks {len(missing)} weights that {model_class.__name__} needs "
            f"(e.g. {shown}); it is probably a different BLIP task's checkpoint."
        )

    fingerprint = model_fingerprint(model, model.config)
    model = model.to(device=runtime_device, dtype=runtime_dtype)
    model.eval()
    model.requires_grad_(False)
    log.info(
        "model loaded",
        extra={
            "role": role,
            "source": source,
            "fingerprint": fingerprint,
            "device": str(runtime_device),
            "dtype": str(runtime_dtype).removeprefix("torch."),
        },
    )
    return LoadedCheckpoint(model, processor, source, fingerprint, runtime_device, runtime_dtype)


def preprocess_images(processor: BlipProcessor, images: Sequence[Image.Image]) -> torch.Tensor:
    """`pixel_values` exactly as the checkpoint's own processor makes them, from images of any mode."""
    return preprocess_with(processor.image_processor, images)


def preprocess_with(image_processor: BlipImageProcessorPil, images: Sequence[Image.Image]) -> torch.Tensor:
    """`preprocess_images` with the image processor alone (what a Ray read task carries: no weights)."""
    rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
    result: torch.Tensor = image_processor(images=rgb, return_tensors="pt")["pixel_values"]
    return result


def load_configured(
    model_class: type[PreTrainedModel], source: str, role: str, settings: Settings
) -> LoadedCheckpoint:
    """`load_checkpoint` with device, dtype and offline mode taken from settings."""
    return load_checkpoint(
        model_class, source, role=role, device=settings.device, dtype=settings.dtype, offline=settings.offline
    )


def _explain_failure(source: str, role: str, is_local: bool, offline: bool, exc: Exception) -> ModelLoadError:
    setting = ROLE_SETTING[role]
    if is_local:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ModelLoadError(f"The {role} model directory {source} could not be loaded ({detail}).")
    where = (
        "the local Hugging Face cache (offline mode is on)" if offline else "the Hugging Face hub or cache"
    )
    return ModelLoadError(
        f"Cannot load the {role} model '{source}': it is not a local directory and could not be found in "
        f"{where}; set {setting} (or --model) to a checkpoint directory, or run "
        f"`huggingface-cli download {source}` on a machine with internet first."
    )
