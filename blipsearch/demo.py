"""The demo's assets: the shipped emoji model and catalog, and a few broken files to fail cleanly.

`blipsearch demo` and scripts/quickstart.sh (through `blipsearch demo-assets`) index the catalog
with the model, so a newcomer sees real rankings, filters and keyword search without downloading
anything. Both live in the repository's `demo/` folder (see demo/model/README.md for how the model
was trained and measured, demo/catalog/LICENSES.txt for the images' licences).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blipsearch.errors import BlipsearchError

DEMO_RERANKS = True
"""Whether `blipsearch demo` and the quickstart re-rank with ITM by default: only where the demo
model's card measures ITM with ITC above ITC alone on its own catalog."""

DEMO_MODEL_NOTE = (
    "Demo model: it knows emoji only, so photos and everyday words find little. "
    "Real pictures need a real BLIP checkpoint."
)
"""What the web UI tells a user when the server runs the shipped demo model."""


@dataclass(frozen=True)
class DemoAssets:
    retrieval: Path
    caption: Path
    manifest: Path
    """The product manifest (CSV) of the demo catalog."""


def demo_assets(demo_dir: Path) -> DemoAssets:
    """The shipped model and catalog under `demo_dir`, or one clear error naming what is missing."""
    assets = DemoAssets(
        retrieval=demo_dir / "model" / "retrieval",
        caption=demo_dir / "model" / "caption",
        manifest=demo_dir / "catalog" / "catalog.csv",
    )
    for needed in (assets.retrieval / "config.json", assets.caption / "config.json", assets.manifest):
        if not needed.is_file():
            raise BlipsearchError(
                f"The demo needs {needed}, which ships in the repository's demo/ folder: run from a clone, "
                "or set BLIPSEARCH_DEMO_DIR to a copy of it."
            )
    return assets


def is_demo_model(fingerprint: str, config: Any, demo_dir: Path) -> bool:
    """Whether the retrieval model with this fingerprint and config is the shipped demo model
    (`demo_dir`/model/retrieval), recognised by its fingerprint, not by where it was loaded from."""
    from blipsearch.models.identity import is_same_checkpoint

    return is_same_checkpoint(fingerprint, config, demo_dir / "model" / "retrieval")


def demo_rerank_itc_weight(assets: DemoAssets) -> float:
    """The shipped demo model's `rerank_itc_weight` (see `rerank_itc_weight_of`)."""
    return rerank_itc_weight_of(assets.retrieval.parent)


def rerank_itc_weight_of(model_dir: Path) -> float:
    """1 / the ITC temperature a demo-recipe run learned (its `training_state.json`): the weight that
    adds ITM and ITC log-scores when re-ranking (`rerank_itc_weight`). Fixed by training, not tuned
    on any evaluation set."""
    import json

    state = model_dir / "training_state.json"
    try:
        temperature = float(json.loads(state.read_text())["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BlipsearchError(f"{state} does not hold the demo model's ITC temperature ({exc}).") from None
    if not 0 < temperature < 1:
        raise BlipsearchError(f"{state}: temperature {temperature} is outside (0, 1).")
    return round(1.0 / temperature, 2)


def limited_manifest(manifest: Path, limit: int, out: Path) -> Path:
    """The first `limit` products of `manifest`, with image paths made absolute, written to `out`."""
    with manifest.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = [row for _, row in zip(range(limit), reader, strict=False)]
    for row in rows:
        row["image"] = str((manifest.parent / row["image"]).resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out


def sample_image(assets: DemoAssets) -> Path:
    """One of the catalog's pictures, whose bytes the broken files are cut from."""
    return next((assets.manifest.parent / "images").rglob("*.png"))


def write_broken_files(root: Path, sample: Path) -> Path:
    """Files that must fail with a reason, not break the run: empty, not an image, truncated."""
    broken = root / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "empty.png").write_bytes(b"")
    (broken / "not-an-image.png").write_bytes(b"this is text, not a PNG")
    data = sample.read_bytes()
    (broken / "truncated.png").write_bytes(data[: len(data) // 3])
    return broken
