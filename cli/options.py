"""Options several command groups share, so that the same option reads the same in every `--help`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (catalog, indexes).")]
DatabaseUrlOpt = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL (default: SQLite in the data directory).")
]
CatalogUrlOpt = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL of the catalog.")]
RetrievalModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Retrieval checkpoint (hub id or directory).")
]
IndexedModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Retrieval checkpoint the index was built with.")
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or mps.")]
DTypeOpt = Annotated[str | None, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TrainSeedOpt = Annotated[int, typer.Option("--seed", help="Seeds data order, dropout and negative sampling.")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
