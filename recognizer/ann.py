"""Approximate nearest-centroid search for large galleries (faiss IVF, 8-bit codes).

Chosen by measurement (``python -m benchmarks.gallery_scale``, docs/MATCHING.md): on
realistic synthetic galleries an inverted-file index builds 10-20 times faster than an
HNSW graph (usearch, faiss) of the same recall, so a new replica is ready sooner; it
supports removals and re-insertions one key at a time (a person's centroid moves with
every photo added or removed), and its 8-bit codes take a quarter of the centroids'
float32 memory.

The index only proposes candidates. :class:`recognizer.gallery.Gallery` re-ranks them
with exact distances to the float32 centroids, so every distance it reports is exact;
only a person the index fails to propose can be missed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

DIM = 128
#: Share of the inverted lists scanned per probe. At 10k and 33k people, 1/4 found the
#: exact nearest person for every enrolled face (synthetic and real lfw-dev probes) and
#: changed 1 decision in 1000 synthetic probes; 1/8 was 1.6x faster but changed 4-5.
PROBE_FRACTION = 1 / 4
#: k-means on at most this many vectors per list, for this many rounds: enough for a
#: coarse partition (scanning 1/4 of it hides its imperfections) at a few seconds per 1M faces.
TRAIN_PER_LIST = 40
TRAIN_ROUNDS = 8

Keys = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]


def lists_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: 2 sqrt(n), between 16 and 640.

    A probe scans a fixed share of the lists, so their number barely changes its cost.
    More lists find more of the cohort at 10k-33k people (top-6 exact for 94% of probes
    at 33k with 365 lists, 89% with 183); past about 100k people, 577 lists did as well
    as 1155 and built in half the time (5 s at 333k people), which counts at load.
    """
    return int(min(640, max(16, round(2 * math.sqrt(max(n, 1))))))


def _faiss() -> Any:
    import faiss

    return faiss


class CentroidIndex:
    """One vector per integer key; ``search`` proposes the nearest keys (approximately).

    Built once from all current vectors (k-means picks the lists); then :meth:`upsert`
    and :meth:`remove` keep it current. The partition is not re-learnt on updates:
    the owner rebuilds when the gallery has changed size a lot (``built_for``).
    Single-threaded by design: each recognizer process owns one core.
    """

    def __init__(self, keys: Keys, vectors: Vectors, probe_fraction: float = PROBE_FRACTION) -> None:
        """Index ``vectors[keys]`` under ``keys`` (rows of ``vectors`` are read in chunks,
        so building needs no copy of them all)."""
        faiss = _faiss()
        faiss.omp_set_num_threads(1)
        keys = np.asarray(keys, dtype=np.int64)
        n = len(keys)
        if n == 0:
            raise ValueError("an index needs at least one vector")
        self.built_for = n
        self.lists = min(lists_for(n), n)
        quantizer = faiss.IndexFlatL2(DIM)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, DIM, self.lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2
        )
        index.cp.niter = TRAIN_ROUNDS
        index.cp.seed = 1234  # the same gallery always gets the same partition
        index.cp.min_points_per_centroid = 1  # a small sample is deliberate: no warning
        index.cp.max_points_per_centroid = 1 << 30
        take = min(n, self.lists * TRAIN_PER_LIST)
        sample = keys if take == n else np.sort(np.random.default_rng(0).choice(keys, take, replace=False))
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        # A hash map from key to list position: removing a key costs O(1), not a scan.
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        # A few thousand at a time: the vectors and faiss's list assignment for them
        # (lists x rows floats) stay small next to the gallery, not 170 MB at 1M faces.
        for start in range(0, n, 4096):
            chunk = keys[start : start + 4096]
            index.add_with_ids(np.ascontiguousarray(vectors[chunk], dtype=np.float32), chunk)
        index.nprobe = max(1, math.ceil(self.lists * probe_fraction))
        self._index = index
        self._quantizer = quantizer  # the index holds a raw pointer to it: keep it alive

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def nprobe(self) -> int:
        return int(self._index.nprobe)

    def remove(self, keys: Keys) -> None:
        """Remove ``keys`` (absent ones are ignored)."""
        ids = np.ascontiguousarray(keys, dtype=np.int64)
        if len(ids):
            faiss = _faiss()
            self._index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))

    def upsert(self, keys: Keys, vectors: Vectors) -> None:
        """Insert or replace the vectors of ``keys`` (each key at most once)."""
        ids = np.ascontiguousarray(keys, dtype=np.int64)
        self.remove(ids)  # faiss would otherwise keep both the old and the new vector
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, DIM), ids)

    def search(self, probes: Vectors, k: int) -> Keys:
        """Up to ``k`` candidate keys per probe, shape (len(probes), k); -1 pads."""
        _, ids = self._index.search(np.ascontiguousarray(probes, dtype=np.float32).reshape(-1, DIM), k)
        out: Keys = ids.astype(np.int64, copy=False)
        return out
