"""FAISS vector indexes keyed by catalog ids, never by positions.

Every kind answers inner-product queries over L2-normalised ITC vectors, so a score is a cosine
similarity. Ids are the catalog's own keys: `IndexIDMap2` around Flat and HNSW, and the inverted
lists' own ids (with a hashtable direct map) for IVF, because wrapping an IVF index in an id map
breaks `remove_ids` (the map is compacted by position while the lists keep the old positions).

Deletes: Flat and IVF remove ids in place. HNSW cannot remove graph nodes, so a deleted entry
becomes a tombstone (its id rewritten to a negative number that no query admits) and the writer
rebuilds the index once tombstones pass `COMPACT_FRACTION` of it.

The kind to build, and its spec, come from `index_spec.py`.

Exact search on an accelerator (`VectorIndex.use_device`): a Flat index given a CUDA device answers
queries from a device copy of its vectors, FAISS's own GPU index where this faiss build has one,
else a `TorchExactSearch` (float16 torch matrix); the copy is built on the first query and dropped
by every add or remove. On CPU, and for the approximate kinds, searches stay in FAISS on the CPU.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

import faiss as _faiss
import numpy as np

from blipsearch.storage.index_spec import HNSW_M, MIN_TRAINING_VECTORS, IndexSpec
from blipsearch.storage.top_k import empty_results

if TYPE_CHECKING:
    import torch

faiss: Any = _faiss  # the stubs faiss ships lack most of its SWIG API

SearchBackend = Literal["auto", "torch", "faiss"]
HNSW_EF_CONSTRUCTION = 200
"""FAISS's default (40) loses a quarter of recall@10 on hard data; builds are rare, queries are not."""
MAX_TRAINING_PER_LIST = 256
COMPACT_FRACTION = 0.2
GROWTH_BEFORE_RETRAIN = 4
"""An IVF index trained on n vectors is rebuilt (retrained) once it holds this many times n."""
BRUTE_FORCE_LIMIT = 20_000
"""A filter admitting at most this many ids is answered exactly from the stored vectors."""
DEFAULT_EF_SEARCH = 128
DEFAULT_NPROBE_FRACTION = 0.05
FAISS_GPU_MAX_K = 2048
"""The largest k FAISS's GPU k-selection takes; a deeper query is answered on the CPU."""
_SAMPLE_SEED = 1234


class VectorIndex:
    """One FAISS index of unit vectors whose ids are catalog keys; add is an upsert."""

    def __init__(self, spec: IndexSpec, index: Any) -> None:
        self.spec = spec
        self._index = index
        self._tombstones = int((self._stored_ids() < 0).sum()) if spec.kind == "hnsw" else 0
        self._accelerator: Literal["torch", "faiss"] | None = None
        self._search_device: torch.device | None = None
        self._device_copy: Any = None
        """The accelerator's copy of the vectors, built by the first search after a change."""

    @property
    def dim(self) -> int:
        return self.spec.dim

    def use_device(self, device: torch.device | str | None, *, backend: SearchBackend = "auto") -> None:
        """Answer this index's exact searches on `device` (None: FAISS on the CPU, the default).

        Only the Flat kind is accelerated: the approximate kinds trade exactness for speed on the
        CPU and stay in FAISS, as does every index given a CPU device. With `backend="auto"` a CUDA
        device gets FAISS's own GPU index (`index_cpu_to_all_gpus`, or the numbered GPU) when this
        faiss build has GPU support, else a `TorchExactSearch`; filtered queries, and ones deeper
        than `FAISS_GPU_MAX_K`, go to the CPU paths under FAISS GPU. `backend="torch"` forces the
        torch path on any device (tests run it on CPU); `backend="faiss"` requires FAISS GPU.
        """
        import torch

        self._accelerator, self._search_device, self._device_copy = None, None, None
        if device is None or self.spec.kind != "flat":
            return
        device = torch.device(device)
        if backend == "auto":
            if device.type != "cuda":
                return
            backend = "faiss" if faiss_has_gpu() else "torch"
        if backend == "faiss" and (device.type != "cuda" or not faiss_has_gpu()):
            raise ValueError(f"FAISS GPU search needs a CUDA device and faiss with GPU support, not {device}")
        self._accelerator, self._search_device = backend, device

    @property
    def search_device(self) -> torch.device | None:
        """Where exact searches run when not on the CPU through FAISS (see `use_device`)."""
        return self._search_device

    @property
    def accelerator(self) -> Literal["torch", "faiss"] | None:
        return self._accelerator

    @classmethod
    def build(cls, spec: IndexSpec, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        """A new index holding exactly these vectors; trained kinds train on a sample of them."""
        ids, vectors = _checked(spec.dim, ids, vectors)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("build() was given the same id more than once")
        index = cls(spec, _empty(spec))
        if spec.kind in ("ivf", "ivfpq"):
            ivf = index._index
            if len(vectors) < max(MIN_TRAINING_VECTORS, 2**spec.pq_bits if spec.kind == "ivfpq" else 1):
                raise ValueError(f"{spec.factory_string()} needs more training vectors than {len(vectors)}")
            ivf.train(_training_sample(vectors, spec.nlist))
        index._add_new(ids, vectors)
        return index

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace: an id already present is removed first, so no id appears twice."""
        ids, vectors = _checked(self.dim, ids, vectors)
        if not len(ids):
            return
        unique, last = np.unique(ids[::-1], return_index=True)
        if len(unique) != len(ids):  # keep the last vector given for a repeated id
            keep = np.sort(len(ids) - 1 - last)
            ids, vectors = ids[keep], vectors[keep]
        self.remove(ids)
        self._add_new(ids, vectors)

    def remove(self, ids: np.ndarray) -> int:
        """Delete these ids where present; returns how many were removed (tombstoned for HNSW)."""
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        ids = ids[ids >= 0]
        if not len(ids) or self._index.ntotal == 0:
            return 0
        if self.spec.kind == "hnsw":
            return self._tombstone(ids)
        if self.spec.kind == "flat":
            removed = int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
        else:
            # The IVF hashtable direct map only removes through an id array.
            removed = int(self._index.remove_ids(faiss.IDSelectorArray(np.unique(ids))))
        if removed:
            self._device_copy = None
        return removed

    def _add_new(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._index.add_with_ids(vectors, ids)
            self._device_copy = None

    def _tombstone(self, ids: np.ndarray) -> int:
        id_map = faiss.vector_to_array(self._index.id_map)
        hit = np.isin(id_map, ids)
        count = int(hit.sum())
        if count:
            positions = np.flatnonzero(hit)
            id_map[positions] = -1 - positions  # unique, and never admitted by a query
            faiss.copy_array_to_vector(id_map, self._index.id_map)
            self._index.construct_rev_map()
            self._tombstones += count
        return count

    def _stored_ids(self) -> np.ndarray:
        """Every stored id in storage order, tombstones (negative) included."""
        if self.spec.kind in ("flat", "hnsw"):
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        invlists = self._index.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(list_no), invlists.list_size(list_no)).copy()
            for list_no in range(invlists.nlist)
            if invlists.list_size(list_no)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every live id and its stored vector (lossy for IVF-PQ), in storage order, read in bulk."""
        stored = self._stored_ids()
        if self.spec.kind in ("flat", "hnsw"):
            # The id map's positions are the wrapped index's: one positional read of its storage.
            vectors = faiss.downcast_index(self._index.index).reconstruct_n(0, len(stored))
        elif len(stored):
            vectors = self._index.reconstruct_batch(stored)
        else:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        live = stored >= 0
        return stored[live], np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)[live]

    def ids(self) -> np.ndarray:
        """Live ids, sorted."""
        stored = self._stored_ids()
        return np.sort(stored[stored >= 0])

    def id_occurrences(self) -> dict[int, int]:
        """How often each live id is stored: anything above 1 is a corrupt index."""
        stored = self._stored_ids()
        return dict(Counter(stored[stored >= 0].tolist()))

    @property
    def tombstone_count(self) -> int:
        return self._tombstones

    @property
    def needs_compaction(self) -> bool:
        total = self._index.ntotal
        return total > 0 and self.tombstone_count > COMPACT_FRACTION * total

    def __len__(self) -> int:
        return int(self._index.ntotal) - self.tombstone_count

    def vector(self, vector_id: int) -> np.ndarray:
        """`VectorCollection.vector`: the stored vector of one id, KeyError when absent."""
        return self.reconstruct(vector_id)

    def reconstruct(self, vector_id: int) -> np.ndarray:
        """The stored vector of an id (lossy for IVF-PQ); KeyError if absent."""
        if vector_id < 0:
            raise KeyError(vector_id)
        try:
            return np.asarray(self._index.reconstruct(int(vector_id)), dtype=np.float32)
        except RuntimeError as exc:
            raise KeyError(vector_id) from exc

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: (scores, ids), padded with -inf and -1 where fewer exist.

        With `allowed_ids`, results come only from that set. A small set is answered exactly
        from the stored vectors; a larger one goes through a FAISS id selector, and if the
        approximate search then returns fewer than k hits while more are allowed, the query is
        answered exactly instead, so a filter never silently shortens the result list. A Flat index
        given a device (`use_device`) answers from its device copy instead, with the same contract.
        """
        queries, scores, labels = empty_results(queries, self.dim, k)
        n = len(queries)
        if self._index.ntotal == 0 or n == 0:
            return scores, labels
        allowed: np.ndarray | None = None
        if allowed_ids is not None:
            allowed = np.unique(np.asarray(allowed_ids, dtype=np.int64))
            allowed = allowed[allowed >= 0]
            if not len(allowed):
                return scores, labels
        if self._accelerator == "torch":
            return self._device_index().search(queries, k, allowed)
        if allowed is not None and (len(allowed) <= BRUTE_FORCE_LIMIT or self.spec.kind == "flat"):
            return self._exact(queries, k, allowed)
        selector: Any = faiss.IDSelectorBatch(allowed) if allowed is not None else None
        if selector is None and self.spec.kind == "hnsw" and self.tombstone_count:
            selector = faiss.IDSelectorRange(0, np.iinfo(np.int64).max)
        params = self._search_parameters(selector, nprobe, ef_search)
        kk = min(k, int(self._index.ntotal))
        searched = self._index
        if self._accelerator == "faiss" and params is None and kk <= FAISS_GPU_MAX_K:
            searched = self._device_index()
        found_scores, found_ids = searched.search(queries, kk, params=params)
        found_scores = np.where(found_ids >= 0, found_scores, -np.inf).astype(np.float32)
        scores[:, :kk], labels[:, :kk] = found_scores, found_ids
        if allowed is not None:
            short = (labels >= 0).sum(axis=1) < min(k, len(allowed))
            if short.any():
                exact_scores, exact_ids = self._exact(queries[short], k, allowed)
                scores[short], labels[short] = exact_scores, exact_ids
        return scores, labels

    def _device_index(self) -> Any:
        """The accelerator's copy of the current vectors, built now if a change dropped it."""
        if self._device_copy is None:
            device = self._search_device
            assert device is not None
            if self._accelerator == "torch":
                from blipsearch.storage.exact import TorchExactSearch

                self._device_copy = TorchExactSearch.from_index(self, device)
            elif device.index is None:
                self._device_copy = faiss.index_cpu_to_all_gpus(self._index)
            else:
                resources = faiss.StandardGpuResources()
                self._device_copy = faiss.index_cpu_to_gpu(resources, device.index, self._index)
                self._device_copy.referenced_objects = [resources]  # keep it alive with the index
        return self._device_copy

    def _search_parameters(self, selector: Any, nprobe: int | None, ef_search: int | None) -> Any:
        if self.spec.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=ef_search or DEFAULT_EF_SEARCH)
        if self.spec.kind in ("ivf", "ivfpq"):
            probes = nprobe or max(
                1, math.ceil(self.spec.nlist * DEFAULT_NPROBE_FRACTION), min(8, self.spec.nlist)
            )
            return faiss.SearchParametersIVF(sel=selector, nprobe=min(probes, self.spec.nlist))
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _exact(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        present = np.intersect1d(allowed, self.ids(), assume_unique=True)
        n = len(queries)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        labels = np.full((n, k), -1, dtype=np.int64)
        if not len(present):
            return scores, labels
        vectors = np.stack([self.reconstruct(int(i)) for i in present])
        similarity = queries @ vectors.T
        take = min(k, len(present))
        # Ties go to the smaller id, so equal scores always come back in the same order.
        order = np.lexsort((np.broadcast_to(present, similarity.shape), -similarity), axis=1)[:, :take]
        scores[:, :take] = np.take_along_axis(similarity, order, axis=1)
        labels[:, :take] = present[order]
        return scores, labels

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def from_bytes(cls, spec: IndexSpec, data: bytes) -> VectorIndex:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if index.d != spec.dim:
            raise ValueError(f"index file holds {index.d}-d vectors, its manifest says {spec.dim}")
        return cls(spec, index)


def _empty(spec: IndexSpec) -> Any:
    metric = faiss.METRIC_INNER_PRODUCT
    if spec.kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(spec.dim))
    if spec.kind == "hnsw":
        graph = faiss.IndexHNSWFlat(spec.dim, spec.hnsw_m or HNSW_M, metric)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return faiss.IndexIDMap2(graph)
    quantizer = faiss.IndexFlatIP(spec.dim)
    ivf: Any
    if spec.kind == "ivf":
        ivf = faiss.IndexIVFFlat(quantizer, spec.dim, spec.nlist, metric)
    else:
        ivf = faiss.IndexIVFPQ(quantizer, spec.dim, spec.nlist, spec.pq_m, spec.pq_bits, metric)
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    return ivf


def faiss_has_gpu() -> bool:
    """Whether this faiss build can place indexes on a GPU (faiss-gpu) and sees one."""
    return hasattr(faiss, "StandardGpuResources") and int(faiss.get_num_gpus()) > 0


def _training_sample(vectors: np.ndarray, nlist: int) -> np.ndarray:
    limit = max(MAX_TRAINING_PER_LIST * nlist, 10_000)
    if len(vectors) <= limit:
        return vectors
    rows = np.random.default_rng(_SAMPLE_SEED).choice(len(vectors), size=limit, replace=False)
    return vectors[np.sort(rows)]


def _checked(dim: int, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
    vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, dim))
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    if len(ids) and ids.min() < 0:
        raise ValueError("vector ids must be non-negative catalog keys")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinity")
    return ids, vectors
