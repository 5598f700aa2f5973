"""The parts of BLIP each demo phase trains, and the forward passes split where training starts.

Phase 2 may train only the ViT's last layers: `vision_trunk` runs the frozen layers once without
gradients and `vision_tail` the trained ones. Phase 3's loss runs the LM head on scored positions
only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval, BlipVisionModel

from blipsearch.train import losses


def itm_text_parameters(model: BlipForImageTextRetrieval) -> list[torch.nn.Parameter]:
    """The text layers' own self-attention and feed-forward weights (not embeddings, not cross-attention).

    With these frozen, the image reaches the ITM head only through softmax-normalised cross-attention
    and feed-forward layers trained for language alone: the head sat at the label prior for hundreds
    of steps, even with random negatives and a 4x learning rate."""
    return [p for n, p in model.text_encoder.encoder.named_parameters() if "crossattention" not in n]


def vision_trunk(vision: BlipVisionModel, pixels: torch.Tensor, tail: int) -> torch.Tensor:
    """The ViT's hidden states before its last `tail` layers; `vision_tail` finishes the forward pass."""
    layers = vision.encoder.layers
    hidden = vision.embeddings(pixels)
    for layer in layers[: len(layers) - tail]:
        hidden = layer(hidden)
    return hidden


def vision_tail(vision: BlipVisionModel, hidden: torch.Tensor, tail: int) -> torch.Tensor:
    """`last_hidden_state` from `vision_trunk`'s output: the last `tail` layers and the final norm."""
    layers = vision.encoder.layers
    for layer in layers[len(layers) - tail :]:
        hidden = layer(hidden)
    return vision.post_layernorm(hidden)


def vision_tail_parameters(vision: BlipVisionModel, tail: int) -> list[torch.nn.Parameter]:
    layers = vision.encoder.layers
    return [
        *(p for layer in layers[len(layers) - tail :] for p in layer.parameters()),
        *vision.post_layernorm.parameters(),
    ]


def caption_loss(
    captioner: BlipForConditionalGeneration,
    vision: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float,
) -> torch.Tensor:
    """`losses.lm_loss(text_decoder(...).logits, labels)`, with the LM head run on scored positions only.

    The 30k-way head on every position (prompt and padding included) costs more than the decoder
    itself here; a test checks that both give the same loss.
    """
    hidden = captioner.text_decoder.bert(
        input_ids=ids,
        attention_mask=mask,
        encoder_hidden_states=vision,
        encoder_attention_mask=torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device),
        is_decoder=True,
    ).last_hidden_state
    targets = labels[:, 1:]
    scored = targets != losses.IGNORE_INDEX
    logits = captioner.text_decoder.cls(hidden[:, :-1][scored])
    return F.cross_entropy(logits.float(), targets[scored], label_smoothing=label_smoothing)
