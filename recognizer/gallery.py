"""The gallery of enrolled faces, held in memory, and the decision rule that names faces.

Pure and single-threaded: the worker applies gallery events and matches from one thread.

Decision rule (``MatchRule``, docs/MATCHING.md): for a probe face, each enrolled person
gets one distance, aggregated over that person's photos (``min``: the nearest photo;
``mean``: the average distance; ``centroid``: the distance to the mean of the person's
encodings). The nearest person is named only when their distance is at most
``tolerance`` *and* the next ``cohort`` people are, on average, at least ``margin``
further away; otherwise the face is unknown. With ``cohort`` 1 that is the distance to
the second-nearest person. A stranger tends to sit at similar distances from several
people; an enrolled person stands out from the crowd, not just from the runner-up.

Search: exact (one matrix product) for every aggregation, except ``centroid`` once at
least ``ann_threshold`` people have a face: then an approximate index
(:mod:`recognizer.ann`) proposes candidate people and their exact distances decide.
``min`` and ``mean`` stay exact at any size (they compare every photo).
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recognizer.ann import PROBE_FRACTION, CentroidIndex
from schemas.events import UUID_PATTERN, MatchRule

DIM = 128
AGGREGATIONS = ("min", "mean", "centroid")

Floats = npt.NDArray[np.floating]
Ints = npt.NDArray[np.intp]

#: The defaults, chosen on lfw-dev with ``python -m benchmarks.matching`` (docs/MATCHING.md).
DEFAULT_TOLERANCE = 0.5
DEFAULT_MARGIN = 0.1
DEFAULT_AGGREGATION = "centroid"
DEFAULT_COHORT = 5
#: People (with at least one face) from which ``centroid`` search uses the approximate
#: index; below it exact search is faster (``python -m benchmarks.gallery_scale``). 0: never.
DEFAULT_ANN_THRESHOLD = 10_000
#: Candidates the index proposes per probe, re-ranked exactly (at least ``cohort`` + 1).
ANN_CANDIDATES = 32


_UUID = re.compile(UUID_PATTERN)
FaceKey = int | str


def _face_key(face_id: str) -> FaceKey:
    """How a face id is held: a UUID (every id the API makes) as its 128-bit number, 44
    bytes instead of 85 for the string (40 MB per 1M faces); any other id as it is.
    So the same UUID in upper and lower case is the same face."""
    if len(face_id) == 36 and _UUID.match(face_id):
        return int(face_id.replace("-", ""), 16)
    return face_id


def rule_name(aggregation: str, cohort: int) -> str:
    """``nearest-person-<agg>/v1`` for the second-nearest margin, else ``cohort-margin-<agg>/v1``."""
    if cohort == 1:
        return f"nearest-person-{aggregation}/v1"
    return f"cohort-margin-{aggregation}/v1"


def default_rule(
    tolerance: float = DEFAULT_TOLERANCE,
    margin: float = DEFAULT_MARGIN,
    aggregation: str = DEFAULT_AGGREGATION,
    cohort: int = DEFAULT_COHORT,
) -> MatchRule:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r} (one of {', '.join(AGGREGATIONS)})")
    if cohort < 1:
        raise ValueError(f"cohort must be at least 1, not {cohort}")
    return MatchRule(
        name=rule_name(aggregation, cohort),
        tolerance=tolerance,
        margin=margin,
        aggregation=aggregation,
        cohort=cohort,
    )


@dataclass(frozen=True)
class Match:
    """The decision for one face: ``person_id`` None means unknown.

    ``distance`` is to the nearest person (named or not), ``second_distance`` to the next
    one (None when the gallery holds fewer than two people), ``cohort_distance`` the mean
    distance of the next ``cohort`` people (as many as there are).
    """

    person_id: str | None
    person_name: str | None
    distance: float | None
    second_distance: float | None
    nearest_person_id: str | None = None
    cohort_distance: float | None = None


@dataclass(frozen=True)
class Nearest:
    """Per probe, before the thresholds: what the rule decides on.

    ``person`` indexes ``Gallery.person_id``; ``second`` and ``cohort`` are NaN when the
    gallery holds a single person.
    """

    person: Ints
    best: npt.NDArray[np.float64]
    second: npt.NDArray[np.float64]
    cohort: npt.NDArray[np.float64]

    def accept(self, tolerance: float, margin: float) -> npt.NDArray[np.bool_]:
        """The rule's decision for each probe (NaN cohort: a lone person needs no margin)."""
        alone = np.isnan(self.cohort)
        return (self.best <= tolerance) & (alone | (np.where(alone, 0.0, self.cohort) - self.best >= margin))


@dataclass(frozen=True)
class _Layout:
    """Rows grouped by person (for ``min`` and ``mean``), rebuilt lazily after a change."""

    order: Ints  # rows, grouped by person
    starts: Ints  # first position in ``order`` of each group
    counts: npt.NDArray[np.int64]
    person: Ints  # person index of each group


class Gallery:
    """Face encodings by person, with idempotent add/remove (keyed by face id).

    ``ann_threshold``: from this many people with a face, ``centroid`` search goes through
    the approximate index (0: always exact). Every distance reported is exact either way;
    the index can only miss a person (see docs/MATCHING.md for the measured recall).

    Memory per face: its float32 encoding (512 bytes) and its id; per person: a float32
    centroid (512 bytes) and, above the threshold, an 8-bit code in the index.
    """

    def __init__(self, ann_threshold: int = DEFAULT_ANN_THRESHOLD, ann_probe: float = PROBE_FRACTION) -> None:
        if ann_threshold < 0:
            raise ValueError(f"ann_threshold must be 0 (off) or more, not {ann_threshold}")
        if not 0 < ann_probe <= 1:
            raise ValueError(f"ann_probe must be a fraction in (0, 1], not {ann_probe}")
        self.ann_threshold = ann_threshold
        self.ann_probe = ann_probe
        self._enc = np.empty((1024, DIM), dtype=np.float32)
        self._sq = np.empty(1024, dtype=np.float32)  # squared norms, for fast distances
        self._row_person = np.empty(1024, dtype=np.int32)
        self._n = 0
        self._face_row: dict[FaceKey, int] = {}
        self._row_face: list[FaceKey] = []
        self._person_index: dict[str, int] = {}
        self._person_ids: list[str] = []
        self._layout: _Layout | None = None
        # Per person index (removed people keep theirs, with count 0): the mean of their
        # encodings, kept up to date on every add and remove in O(1), and its squared norm.
        self._pcount = np.zeros(64, dtype=np.int32)
        self._cent = np.zeros((64, DIM), dtype=np.float32)
        self._csq = np.full(64, np.inf, dtype=np.float32)  # inf: nobody (distance inf)
        self._alive = 0  # people with at least one face
        self._index: CentroidIndex | None = None
        self._dirty: set[int] = set()  # people whose centroid changed since the index saw it
        self.names: dict[str, str] = {}
        #: Offset after the last gallery event applied (set by the adapter).
        self.version = 0
        #: Bumped by every face added or removed (what a derived rule depends on).
        self.generation = 0

    def __len__(self) -> int:
        return self._n

    @property
    def people(self) -> int:
        """People with at least one face."""
        return self._alive

    @property
    def uses_index(self) -> bool:
        """Whether ``centroid`` search goes through the approximate index (after :meth:`prepare`)."""
        return self._index is not None

    def person_id(self, index: int) -> str:
        return self._person_ids[index]

    def faces(self, limit: int) -> tuple[npt.NDArray[np.float32], Ints]:
        """At most ``limit`` encodings, evenly spread over the rows (deterministic for the same
        gallery), and the person index of each."""
        rows = np.unique(np.linspace(0, self._n - 1, num=min(limit, self._n)).round().astype(np.intp))
        return self._enc[rows].copy(), self._row_person[rows].astype(np.intp)

    def set_person(self, person_id: str, name: str) -> None:
        # The person gets their index now, so names and indices share one id string.
        self.names[self._person_ids[self._pidx(person_id)]] = name

    def _pidx(self, person_id: str) -> int:
        pidx = self._person_index.get(person_id)
        if pidx is None:
            pidx = self._person_index[person_id] = len(self._person_ids)
            self._person_ids.append(person_id)
            if pidx == len(self._pcount):
                self._grow_people()
        return pidx

    def add_face(self, person_id: str, face_id: str, encoding: npt.ArrayLike) -> None:
        """Add (or replace) one encoding; re-adding the same face id changes nothing."""
        if isinstance(encoding, list) and len(encoding) == DIM:
            try:  # about 5x faster than numpy's conversion of a list (the gallery feed's case)
                vec = np.frombuffer(array("f", encoding), dtype=np.float32)
            except (TypeError, OverflowError):  # numpy's error, or its inf
                vec = np.asarray(encoding, dtype=np.float32).reshape(DIM)
        else:
            vec = np.asarray(encoding, dtype=np.float32).reshape(DIM)
        pidx = self._pidx(person_id)
        key = _face_key(face_id)
        row = self._face_row.get(key)
        if row is not None:  # a replacement: take the old encoding out of its person first
            self._account(int(self._row_person[row]), self._enc[row], -1)
        else:
            if self._n == len(self._enc):
                self._grow()
            row = self._n
            self._n += 1
            self._face_row[key] = row
            self._row_face.append(key)
        self._enc[row] = vec
        self._sq[row] = float(vec @ vec)
        self._row_person[row] = pidx
        self._account(pidx, self._enc[row], +1)
        self._layout = None
        self.generation += 1

    def remove_face(self, face_id: str) -> None:
        self._remove(_face_key(face_id))

    def _remove(self, key: FaceKey) -> None:
        row = self._face_row.pop(key, None)
        if row is None:
            return
        self._account(int(self._row_person[row]), self._enc[row], -1)
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
        self._layout = None
        self.generation += 1

    def remove_person(self, person_id: str) -> None:
        self.names.pop(person_id, None)
        pidx = self._person_index.get(person_id)
        if pidx is None or self._pcount[pidx] == 0:  # usually so: faces are erased one by one first
            return
        for row in np.flatnonzero(self._row_person[: self._n] == pidx)[::-1]:
            self._remove(self._row_face[int(row)])

    def _grow(self) -> None:
        cap = len(self._enc) * 2
        for attr in ("_enc", "_sq", "_row_person"):
            old = getattr(self, attr)
            new = np.empty((cap, *old.shape[1:]), dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, attr, new)

    def _grow_people(self) -> None:
        cap = len(self._pcount) * 2
        for attr, fill in (("_pcount", 0), ("_cent", 0.0), ("_csq", np.inf)):
            old = getattr(self, attr)
            # zeros: the new half stays unmapped (not resident) until people arrive
            new = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            if fill:
                new[len(old) :] = fill
            setattr(self, attr, new)

    def _account(self, pidx: int, vec: npt.NDArray[np.float32], sign: int) -> None:
        """Add (+1) or take out (-1) one encoding of a person: O(1) centroid upkeep.

        The running mean is kept in float32 (no float64 sum: half the memory); each
        change moves it by (vec - mean) / count, rounding by about 1e-7 of a distance,
        and a person whose last face goes starts afresh.
        """
        before = int(self._pcount[pidx])
        count = before + sign
        self._pcount[pidx] = count
        if self._index is not None:
            self._dirty.add(pidx)
        cent = self._cent[pidx]  # a view: updated in place
        if count == 0:
            self._alive -= 1
            cent[:] = 0.0
            self._csq[pidx] = np.inf
            return
        if before == 0:
            self._alive += 1
            cent[:] = vec
        else:
            cent += (vec - cent) * np.float32(sign / count)
        self._csq[pidx] = cent @ cent

    def prepare(self) -> None:
        """Bring the approximate index in step with the gallery now (matching does it too).

        Builds it once ``ann_threshold`` people have a face (and drops it below), rebuilds
        it when the gallery has doubled or halved since it was built or a quarter of the
        people changed (cheaper than one update each), and otherwise applies the changes
        since the last call. The feed calls this after loading, so that the first image
        does not wait for the build.
        """
        alive = self._alive
        if not self.ann_threshold or alive < self.ann_threshold:
            self._index = None
            self._dirty.clear()
            return
        index = self._index
        if (
            index is None
            or alive > 2 * index.built_for
            or 2 * alive < index.built_for
            or 4 * len(self._dirty) > alive
        ):
            self._index = None  # free the old one before building the new
            keys = np.flatnonzero(self._pcount[: len(self._person_ids)] > 0)
            self._index = CentroidIndex(keys, self._cent, self.ann_probe)
        elif self._dirty:
            changed = np.fromiter(self._dirty, dtype=np.int64, count=len(self._dirty))
            index.remove(changed)
            kept = changed[self._pcount[changed] > 0]
            index.upsert(kept, self._cent[kept])
        self._dirty.clear()

    def _get_layout(self) -> _Layout:
        if self._layout is None:
            persons = self._row_person[: self._n]
            order = np.argsort(persons, kind="stable").astype(np.intp)
            grouped = persons[order]
            starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]).astype(np.intp)
            self._layout = _Layout(
                order=order,
                starts=starts,
                counts=np.diff(np.r_[starts, self._n]).astype(np.int64),
                person=grouped[starts].astype(np.intp),
            )
        return self._layout

    @staticmethod
    def _euclidean(p: npt.NDArray[np.float32], enc: npt.NDArray[np.float32], sq: Floats) -> Floats:
        d2: Floats = (p * p).sum(axis=1)[:, None] + sq[None, :] - 2.0 * (p @ enc.T)
        out: Floats = np.sqrt(np.maximum(d2, 0.0))
        return out

    def distances(self, probes: npt.ArrayLike) -> Floats:
        """Euclidean distances to every encoding, shape (len(probes), len(self)), float32."""
        p = np.asarray(probes, dtype=np.float32).reshape(-1, DIM)
        return self._euclidean(p, self._enc[: self._n], self._sq[: self._n])

    def person_distances(self, probes: npt.ArrayLike, aggregation: str) -> tuple[Floats, Ints]:
        """Each probe's distance to each person, and the person index of each column.

        Always exact, whatever the size (it is the reference the index is measured against).
        """
        p = np.asarray(probes, dtype=np.float32).reshape(-1, DIM)
        if aggregation == "centroid":  # one column per person index ever seen, inf for nobody
            people = len(self._person_ids)
            per = self._euclidean(p, self._cent[:people], self._csq[:people])
            return per.astype(np.float64), np.arange(people)
        layout = self._get_layout()
        grouped = self.distances(p)[:, layout.order]
        if aggregation == "min":
            per = np.minimum.reduceat(grouped, layout.starts, axis=1).astype(np.float64)
        elif aggregation == "mean":
            per = np.add.reduceat(grouped.astype(np.float64), layout.starts, axis=1) / layout.counts
        else:
            raise ValueError(f"unknown aggregation {aggregation!r} (one of {', '.join(AGGREGATIONS)})")
        return per, layout.person

    def _nearest_centroids(self, p: npt.NDArray[np.float32], take: int) -> tuple[Floats, Ints]:
        """Exact: the ``take`` nearest centroids of each probe (distances, person indices), unsorted.

        Ranks squared distances in float32 and takes square roots of the winners only:
        the same values as :meth:`person_distances`, at a fraction of the cost.
        """
        people = len(self._person_ids)
        d2 = self._csq[:people][None, :] - 2.0 * (p @ self._cent[:people].T)
        if take < people:
            ids = np.argpartition(d2, take - 1, axis=1)[:, :take]
        else:
            ids = np.broadcast_to(np.arange(people), (len(p), people))
        pp = (p * p).sum(axis=1)[:, None]
        dist = np.sqrt(np.maximum(pp + np.take_along_axis(d2, ids, axis=1), 0.0))
        return dist.astype(np.float64), ids

    def _candidate_centroids(self, p: npt.NDArray[np.float32], take: int) -> tuple[Floats, Ints]:
        """Approximate: the index's candidates for each probe, at their exact distances."""
        assert self._index is not None
        ids = self._index.search(p, max(take, ANN_CANDIDATES))
        missing = ids < 0  # fewer candidates than asked for in the lists scanned
        ids = np.where(missing, 0, ids)
        cent = self._cent[ids]  # (probes, candidates, DIM)
        d2 = (p * p).sum(axis=1)[:, None] + self._csq[ids] - 2.0 * np.einsum("nd,nkd->nk", p, cent)
        dist = np.sqrt(np.maximum(d2, 0.0)).astype(np.float64)
        dist[missing] = np.inf
        return dist, ids

    def nearest(self, probes: npt.ArrayLike, aggregation: str, cohort: int) -> Nearest:
        """The nearest person of each probe, and the distances the margin compares it with.

        Exact: O(gallery) per probe, one matrix product (with the encodings, or with one
        centroid per person), a grouping by person for ``min`` and ``mean``, and a partial
        sort. ``centroid`` with the index in use (:meth:`prepare`): O(people / 8) per
        probe; the candidates' distances are exact, a person it does not propose is missed.
        """
        p = np.asarray(probes, dtype=np.float32).reshape(-1, DIM)
        n = len(p)
        if aggregation == "centroid":
            self.prepare()
            take = min(cohort + 1, len(self._person_ids))
            if self._index is not None:
                per, cols = self._candidate_centroids(p, take)
            else:
                per, cols = self._nearest_centroids(p, take)
        else:
            per, person = self.person_distances(p, aggregation)
            people = per.shape[1]
            take = min(cohort + 1, people)
            if take < people:
                near = np.argpartition(per, take - 1, axis=1)[:, :take]
                per = np.take_along_axis(per, near, axis=1)
            else:
                near = np.broadcast_to(np.arange(people), (n, people))
            cols = person[near]
        by = np.argsort(per, axis=1, kind="stable")[:, :take]
        vals = np.take_along_axis(per, by, axis=1)
        first = np.take_along_axis(cols, by[:, :1], axis=1)[:, 0]
        others = vals[:, 1:]
        present = np.isfinite(others)  # inf: a removed person's empty slot
        count = present.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(present, others, 0.0).sum(axis=1) / count
        nan = np.full(n, np.nan)
        return Nearest(
            person=first.astype(np.intp),
            best=vals[:, 0].astype(np.float64),
            second=np.where(count > 0, others[:, 0], nan) if others.shape[1] else nan,
            cohort=np.where(count > 0, mean, nan),
        )

    def match(self, probes: npt.ArrayLike, rule: MatchRule) -> list[Match]:
        """Apply ``rule`` to each probe encoding (rows of ``probes``)."""
        p = np.asarray(probes, dtype=np.float32).reshape(-1, DIM)
        if len(p) == 0:
            return []
        if self._n == 0:
            return [Match(None, None, None, None) for _ in range(len(p))]
        near = self.nearest(p, rule.aggregation, rule.cohort)
        accepted = near.accept(rule.tolerance, rule.margin)
        out = []
        for i in range(len(p)):
            pid = self._person_ids[int(near.person[i])]
            ok = bool(accepted[i])
            second, cohort = float(near.second[i]), float(near.cohort[i])
            out.append(
                Match(
                    person_id=pid if ok else None,
                    person_name=self.names.get(pid) if ok else None,
                    distance=round(float(near.best[i]), 4),
                    second_distance=None if np.isnan(second) else round(second, 4),
                    nearest_person_id=pid,
                    cohort_distance=None if np.isnan(cohort) else round(cohort, 4),
                )
            )
        return out
