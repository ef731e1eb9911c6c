"""The gallery of enrolled faces, held in memory, and the decision rule that names faces.

Pure and single-threaded: the worker applies gallery events and matches from one thread.

Decision rule (``MatchRule``): for a probe face, each enrolled person gets one distance,
aggregated over that person's photos (``min``: the nearest photo; ``mean``: the average).
The nearest person is named only when their distance is at most ``tolerance`` *and* the
second-nearest person is at least ``margin`` further away; otherwise the face is unknown.
The margin is what keeps strangers unknown in a large gallery: a stranger tends to sit
at similar distances from several people, an enrolled person stands out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.events import MatchRule

DIM = 128


def default_rule(tolerance: float = 0.5, margin: float = 0.0, aggregation: str = "min") -> MatchRule:
    return MatchRule(
        name=f"nearest-person-{aggregation}/v1", tolerance=tolerance, margin=margin, aggregation=aggregation
    )


@dataclass(frozen=True)
class Match:
    """The decision for one face: ``person_id`` None means unknown.

    ``distance`` is to the nearest person (named or not), ``second_distance`` to the next
    one (None when the gallery holds fewer than two people).
    """

    person_id: str | None
    person_name: str | None
    distance: float | None
    second_distance: float | None
    nearest_person_id: str | None = None


class Gallery:
    """Face encodings by person, with idempotent add/remove (keyed by face id)."""

    def __init__(self) -> None:
        self._enc = np.empty((1024, DIM), dtype=np.float32)
        self._sq = np.empty(1024, dtype=np.float32)  # squared norms, for fast distances
        self._row_person = np.empty(1024, dtype=np.int32)
        self._n = 0
        self._face_row: dict[str, int] = {}
        self._row_face: list[str] = []
        self._person_index: dict[str, int] = {}
        self._person_ids: list[str] = []
        self.names: dict[str, str] = {}
        #: Offset after the last gallery event applied (set by the adapter).
        self.version = 0

    def __len__(self) -> int:
        return self._n

    @property
    def people(self) -> int:
        return len({int(p) for p in self._row_person[: self._n]})

    def set_person(self, person_id: str, name: str) -> None:
        self.names[person_id] = name

    def add_face(self, person_id: str, face_id: str, encoding: np.ndarray | list[float]) -> None:
        """Add (or replace) one encoding; re-adding the same face id changes nothing."""
        vec = np.asarray(encoding, dtype=np.float32).reshape(DIM)
        pidx = self._person_index.get(person_id)
        if pidx is None:
            pidx = self._person_index[person_id] = len(self._person_ids)
            self._person_ids.append(person_id)
        row = self._face_row.get(face_id)
        if row is None:
            if self._n == len(self._enc):
                self._grow()
            row = self._n
            self._n += 1
            self._face_row[face_id] = row
            self._row_face.append(face_id)
        self._enc[row] = vec
        self._sq[row] = float(vec @ vec)
        self._row_person[row] = pidx

    def remove_face(self, face_id: str) -> None:
        row = self._face_row.pop(face_id, None)
        if row is None:
            return
        last = self._n - 1
        if row != last:  # move the last row into the hole
            moved = self._row_face[last]
            self._enc[row] = self._enc[last]
            self._sq[row] = self._sq[last]
            self._row_person[row] = self._row_person[last]
            self._row_face[row] = moved
            self._face_row[moved] = row
        self._row_face.pop()
        self._n = last

    def remove_person(self, person_id: str) -> None:
        self.names.pop(person_id, None)
        pidx = self._person_index.get(person_id)
        if pidx is None:
            return
        for row in np.flatnonzero(self._row_person[: self._n] == pidx)[::-1]:
            self.remove_face(self._row_face[int(row)])

    def _grow(self) -> None:
        cap = len(self._enc) * 2
        for attr in ("_enc", "_sq", "_row_person"):
            old = getattr(self, attr)
            new = np.empty((cap, *old.shape[1:]), dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, attr, new)

    def distances(self, probes: np.ndarray) -> np.ndarray:
        """Euclidean distances, shape (len(probes), len(self))."""
        enc = self._enc[: self._n]
        p = np.asarray(probes, dtype=np.float32)
        d2 = (p * p).sum(axis=1)[:, None] + self._sq[: self._n][None, :] - 2.0 * (p @ enc.T)
        return np.sqrt(np.maximum(d2, 0.0))

    def match(self, probes: np.ndarray, rule: MatchRule) -> list[Match]:
        """Apply ``rule`` to each probe encoding (rows of ``probes``)."""
        if len(probes) == 0:
            return []
        if self._n == 0:
            return [Match(None, None, None, None) for _ in range(len(probes))]
        dist = self.distances(probes)
        persons = self._row_person[: self._n]
        out = []
        for d in dist:
            if rule.aggregation == "mean":
                counts = np.bincount(persons, minlength=len(self._person_ids))
                sums = np.bincount(persons, weights=d, minlength=len(self._person_ids))
                per = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
                order = np.argsort(per)[:2]
                best_p, best = int(order[0]), float(per[order[0]])
                second = float(per[order[1]]) if len(order) > 1 and np.isfinite(per[order[1]]) else None
            else:  # min: the nearest photo of each person
                row = int(np.argmin(d))
                best_p, best = int(persons[row]), float(d[row])
                others = d[persons != best_p]
                second = float(others.min()) if len(others) else None
            pid = self._person_ids[best_p]
            accepted = best <= rule.tolerance and (second is None or second - best >= rule.margin)
            out.append(
                Match(
                    person_id=pid if accepted else None,
                    person_name=self.names.get(pid) if accepted else None,
                    distance=round(best, 4),
                    second_distance=None if second is None else round(second, 4),
                    nearest_person_id=pid,
                )
            )
        return out
