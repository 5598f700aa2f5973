"""Tiny, randomly initialised but complete BLIP checkpoints for tests and offline smoke runs.

They have the real architecture, a real WordPiece tokenizer and a real processor, and are written
with `save_pretrained`, so every code path that loads `Salesforce/blip-*` loads these too. Weights
are random (fixed seed): they prove plumbing and equality, never quality.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipForImageTextRetrieval,
    BlipForQuestionAnswering,
    BlipProcessor,
    PreTrainedModel,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from blipsearch.errors import BlipsearchError
from blipsearch.settings import BLIP_MAX_TEXT_TOKENS

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
_PUNCTUATION = ".,!?'\"-:;()&/$%+#@*"
_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "on",
    "in",
    "at",
    "to",
    "with",
    "and",
    "or",
    "for",
    "from",
    "by",
    "is",
    "are",
    "be",
    "it",
    "its",
    "this",
    "that",
    "there",
    "next",
    "near",
    "under",
    "over",
    "behind",
    "front",
    "top",
    "side",
    "left",
    "right",
    "up",
    "down",
    "one",
    "two",
    "three",
    "four",
    "five",
    "some",
    "many",
    "few",
    "small",
    "big",
    "large",
    "little",
    "tall",
    "short",
    "long",
    "old",
    "new",
    "young",
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "gray",
    "grey",
    "gold",
    "silver",
    "dark",
    "light",
    "bright",
    "colorful",
    "striped",
    "man",
    "woman",
    "men",
    "women",
    "person",
    "people",
    "boy",
    "girl",
    "child",
    "children",
    "baby",
    "family",
    "player",
    "dog",
    "cat",
    "bird",
    "horse",
    "cow",
    "sheep",
    "bear",
    "elephant",
    "zebra",
    "giraffe",
    "fish",
    "frog",
    "duck",
    "mouse",
    "monkey",
    "lion",
    "tiger",
    "rabbit",
    "car",
    "truck",
    "bus",
    "train",
    "bike",
    "bicycle",
    "motorcycle",
    "plane",
    "airplane",
    "boat",
    "ship",
    "street",
    "road",
    "city",
    "building",
    "house",
    "room",
    "kitchen",
    "table",
    "chair",
    "bed",
    "couch",
    "sofa",
    "window",
    "door",
    "wall",
    "floor",
    "tree",
    "trees",
    "grass",
    "field",
    "park",
    "beach",
    "sea",
    "ocean",
    "water",
    "river",
    "lake",
    "mountain",
    "snow",
    "sky",
    "cloud",
    "sun",
    "food",
    "pizza",
    "cake",
    "apple",
    "banana",
    "orange",
    "sandwich",
    "plate",
    "bowl",
    "cup",
    "glass",
    "bottle",
    "phone",
    "laptop",
    "computer",
    "book",
    "clock",
    "bag",
    "shoe",
    "shoes",
    "shirt",
    "dress",
    "hat",
    "jacket",
    "umbrella",
    "ball",
    "kite",
    "sign",
    "picture",
    "photo",
    "image",
    "standing",
    "sitting",
    "walking",
    "running",
    "riding",
    "holding",
    "eating",
    "playing",
    "flying",
    "looking",
    "wearing",
    "lying",
    "parked",
    "covered",
    "filled",
    "heart",
    "star",
    "smile",
    "smiling",
    "face",
    "hand",
    "flower",
    "flowers",
    "fruit",
    "vegetable",
    "sport",
    "game",
    "toy",
    "box",
    "product",
    "brand",
    "price",
    "sale",
]


@dataclass(frozen=True)
class TinyCheckpoints:
    """Where `make_tiny` wrote each role's checkpoint."""

    root: Path
    retrieval: Path
    caption: Path
    vqa: Path


def tiny_vocabulary() -> list[str]:
    """A real WordPiece vocabulary: whole words, and characters in both word-initial and ## forms."""
    vocab = list(SPECIAL_TOKENS)
    vocab += list(_CHARACTERS) + list(_PUNCTUATION)
    vocab += ["##" + c for c in _CHARACTERS]
    seen = set(vocab)
    for word in _WORDS:
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    return vocab


def tiny_processor(image_size: int) -> BlipProcessor:
    vocab = {token: index for index, token in enumerate(tiny_vocabulary())}
    tokenizer = BertTokenizer(
        vocab=vocab,
        do_lower_case=True,
        bos_token="[DEC]",
        additional_special_tokens=["[ENC]"],
        model_max_length=512,
    )
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


# Wider than BERT's 0.02 on purpose: a 2-layer random model at 0.02 embeds every text alike
# (cosine 0.9999), which would make equality and ranking tests pass vacuously.
# (BlipVisionConfig's own default, 1e-10, makes every image embed alike.)
_INIT_RANGE = 0.3


def tiny_config(
    vocab_size: int,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    embedding_dim: int = 256,
) -> BlipConfig:
    """BLIP with the real layout at toy width; the 256-d ITC space matches BLIP-base's."""
    special = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    text = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "encoder_hidden_size": hidden_size,
        "intermediate_size": hidden_size * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 64,
        "pad_token_id": special["[PAD]"],
        "bos_token_id": special["[DEC]"],
        "eos_token_id": special["[SEP]"],
        "sep_token_id": special["[SEP]"],
        "initializer_range": _INIT_RANGE,
    }
    vision = {
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": image_size,
        "patch_size": patch_size,
        "initializer_range": _INIT_RANGE,
    }
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=embedding_dim)


_ROLES: dict[str, type[PreTrainedModel]] = {
    "retrieval": BlipForImageTextRetrieval,
    "caption": BlipForConditionalGeneration,
    "vqa": BlipForQuestionAnswering,
}


def make_tiny(directory: Path | str, *, seed: int = 0, overwrite: bool = False) -> TinyCheckpoints:
    """Write `retrieval/`, `caption/` and `vqa/` checkpoints under `directory`; same seed, same bytes."""
    root = Path(directory).expanduser()
    paths = {role: root / role for role in _ROLES}
    if not overwrite and any((path / "config.json").exists() for path in paths.values()):
        raise BlipsearchError(f"{root} already holds tiny checkpoints; pass --force to overwrite them.")
    processor = tiny_processor(image_size=32)
    config = tiny_config(len(processor.tokenizer))
    for offset, (role, model_class) in enumerate(_ROLES.items()):
        path = paths[role]
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        torch.manual_seed(seed + offset)
        model = model_class(config).eval()
        model.save_pretrained(path)
        processor.save_pretrained(path)
        (path / "README.md").write_text(
            f"# tiny BLIP {role} checkpoint\n\nRandomly initialised (seed {seed + offset}) by "
            "`blipsearch model make-tiny`, for tests and offline smoke runs. It has the real "
            "architecture and tokenizer but no knowledge: never use it to judge quality.\n"
        )
        (path / "blipsearch-tiny.json").write_text(
            json.dumps({"role": role, "seed": seed + offset, "max_text_tokens": BLIP_MAX_TEXT_TOKENS}) + "\n"
        )
    return TinyCheckpoints(root=root, **paths)
