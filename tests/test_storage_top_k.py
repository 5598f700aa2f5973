"""The empty answer every search backend starts from."""

from __future__ import annotations

import numpy as np
import pytest

from blipsearch.storage.top_k import empty_results


def test_empty_results_pad_with_minus_infinity_and_minus_one() -> None:
    queries, scores, ids = empty_results(np.arange(8, dtype=np.float64), dim=4, k=3)
    assert queries.shape == (2, 4) and queries.dtype == np.float32 and queries.flags.c_contiguous
    assert scores.shape == ids.shape == (2, 3)
    assert scores.dtype == np.float32 and np.isneginf(scores).all()
    assert ids.dtype == np.int64 and (ids == -1).all()


def test_k_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        empty_results(np.zeros((1, 4), dtype=np.float32), dim=4, k=0)
