"""Reviewing unknown faces: group them by likeness, name a group, match its images again.

Pure functions (numpy, and dlib's clustering in the enrollment process pool); the HTTP
and database work is in api/routes/review.py.

How it scales. Grouping clusters the newest ``REVIEW_WINDOW`` unknown faces (2,000 by
default) with Chinese whispers, dlib's face-clustering graph method: an edge joins two
faces closer than the threshold, so its cost is the pairs of the window (2 million
distances for 2,000 faces: well under a second, in a worker process, never in the event
loop). Older unknown faces are not clustered but are not lost either: naming a group
scans every stored unknown encoding (:func:`near`, in batches, so memory stays bounded)
and matches again every image with a face close to the group.
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


def cluster(encodings: bytes, threshold: float) -> list[int]:
    """A group label for each of the (n, 128) float32 ``encodings`` (bytes, so the process
    pool pickles one buffer), by Chinese whispers with edges under ``threshold``. Runs in
    a worker process: it imports dlib."""
    import dlib  # type: ignore[import-untyped]  # in the worker only (see the module docstring)

    vectors = np.frombuffer(encodings, dtype="<f4").reshape(-1, DIM).astype(np.float64)
    if len(vectors) == 0:
        return []
    labels: list[int] = dlib.chinese_whispers_clustering(
        [dlib.vector(v.tolist()) for v in vectors], threshold
    )
    return [int(x) for x in labels]


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
