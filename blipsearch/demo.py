"""A small demo collection written offline: coloured shapes, a product manifest, broken files.

`blipsearch demo` and scripts/quickstart.sh use it so that a newcomer sees indexing, search and
the web UI without downloading anything.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (210, 30, 30), "green": (40, 160, 60), "blue": (40, 80, 200), "yellow": (230, 210, 40)}
SHAPES = ("ball", "box")


def write_demo_collection(root: Path) -> Path:
    """Write the collection under `root`; returns the manifest's path."""
    catalog = root / "catalog"
    catalog.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for name, rgb in COLOURS.items():
        for shape in SHAPES:
            image = Image.new("RGB", (320, 240), (235, 235, 230))
            draw = ImageDraw.Draw(image)
            box = (100, 60, 220, 180)
            if shape == "ball":
                draw.ellipse(box, fill=rgb)
            else:
                draw.rectangle(box, fill=rgb)
            path = catalog / f"{name}-{shape}.jpg"
            image.save(path, quality=90)
            rows.append(
                {
                    "image": path.name,
                    "sku": f"SKU-{name[:3].upper()}-{shape[:2].upper()}",
                    "title": f"{name} {shape}",
                    "category": "toys",
                    "brand": "Acme",
                    "price": f"{5 + len(rows) * 2.5:.2f}",
                    "tags": f"{name}|{shape}",
                }
            )
    with open(catalog / "products.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    broken = root / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "not-an-image.png").write_bytes(b"this is text, not a PNG")
    data = (catalog / "red-ball.jpg").read_bytes()
    (broken / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return catalog / "products.csv"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path, help="where to write photos (created if missing)")
    manifest = write_demo_collection(parser.parse_args().directory)
    print(f"wrote the demo collection; its manifest is {manifest}")


if __name__ == "__main__":
    main()
