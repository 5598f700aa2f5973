"""How the catalog stores an embedding: little-endian float32 or float16 bytes in a SQL column.

The indexer, the live indexes and CapFilt all read vectors back through `round_trip`, so a vector
index built from what was just computed holds exactly what a rebuild from SQL would hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from blipsearch.errors import CatalogError

StorageDType = Literal["float32", "float16"]
_NUMPY_DTYPES: dict[str, str] = {"float32": "<f4", "float16": "<f2"}


def encode_vector(vector: np.ndarray, dtype: StorageDType) -> bytes:
    return np.ascontiguousarray(vector, dtype=_NUMPY_DTYPES[dtype]).tobytes()


def decode_vectors(blobs: Sequence[bytes], dtype: str, dim: int) -> np.ndarray:
    """Stack stored blobs into float32 [N, dim]; a blob of the wrong length is a corrupt row."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    numpy_dtype = np.dtype(_NUMPY_DTYPES[dtype])
    if any(len(blob) != dim * numpy_dtype.itemsize for blob in blobs):
        raise CatalogError(
            f"A stored embedding does not have {dim} {dtype} values; run `blipsearch index verify`."
        )
    joined = np.frombuffer(b"".join(blobs), dtype=numpy_dtype).reshape(len(blobs), dim)
    return joined.astype(np.float32)


def round_trip(vectors: np.ndarray, dtype: StorageDType) -> np.ndarray:
    """The vectors exactly as they will read back from SQL, so a live index equals a rebuilt one."""
    return np.asarray(vectors, dtype=_NUMPY_DTYPES[dtype]).astype(np.float32)


def value_width(dtype: str | None) -> int:
    """Bytes per stored value of a column written as `dtype` (float32 when unrecorded)."""
    return np.dtype(_NUMPY_DTYPES[dtype or "float32"]).itemsize
