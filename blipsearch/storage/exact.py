"""Exact top-k by brute force on a torch device: the live vectors as one device-resident matrix.

Why: exact search of one query is a matrix-vector product that reads every stored number once, so
its speed is memory bandwidth. A GPU streams its memory at terabytes per second, FAISS's CPU scan
at the tens of gigabytes per second a few cores get, so the GPU answers exact queries (and large
query batches, where the product becomes a GEMM) far faster, without an approximate index.
float16 storage halves the memory the matrix takes and so doubles the vectors scanned per second;
for unit vectors it moves scores by about 1e-3, enough to swap near-ties but not to lose a match
(scores are returned as float32). On CPU float32 is the default: there FAISS is used anyway (see
`VectorIndex.use_device`), and this class runs on CPU only for tests and comparisons.

`search` keeps `VectorIndex.search`'s contract: (scores float32 [n, k], ids int64 [n, k]), best
first, padded with -inf and -1 when fewer than k vectors are admitted, `allowed_ids` restricting
the results (ids not present are ignored), and equal scores ordered by the smaller id.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
import torch

from blipsearch.errors import ConfigError
from blipsearch.storage.top_k import empty_results

SearchDevice = Literal["auto", "cpu", "cuda"]

SCORE_BLOCK_BYTES = 256 * 1024**2
"""Queries are scored in blocks whose float32 score matrix (queries x vectors) stays under this."""
GATHER_FRACTION = 0.5
"""A filter admitting at most this share of the vectors scores a gathered copy of just those rows;
a larger one scores every row and masks the rest (no copy of most of the matrix)."""


class HoldsVectors(Protocol):
    """What `from_index` copies from: a `VectorIndex`, named by shape so this module needs no FAISS."""

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]: ...


def resolve_search_device(requested: str) -> torch.device:
    """The `vector_search_device` setting as a device: auto is CUDA when torch sees a GPU, else CPU."""
    name = requested.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"vector_search_device '{requested}' was asked for but this torch build sees no CUDA GPU; "
                "set BLIPSEARCH_VECTOR_SEARCH_DEVICE=cpu or auto."
            )
        return torch.device(name)
    raise ConfigError(f"Unknown vector_search_device '{requested}'; choose auto, cpu or cuda.")


def default_dtype(device: torch.device) -> torch.dtype:
    """float16 on an accelerator (half the memory, twice the scan rate), float32 on CPU."""
    return torch.float32 if device.type == "cpu" else torch.float16


class TorchExactSearch:
    """Exact inner-product top-k over a fixed set of (id, unit vector) pairs held on one device.

    Rows are kept in ascending id order, so a row's position orders ties like its id. The matrix
    is a snapshot: build a new one after the vectors change (`VectorIndex` does so lazily).
    """

    def __init__(self, ids: np.ndarray, matrix: torch.Tensor) -> None:
        """`ids` sorted ascending and unique, `matrix` their vectors row by row; use the factories."""
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids for a matrix of shape {tuple(matrix.shape)}")
        self.ids = ids
        self.matrix = matrix

    @classmethod
    def from_vectors(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        device: torch.device,
        dtype: torch.dtype | None = None,
    ) -> TorchExactSearch:
        """Copy these vectors to `device` as `dtype` (default: `default_dtype(device)`)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"{len(ids)} ids for vectors of shape {vectors.shape}")
        if len(ids) and ids.min() < 0:
            raise ValueError("vector ids must be non-negative catalog keys")
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
            raise ValueError("the same id was given more than once")
        device = torch.device(device)
        dtype = dtype or default_dtype(device)
        # Fancy indexing copies, so the device matrix never aliases the caller's array.
        host = torch.from_numpy(np.ascontiguousarray(vectors[order]))
        if device.type != "cpu":
            host = host.to(dtype)  # convert before the transfer: half the bytes cross the bus
        return cls(ids, host.to(device=device, dtype=dtype))

    @classmethod
    def from_index(
        cls, index: HoldsVectors, device: torch.device, dtype: torch.dtype | None = None
    ) -> TorchExactSearch:
        """The live vectors of a FAISS index (read from its storage in bulk), on `device`."""
        ids, vectors = index.live_vectors()
        return cls.from_vectors(ids, vectors, device, dtype)

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: (scores, ids), padded with -inf and -1 where fewer exist."""
        queries, scores, labels = empty_results(queries, self.dim, k)
        n = len(queries)
        if n == 0 or not len(self.ids):
            return scores, labels
        matrix, candidate_ids, blocked, admitted = self.matrix, self.ids, None, len(self.ids)
        if allowed_ids is not None:
            positions = self._positions(allowed_ids)
            admitted = len(positions)
            if not admitted:
                return scores, labels
            if admitted <= GATHER_FRACTION * len(self.ids):
                matrix = self.matrix.index_select(0, torch.from_numpy(positions).to(self.device))
                candidate_ids = self.ids[positions]
            elif admitted < len(self.ids):
                mask = np.ones(len(self.ids), dtype=bool)
                mask[positions] = False
                blocked = torch.from_numpy(mask).to(self.device)
        take = min(k, admitted)
        block = max(1, SCORE_BLOCK_BYTES // (4 * len(candidate_ids)))
        with torch.inference_mode():
            device_queries = torch.from_numpy(queries).to(device=self.device, dtype=self.dtype)
            for start in range(0, n, block):
                similarity = (device_queries[start : start + block] @ matrix.T).float()
                if blocked is not None:
                    similarity.masked_fill_(blocked, -torch.inf)
                top_scores, top_positions = _top_k(similarity, take)
                stop = start + len(similarity)
                scores[start:stop, :take] = top_scores.cpu().numpy()
                labels[start:stop, :take] = candidate_ids[top_positions.cpu().numpy()]
        return scores, labels

    def _positions(self, allowed_ids: np.ndarray) -> np.ndarray:
        """Row positions (ascending) of the allowed ids that are present."""
        allowed = np.unique(np.asarray(allowed_ids, dtype=np.int64).reshape(-1))
        positions = np.searchsorted(self.ids, allowed)
        inside = positions < len(self.ids)
        positions, allowed = positions[inside], allowed[inside]
        return positions[self.ids[positions] == allowed]


def _top_k(similarity: torch.Tensor, take: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `take` best columns of each row, best first; equal scores go to the smaller column.

    `torch.topk` orders ties arbitrarily and may pick any of the columns tied at the cut-off, so
    its selection is only kept where nothing else ties with the last score; rows with a tie across
    the cut-off are selected again exactly. Either way the chosen columns are then ordered by score,
    ties by column. Masked columns hold -inf and are never chosen (`take` is at most the admitted).
    """
    values, columns = torch.topk(similarity, take, dim=1, largest=True, sorted=True)
    cutoff = values[:, -1:]
    crowded = (similarity >= cutoff).sum(dim=1) > take
    if bool(crowded.any()):
        rows = crowded.nonzero().squeeze(1)
        tied = similarity[rows]
        above = tied > cutoff[rows]
        equal = tied == cutoff[rows]
        room = take - above.sum(dim=1, keepdim=True)
        chosen = above | (equal & (equal.cumsum(dim=1) <= room))
        # Exactly `take` columns per row are chosen; nonzero() lists them row by row, ascending.
        picked = chosen.nonzero()[:, 1].reshape(len(rows), take)
        columns = columns.clone()
        columns[rows] = picked
        values = values.clone()
        values[rows] = tied.gather(1, picked)
    # Ascending columns first, then a stable sort by score: ties keep the smaller column first.
    columns, order = columns.sort(dim=1)
    values = values.gather(1, order)
    values, order = values.sort(dim=1, descending=True, stable=True)
    return values, columns.gather(1, order)
