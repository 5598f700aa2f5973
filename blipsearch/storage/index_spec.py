"""Which FAISS index to build for n vectors under a memory budget, and the spec that records it.

The automatic kind rule (`choose_index_spec`), for n vectors of dimension d and a memory budget B:
  * n < `EXACT_LIMIT` (50,000): Flat, exact; a scan of 50k x 256 floats takes milliseconds.
  * HNSW (M=32) if its memory, n * (4d + 8M) bytes, fits in B: best recall per millisecond.
  * IVF-Flat if the raw vectors, n * (4d + 8) bytes, fit in B: exact vectors, probed lists.
  * IVF-PQ otherwise: d/8 sub-quantizers of 8 bits, d/8 + 8 bytes per vector.
IVF kinds use nlist = 4 * sqrt(n) lists (at most n / 39 so k-means has enough points per list) and
train on a sample of at most 256 points per list. An explicit kind is honoured at any size; a
trained kind with fewer than `MIN_TRAINING_VECTORS` vectors is built as Flat until it has more.


The spec is stored in each generation's manifest (`snapshots.py`), so loading an index never
re-applies the rule; `vectors.py` builds and searches what a spec names.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

IndexKind = Literal["flat", "hnsw", "ivf", "ivfpq"]
RequestedKind = Literal["auto", "flat", "hnsw", "ivf", "ivfpq"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)

EXACT_LIMIT = 50_000
HNSW_M = 32
MIN_TRAINING_VECTORS = 8


@dataclass(frozen=True)
class IndexSpec:
    """What to build; stored in each generation's manifest so a load needs no guessing."""

    kind: IndexKind
    dim: int
    nlist: int = 0
    pq_m: int = 0
    pq_bits: int = 0
    hnsw_m: int = 0
    trained_on: int = 0

    def factory_string(self) -> str:
        """The equivalent `faiss.index_factory` description, for logs and reports."""
        if self.kind == "flat":
            return "IDMap2,Flat"
        if self.kind == "hnsw":
            return f"IDMap2,HNSW{self.hnsw_m},Flat"
        if self.kind == "ivf":
            return f"IVF{self.nlist},Flat"
        return f"IVF{self.nlist},PQ{self.pq_m}x{self.pq_bits}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        if data.get("kind") not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {data.get('kind')!r}")
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**fields)


def estimated_bytes(kind: IndexKind, count: int, dim: int) -> int:
    """Resident memory of an index of this kind, for the budget rule (ids included)."""
    if kind == "flat":
        return count * (4 * dim + 16)
    if kind == "hnsw":
        return count * (4 * dim + 8 * HNSW_M + 16)
    if kind == "ivf":
        return count * (4 * dim + 8) + 4 * dim * _nlist(count)
    return count * (_pq_m(dim) + 8) + 4 * dim * _nlist(count) + 4 * dim * 256


def choose_index_spec(
    count: int, dim: int, *, memory_budget_bytes: int, requested: RequestedKind = "auto"
) -> IndexSpec:
    """The index for `count` vectors: the documented automatic rule, or the requested kind."""
    kind: IndexKind
    if requested != "auto":
        kind = requested
    elif count < EXACT_LIMIT:
        kind = "flat"
    elif estimated_bytes("hnsw", count, dim) <= memory_budget_bytes:
        kind = "hnsw"
    elif estimated_bytes("ivf", count, dim) <= memory_budget_bytes:
        kind = "ivf"
    else:
        kind = "ivfpq"
    if kind in ("ivf", "ivfpq") and count < MIN_TRAINING_VECTORS:
        kind = "flat"
    if kind == "flat":
        return IndexSpec("flat", dim)
    if kind == "hnsw":
        return IndexSpec("hnsw", dim, hnsw_m=HNSW_M)
    nlist = _nlist(count)
    if kind == "ivf":
        return IndexSpec("ivf", dim, nlist=nlist, trained_on=count)
    # PQ codebooks need at least 2**bits training points per sub-quantizer.
    bits = max(1, min(8, int(math.log2(count))))
    return IndexSpec("ivfpq", dim, nlist=nlist, pq_m=_pq_m(dim), pq_bits=bits, trained_on=count)


def _nlist(count: int) -> int:
    return max(1, min(round(4 * math.sqrt(max(count, 1))), count // 39))


def _pq_m(dim: int) -> int:
    """Sub-quantizers of about 8 dimensions each; `dim` must divide evenly."""
    target = max(1, dim // 8)
    return next(m for m in range(target, 0, -1) if dim % m == 0)
