"""Whether a loaded checkpoint is the same model as the one stored in a directory.

The fingerprint (models/fingerprint.py) is the model's identity wherever its files came from, so a
copied or moved demo model is still recognised and a fine-tuned one of the same shape is not. The
configs are compared first: they differ for any other architecture, and then no weights are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blipsearch.models.fingerprint import canonical_config, model_fingerprint


def is_same_checkpoint(fingerprint: str, config: Any, directory: Path) -> bool:
    """True when `directory` holds the retrieval checkpoint whose `fingerprint` and `config` are given."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        return False
    from transformers import BlipConfig, BlipForImageTextRetrieval

    try:
        stored = BlipConfig.from_pretrained(str(directory))
    except (OSError, ValueError):
        return False
    if canonical_config(stored) != canonical_config(config):
        return False
    try:
        model = BlipForImageTextRetrieval.from_pretrained(str(directory), dtype="auto", local_files_only=True)
    except (OSError, ValueError):
        return False
    return bool(model_fingerprint(model, model.config) == fingerprint)
