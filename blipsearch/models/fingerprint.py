"""A model fingerprint: the identity an index records so that it is never queried with another model.

It hashes what determines the embeddings, the architecture config and every weight as stored in
the checkpoint, so it is independent of where the weights came from (hub id, copied directory,
safetensors or pickle) and of the precision the model later runs in.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

FINGERPRINT_PREFIX = "blip-"

# Keys that describe how a config was written, not what the model computes.
_VOLATILE_CONFIG_KEYS = frozenset(
    {
        "transformers_version",
        "_name_or_path",
        "name_or_path",
        "torch_dtype",
        "dtype",
        "_commit_hash",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "use_cache",
        "architectures",
        "auto_map",
    }
)


def canonical_config(config: Any) -> dict[str, Any]:
    """The config without the keys that say how it was written: equal for the same model."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in sorted(value.items()) if k not in _VOLATILE_CONFIG_KEYS}
        return value

    return clean(config.to_dict())


def model_fingerprint(model: nn.Module, config: Any) -> str:
    """Hex digest over the canonical config and all tensors (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256()
    digest.update(json.dumps(canonical_config(config), sort_keys=True, default=str).encode())
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(f"\0{name}\0{tensor.dtype!s}\0{tuple(tensor.shape)}\0".encode())
        raw = tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        digest.update(memoryview(raw))
    return FINGERPRINT_PREFIX + digest.hexdigest()[:32]
