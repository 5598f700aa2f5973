"""Small catalog rows for the storage tests: an indexed item with a unit vector, keyed by a seed.

Import it as `from catalog_rows import ...` (see `imagesets.py` for why not `tests.catalog_rows`).
"""

from __future__ import annotations

import numpy as np

from blipsearch.storage.item_writes import FileFacts, ItemWrite
from blipsearch.storage.schema import ItemStatus

FP = "blip-" + "a" * 32
"""The retrieval-model fingerprint the rows are embedded by."""


def unit_vector(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def indexed_write(source: str, seed: int, **kwargs: object) -> ItemWrite:
    """An indexed item whose content hash and embedding both follow from `seed`."""
    return ItemWrite(
        source=source,
        origin="/photos",
        status=ItemStatus.INDEXED,
        file=FileFacts(f"{seed:064x}", 10, 1.0, "PNG", 4, 4),
        embedding=unit_vector(seed),
        model_fingerprint=FP,
        **kwargs,  # type: ignore[arg-type]
    )
