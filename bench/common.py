"""What every benchmark shares: the machine description, report writing, model and image fixtures."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from blipsearch.machine import cpu_name

REPORTS = Path(__file__).resolve().parent / "reports"
RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def machine_slug(info: dict[str, Any]) -> str:
    name = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*", "", info["cpu"].lower())
    words = re.findall(r"[a-z0-9]+", name)[:3]
    gpu = "-" + "-".join(re.findall(r"[a-z0-9]+", info["gpu"].lower())[1:3]) if info.get("gpu") else ""
    return "-".join(words) + f"-{info['cores']}c" + gpu


def base_size_retrieval(directory: Path, seed: int = 0) -> Path:
    """BLIP-base's architecture (ViT-B/16 at 384 px, BERT-base) with random weights: real compute cost.

    The hub is unreachable here; timing depends on shapes, not on what the weights learned.
    """
    from transformers import BlipForImageTextRetrieval

    from blipsearch.models.tiny import tiny_config, tiny_processor

    if (directory / "config.json").exists():
        return directory
    processor = tiny_processor(image_size=384)
    config = tiny_config(
        len(processor.tokenizer), image_size=384, patch_size=16, hidden_size=768, layers=12, heads=12
    )
    config.vision_config.initializer_range = config.text_config.initializer_range = 0.02
    torch.manual_seed(seed)
    BlipForImageTextRetrieval(config).eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def photo_like_jpegs(
    directory: Path, count: int, size: tuple[int, int] = (640, 480), seed: int = 0
) -> list[Path]:
    """Camera-sized JPEGs with smooth structure (decode cost like photos, not like noise)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for index in range(count):
        fx, fy, phase = [*rng.uniform(0.005, 0.05, 2).tolist(), rng.uniform(0, 6.28)]
        base = (np.sin(x * fx + phase) + np.cos(y * fy)) * 60 + 128
        channels = [base + rng.uniform(-60, 60) for _ in range(3)]
        array = np.clip(np.stack(channels, axis=-1) + rng.normal(0, 8, (height, width, 3)), 0, 255)
        path = directory / f"photo_{index:05d}.jpg"
        Image.fromarray(array.astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def write_report(name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    REPORTS.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **data,
    }
    json_path = REPORTS / f"{name}.json"
    md_path = REPORTS / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    header = f"# {name}\n\nMachine: {data['machine']['cpu']}, {data['machine']['cores']} cores"
    header += (
        f", GPU: {data['machine']['gpu'] or 'none'}; torch {data['machine']['torch']}; {data['when']}.\n\n"
    )
    md_path.write_text(header + markdown + "\n")
    return json_path, md_path


def naive_row(path: Path, data: bytes, vector: np.ndarray, fingerprint: str) -> Any:
    """The catalog row the naive indexing loop writes for one file, in its own transaction."""
    import hashlib

    from blipsearch.storage.item_writes import FileFacts, ItemWrite
    from blipsearch.storage.schema import ItemStatus

    return ItemWrite(
        source=str(path),
        origin=None,
        status=ItemStatus.INDEXED,
        file=FileFacts(hashlib.sha256(data).hexdigest(), len(data), path.stat().st_mtime),
        embedding=vector,
        model_fingerprint=fingerprint,
    )


def run_to_results(
    out: Path,
    stem: str,
    run: Callable[[Callable[[dict[str, Any]], None]], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """Run a timed section, keeping `<stem>.partial.json` current (a run cut short keeps what it
    measured), then write `<stem>.json` and `.md` under `out` and drop the partial file."""
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f"{stem}.partial.json"
    report = run(lambda so_far: partial.write_text(json.dumps(so_far, indent=2) + "\n"))
    partial.unlink(missing_ok=True)
    report["seconds"] = round(time.time() - started, 1)
    report["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(report))
    print(f"wrote {out / stem}.json and .md")
    return report
