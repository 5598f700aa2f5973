"""The two models the suite measures, each in its stock form and in blipsearch's fast forms."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import BlipForImageTextRetrieval, BlipProcessor

from blipsearch.machine import cpu_has_native_bf16
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / "demo" / "model" / "retrieval"
DEMO_CATALOG = REPO / "demo" / "catalog"


@dataclass
class Subject:
    """One checkpoint: `stock` is transformers as shipped (eager attention, fp32); `fast` holds
    `RetrievalModel`s loaded through blipsearch's settings, keyed by variant name."""

    name: str
    directory: Path
    device: torch.device
    stock: BlipForImageTextRetrieval
    processor: BlipProcessor
    fast: dict[str, RetrievalModel] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        return self.stock.config

    @property
    def image_size(self) -> int:
        return int(self.config.vision_config.image_size)

    @property
    def vision_tokens(self) -> int:
        vision = self.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2 + 1


def settings_for(directory: Path, device: torch.device, **changes: object) -> Settings:
    values: dict[str, object] = {
        "retrieval_model": str(directory),
        "device": device.type,
        "offline": True,
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


def fast_variants(device: torch.device) -> dict[str, dict[str, object]]:
    """What blipsearch can run: fused attention everywhere in fp32; on the CPU int8 for the ViT
    (`quantize=vision`) or for both sides (`all`), and bf16 where the CPU has it natively; bf16 on
    CUDA."""
    if device.type == "cpu":
        variants: dict[str, dict[str, object]] = {
            "fast fp32": {"dtype": "float32", "quantize": "none"},
            "fast int8-vision": {"dtype": "float32", "quantize": "vision"},
            "fast int8 (all)": {"dtype": "float32", "quantize": "all"},
        }
        if cpu_has_native_bf16():
            variants["fast bf16"] = {"dtype": "bfloat16", "quantize": "none"}
        return variants
    return {
        "fast fp32": {"dtype": "float32", "quantize": "none"},
        "fast bf16": {"dtype": "bfloat16", "quantize": "none"},
    }


def load_subject(name: str, directory: Path, device: torch.device) -> Subject:
    stock = BlipForImageTextRetrieval.from_pretrained(directory, dtype=torch.float32).to(device).eval()
    stock.requires_grad_(False)
    processor = BlipProcessor.from_pretrained(directory)
    subject = Subject(name, directory, device, stock, processor)
    for variant, changes in fast_variants(device).items():
        subject.fast[variant] = RetrievalModel.load(
            str(directory), settings_for(directory, device, **changes)
        )
    return subject


def default_variant(subject: Subject) -> str:
    """The variant blipsearch's defaults (`quantize=auto`) run for this model on this device."""
    from blipsearch.models.fast import resolve_quantize
    from blipsearch.models.runtime import resolve_dtype

    dtype = resolve_dtype("auto", subject.device, role="retrieval")
    if dtype != torch.float32:
        return "fast bf16"
    part = resolve_quantize("auto", subject.stock, subject.device, dtype)
    return {None: "fast fp32", "vision": "fast int8-vision", "all": "fast int8 (all)"}[part]


def base_size_checkpoint(directory: Path, seed: int = 0) -> Path:
    """BLIP-base's architecture (ViT-B/16 at 384 px, BERT-base with BERT's 30,524-token vocabulary)
    with random weights: the real compute and memory cost, since the hub is unreachable here."""
    from blipsearch.models.tiny import tiny_config

    if (directory / "config.json").exists():
        return directory
    processor = BlipProcessor.from_pretrained(DEMO_MODEL)
    processor.image_processor.size = {"height": 384, "width": 384}
    config = tiny_config(
        len(processor.tokenizer), image_size=384, patch_size=16, hidden_size=768, layers=12, heads=12
    )
    config.text_config.max_position_embeddings = 512
    config.vision_config.initializer_range = config.text_config.initializer_range = 0.02
    torch.manual_seed(seed)
    BlipForImageTextRetrieval(config).eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def demo_pairs(limit: int | None = None) -> tuple[list[Path], list[str]]:
    """The shipped catalog's images and each one's emoji name (the model card's Noto queries)."""
    paths, names = [], []
    with open(DEMO_CATALOG / "catalog.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            image = DEMO_CATALOG / row["image"]
            if not image.is_file():
                continue
            paths.append(image)
            names.append(row["title"].rsplit(" (", 1)[0].lower())
    if limit is not None:
        paths, names = paths[:limit], names[:limit]
    return paths, names
