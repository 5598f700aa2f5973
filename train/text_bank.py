"""Every training caption, tokenised once, with the frozen text encoder's [CLS] state of each.

While the text side is frozen (phase 1), a caption's [CLS] state never changes, so it is computed
once and a step only projects it; later phases read the same token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import BlipForImageTextRetrieval, BlipProcessor


def pad_token_ids(chosen: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists right-padded to the longest: ids and attention mask."""
    width = max(len(c) for c in chosen)
    ids = torch.zeros(len(chosen), width, dtype=torch.long)
    mask = torch.zeros(len(chosen), width, dtype=torch.long)
    for row, tokens in enumerate(chosen):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return ids, mask


def token_ids(processor: BlipProcessor, texts: Sequence[str]) -> list[list[int]]:
    """Unpadded token ids, truncated at BLIP's 35 text positions, as every phase reads its texts."""
    tokenizer: Any = processor.tokenizer
    ids: list[list[int]] = tokenizer(list(texts), truncation=True, max_length=35)["input_ids"]
    return ids


class TextBank:
    """Every training caption, tokenised once, with its frozen MiniLM [CLS] state."""

    def __init__(self, model: BlipForImageTextRetrieval, processor: BlipProcessor, captions: list[list[str]]):
        self.texts: list[str] = []
        self.owner: list[int] = []
        self.offsets: list[tuple[int, int]] = []
        for index, texts in enumerate(captions):
            start = len(self.texts)
            self.texts.extend(texts)
            self.owner.extend([index] * len(texts))
            self.offsets.append((start, len(texts)))
        self.ids = token_ids(processor, self.texts)
        self.cls = encode_frozen(model, self.ids)

    def pad(self, rows: Sequence[int] | range) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_token_ids([self.ids[r] for r in rows])

    def canonical_rows(self) -> list[int]:
        """Each class's first caption, its canonical one ("a red apple"): what measures and teachers use."""
        return [start for start, _ in self.offsets]

    def draw(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One caption row per class, uniformly among that class's captions."""
        starts = torch.tensor([self.offsets[c][0] for c in classes.tolist()])
        counts = torch.tensor([self.offsets[c][1] for c in classes.tolist()])
        pick = (torch.rand(len(classes), generator=generator) * counts).long()
        return starts + pick


@torch.no_grad()
def encode_frozen(model: BlipForImageTextRetrieval, token_ids: list[list[int]]) -> torch.Tensor:
    """The text encoder's [CLS] states without the image, in chunks, on the model's device."""
    device = model.text_proj.weight.device
    states = []
    for start in range(0, len(token_ids), 512):
        ids, mask = (t.to(device) for t in pad_token_ids(token_ids[start : start + 512]))
        states.append(model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0, :])
    return torch.cat(states)
