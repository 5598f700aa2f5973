"""The answer shape every vector search backend shares (FAISS in `vectors.py`, torch in `exact.py`).

It lives apart from both so that neither backend imports the other for it: `VectorIndex` hands
searches to `TorchExactSearch`, and both must pad the places they find nothing the same way.
"""

from __future__ import annotations

import numpy as np


def empty_results(queries: np.ndarray, dim: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Queries as contiguous float32 [n, dim], and (scores, ids) filled with -inf and -1: every
    search backend's contract for the places it finds nothing."""
    if k <= 0:
        raise ValueError("k must be at least 1")
    queries = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, dim))
    n = len(queries)
    return queries, np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
