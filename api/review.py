"""Reviewing unknown faces: group them by likeness, name a group, match its images again.

Pure functions (numpy and plain Python: the API does not load dlib); the HTTP and
database work is in api/routes/review.py.

How it scales. Grouping clusters the newest ``REVIEW_WINDOW`` unknown faces (2,000 by
default) with Chinese whispers, the graph method dlib offers for clustering faces
(:func:`cluster`): an edge joins two faces closer than the threshold, so its cost is the
pairs of the window (2 million distances for 2,000 faces: well under a second, in a
thread, never in the event loop). Older unknown faces are not clustered but are not lost
either: naming a group scans every stored unknown encoding (:func:`near`, in batches, so
memory stays bounded) and matches again every image with a face close to the group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from schemas.encoding import DIM

Matrix = npt.NDArray[np.float32]


def as_matrix(encodings: Sequence[bytes]) -> Matrix:
    """Stored encodings (512-byte float32) as an (n, 128) matrix."""
    if not encodings:
        return np.empty((0, DIM), dtype=np.float32)
    return np.frombuffer(b"".join(encodings), dtype="<f4").reshape(len(encodings), DIM)


#: Sweeps of Chinese whispers at most (dlib's default: 100 node visits per node).
WHISPER_SWEEPS = 100
#: Rows of the distance matrix computed at once (bounds memory for a large window).
_BLOCK = 1024


def cluster(encodings: bytes, threshold: float, seed: int = 0) -> list[int]:
    """A group label for each of the (n, 128) float32 ``encodings`` (their bytes, as stored)
    by Chinese whispers over the graph whose edges join faces closer than ``threshold``.

    The algorithm of dlib's ``chinese_whispers_clustering`` (Biemann 2006; every face its
    own label at first, each edge of weight 1 and every face its own neighbour; a face
    visited takes the label most of its neighbours carry, the smallest on a tie), visiting
    the faces in a random order per sweep (seeded: the same input gives the same groups)
    until a sweep changes nothing, or after :data:`WHISPER_SWEEPS`. Labels are arbitrary
    numbers; only which faces share one matters.
    """
    vectors = np.frombuffer(encodings, dtype="<f4").reshape(-1, DIM).astype(np.float64)
    neighbours = _neighbours(vectors, threshold)
    labels = list(range(len(vectors)))
    order = np.arange(len(vectors))
    rng = np.random.default_rng(seed)
    for _sweep in range(WHISPER_SWEEPS):
        rng.shuffle(order)
        changed = False
        for node in order.tolist():
            votes: dict[int, int] = defaultdict(int)
            for other in neighbours[node]:
                votes[labels[other]] += 1
            best = min(votes, key=lambda label: (-votes[label], label))
            if best != labels[node]:
                labels[node], changed = best, True
        if not changed:
            break
    return labels


def _neighbours(vectors: npt.NDArray[np.float64], threshold: float) -> list[list[int]]:
    """For each vector, the positions of those closer than ``threshold`` (itself included)."""
    found: list[list[int]] = []
    sq = (vectors * vectors).sum(1)
    for start in range(0, len(vectors), _BLOCK):
        block = vectors[start : start + _BLOCK]
        # |a-b|^2 = |a|^2 + |b|^2 - 2ab, in one matrix product per block of rows.
        d2 = sq[start : start + _BLOCK, None] + sq[None, :] - 2.0 * (block @ vectors.T)
        close = d2 < threshold * threshold
        close[np.arange(len(block)), np.arange(start, start + len(block))] = True
        found += [np.flatnonzero(row).tolist() for row in close]
    return found


def groups(labels: Sequence[int]) -> list[list[int]]:
    """The positions of each label's members, largest group first (ties: the group whose
    first member comes first, i.e. the newest face when the input is newest first)."""
    members: dict[int, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        members[label].append(position)
    return sorted(members.values(), key=lambda m: (-len(m), m[0]))


def representatives(encodings: Matrix, k: int) -> list[int]:
    """Up to ``k`` positions of ``encodings`` to enroll for a group: the ones nearest its
    centroid first (the group's typical look, not its outliers)."""
    if len(encodings) == 0:
        return []
    centroid = encodings.mean(axis=0)
    order = np.argsort(np.linalg.norm(encodings - centroid, axis=1), kind="stable")
    return [int(i) for i in order[:k]]


def near(candidates: Matrix, probes: Matrix, radius: float) -> npt.NDArray[np.bool_]:
    """Which ``candidates`` lie within ``radius`` (Euclidean) of any of ``probes``."""
    if len(candidates) == 0 or len(probes) == 0:
        return np.zeros(len(candidates), dtype=bool)
    # |a-b|^2 = |a|^2 + |b|^2 - 2ab, in one matrix product.
    c = candidates.astype(np.float32)
    p = probes.astype(np.float32)
    sq = (c * c).sum(1)[:, None] + (p * p).sum(1)[None, :] - 2.0 * (c @ p.T)
    return np.asarray((sq <= radius * radius).any(axis=1))
