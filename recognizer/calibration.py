"""The decision rule derived from a stated false-accept rate, for the gallery as it is now.

An operator states ``MATCH_FALSE_ACCEPT``: the share of strangers' faces (people who are
not enrolled) that may be given a name. A stranger's chance to land near *somebody* grows
with the number of people enrolled, so no fixed tolerance and margin hold one rate at every
gallery size (docs/MATCHING.md, "A stated false-accept rate"). :func:`derive` sets the
rule's ``tolerance`` and ``margin`` for the gallery in hand:

1. **Strangers, from the gallery alone** (:class:`Impostors`). Each enrolled face, matched
   against the gallery without its own person, is a stranger's face (leave one person
   out): its distances to the nearest people are what a stranger's would be. When these
   faces are enough to see the target (``faces x target >= LOO_EVENTS``) they are used as
   they are. In a smaller gallery they are too few, and a model fitted to the same
   distances is simulated instead: distance = mean + probe effect + residual, where the
   probe effect (some faces sit near everybody) is shared by all N people, and each probe's
   residuals have their own spread.
2. **The best rule within the target.** For each margin, the largest tolerance whose
   estimated rate is within the target; of these, the one that names the most known faces,
   a known face being a distance drawn from dlib's genuine distances (``GENUINE_*``)
   against the same strangers' nearest people (it must be nearer than all of them, within
   the tolerance, and the margin below the mean of the ``cohort`` nearest).

Deterministic: the same gallery (the same faces in the same order, as every replica reads
them from the gallery topic) gives the same rule on every recognizer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recognizer.gallery import Gallery, default_rule
from schemas.events import MatchRule

Floats = npt.NDArray[np.float64]

#: ``MATCH_FALSE_ACCEPT``'s default: about 1 stranger's face in 100 may be named.
DEFAULT_FALSE_ACCEPT = 0.01
#: The rules searched: tolerances up to ``MAX_TOLERANCE`` (the fixed rule's), margins up
#: to ``MAX_MARGIN``, by ``STEP`` (distance units). Above 0.50 look-alike strangers come
#: faster than known faces, and the model is least sure of them (docs/MATCHING.md).
MIN_TOLERANCE, MAX_TOLERANCE, MAX_MARGIN, STEP = 0.30, 0.50, 0.20, 0.005
#: The leave-one-out faces are used once they expect at least this many named strangers.
LOO_EVENTS = 10
#: A face nearer than this to another enrolled person is taken for that person enrolled
#: again, and left out of the strangers (lfw-dev and lfw-distractors: the nearest two
#: different people's faces come is 0.34, apart from three pairs under 0.24 that are one
#: person twice).
DUPLICATE_DISTANCE = 0.3
#: Faces used as leave-one-out strangers at most (evenly spread over the gallery): the
#: estimate's cost is this many rows of person distances.
MAX_PROBES = 2000
#: Strangers simulated by the model.
SIMULATED = 20_000
#: Fewer people than this give no usable spread: the model's parameters below are used.
MIN_PEOPLE = 5
#: The model's parameters on lfw-dev and lfw-distractors (centroid distances, dlib's
#: encoder; the same at every size from 100 to 2,800 people): mean distance to another
#: person, the probe effect's and the residual's standard deviations, and the log-spread of
#: the residual's scale across probes. The spread is noisy in a small gallery (its
#: estimate's own variance is 2/(people - 2)), so it is never taken below this.
PRIOR_MEAN, PRIOR_PROBE_SD, PRIOR_RESIDUAL_SD, MIN_SCALE_SPREAD = 0.80, 0.035, 0.082, 0.2
#: A known face's distance to its person's centroid (lfw-dev, one enrollment photo: mean
#: and standard deviation): what the choice between rules within the target maximises.
GENUINE_MEAN, GENUINE_SD = 0.425, 0.080


def normal_quantile(u: Floats) -> Floats:
    """Φ⁻¹ of each of ``u`` (in (0, 1)), vectorised: Acklam's rational approximation
    (relative error below 1.2e-9), so that no statistics library is needed."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)  # fmt: skip
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    u = np.asarray(u, dtype=np.float64)
    out = np.empty_like(u)
    low, high = u < 0.02425, u > 1 - 0.02425
    mid = ~(low | high)
    q = u[mid] - 0.5
    r = q * q
    out[mid] = (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )
    for side, sign in ((low, 1.0), (high, -1.0)):
        t = np.sqrt(-2 * np.log(np.where(sign > 0, u[side], 1 - u[side])))
        out[side] = (
            sign
            * (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5])
            / ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1)
        )
    return out


@dataclass(frozen=True)
class Impostors:
    """What the gallery says about strangers: for each leave-one-out face, its distances to
    the nearest other people (ascending, ``inf`` past the last), and the model fitted to
    all its distances to other people."""

    people: int
    nearest: Floats  # faces x (cohort + 1)
    mean: float
    probe_sd: float
    residual_sd: float
    scale_spread: float

    def simulate(self, take: int, n: int = SIMULATED, seed: int = 0) -> Floats:
        """``n`` simulated strangers' distances to their ``take`` nearest of ``people`` people."""
        rng = np.random.default_rng(seed)
        take = min(take, self.people)
        # The smallest ``take`` of ``people`` uniform draws, from exponential spacings.
        steps = np.cumsum(rng.exponential(size=(n, take)), axis=1)
        rest = self.people + 1 - take
        total = steps[:, -1] + (rng.gamma(rest, size=n) if rest > 0 else 0.0)
        z = normal_quantile(np.clip(steps / total[:, None], 1e-300, 1 - 1e-16))
        s2 = self.scale_spread**2
        scale = np.exp(self.scale_spread * rng.standard_normal(n) - s2 / 2)
        probe = self.mean + self.probe_sd * rng.standard_normal(n)
        return probe[:, None] + z * (self.residual_sd * scale)[:, None]


def impostors(gallery: Gallery, aggregation: str, cohort: int, max_probes: int = MAX_PROBES) -> Impostors:
    """Leave-one-out strangers from ``gallery``'s own faces (at most ``max_probes``, evenly
    spread), and the model fitted to their distances. Needs at least one face."""
    faces, owner = gallery.faces(max_probes)
    people = gallery.people
    take = cohort + 1
    chunk = max(1, 4_000_000 // max(1, people))  # rows of person distances held at once
    nearest, means, variances = [], [], []
    for start in range(0, len(faces), chunk):
        per, column_person = gallery.person_distances(faces[start : start + chunk], aggregation)
        column = np.full(int(column_person.max()) + 1, -1)
        column[column_person] = np.arange(len(column_person))
        per[np.arange(len(per)), column[owner[start : start + chunk]]] = np.inf  # its own person out
        near = np.sort(np.partition(per, min(take, per.shape[1]) - 1, axis=1)[:, :take], axis=1)
        if near.shape[1] < take:  # fewer people than the cohort: nobody there
            near = np.hstack([near, np.full((len(near), take - near.shape[1]), np.inf)])
        nearest.append(near)
        live = np.where(np.isfinite(per), per, np.nan)
        with warnings.catch_warnings():  # a row with one other person has no variance: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            means.append(np.nanmean(live, axis=1))
            variances.append(np.nanvar(live, axis=1, ddof=1))
    near_all = np.vstack(nearest).astype(np.float64)
    m, v = np.concatenate(means), np.concatenate(variances)
    # A face this near another enrolled person is that person enrolled twice (the same
    # photo under two names, a look-alike test entry), not a stranger: it says nothing of
    # how near strangers come, and its one near-zero distance would swell its row's spread.
    alike = near_all[:, 0] < DUPLICATE_DISTANCE
    if alike.any() and not alike.all():
        near_all, m, v = near_all[~alike], m[~alike], v[~alike]
    others = people - 1
    if people < MIN_PEOPLE or not np.all(np.isfinite(v)) or np.any(v <= 0):
        return Impostors(people, near_all, PRIOR_MEAN, PRIOR_PROBE_SD, PRIOR_RESIDUAL_SD, MIN_SCALE_SPREAD)
    residual_var = float(v.mean())
    probe_var = max(float(m.var()) - residual_var / others, 0.0)
    spread_var = max(float(np.log(v).var()) - 2.0 / (others - 1), 0.0)
    return Impostors(
        people=people,
        nearest=near_all,
        mean=float(m.mean()),
        probe_sd=math.sqrt(probe_var),
        residual_sd=math.sqrt(residual_var),
        scale_spread=max(math.sqrt(spread_var), MIN_SCALE_SPREAD),
    )


@dataclass(frozen=True)
class Derived:
    tolerance: float
    margin: float
    estimate: float  # the false-accept rate estimated for them
    method: str  # "leave-one-out" or "model"


def derive(imp: Impostors, target: float, cohort: int) -> Derived:
    """Of the rules within ``target`` (for each margin, the largest tolerance whose
    estimated rate is within it), the one that names the most known faces; the strictest
    rule searched if none is within it."""
    if len(imp.nearest) * target >= LOO_EVENTS:
        near, method = imp.nearest, "leave-one-out"
    else:
        near, method = imp.simulate(cohort + 1), "model"
    n = len(near)
    best = near[:, 0]
    with np.errstate(invalid="ignore"):  # inf - inf: nobody to compare with
        gap = near[:, 1 : cohort + 1].mean(axis=1) - best if near.shape[1] > 1 else np.full(n, np.inf)
    gap = np.where(np.isnan(gap), np.inf, gap)  # a lone person needs no margin (as Nearest.accept)
    genuine = np.random.default_rng(1).normal(GENUINE_MEAN, GENUINE_SD, n)
    crowd = near[:, :cohort].mean(axis=1)  # a known face's cohort: its nearest other people
    first = genuine < best
    allowed = math.floor(target * n)  # strangers that may be named
    tolerances = np.round(np.arange(MIN_TOLERANCE, MAX_TOLERANCE + STEP / 2, STEP), 6)
    chosen: Derived | None = None
    named_best = -1.0
    for margin in np.round(np.arange(0.0, MAX_MARGIN + STEP / 2, STEP), 6):
        passing = best[gap >= margin]
        # The largest tolerance naming at most ``allowed`` of them: below the next one.
        limit = np.partition(passing, allowed)[allowed] if allowed < len(passing) else np.inf
        fits = tolerances[tolerances < limit]
        if not len(fits):
            continue
        tolerance = float(fits[-1])
        named = float(np.mean(first & (genuine <= tolerance) & (crowd - genuine >= margin)))
        if named > named_best + 1e-4:  # a clearly better one: ties keep the smaller margin
            rate = float(np.mean((best <= tolerance) & (gap >= margin)))
            chosen, named_best = Derived(tolerance, float(margin), rate, method), named
    if chosen is None:
        rate = float(np.mean((best <= MIN_TOLERANCE) & (gap >= MAX_MARGIN)))
        chosen = Derived(MIN_TOLERANCE, MAX_MARGIN, rate, method)
    return chosen


def calibrated_rule(gallery: Gallery, target: float, aggregation: str, cohort: int) -> MatchRule:
    """The rule for ``gallery`` at ``target``; it records the target, the derived tolerance
    and margin, the estimate, how it was made and the people it was made for."""
    if gallery.people == 0:
        d = Derived(MIN_TOLERANCE, MAX_MARGIN, 0.0, "empty gallery")
    else:
        d = derive(impostors(gallery, aggregation, cohort), target, cohort)
    base = default_rule(d.tolerance, d.margin, aggregation, cohort)
    return base.model_copy(
        update={
            "false_accept_target": target,
            "false_accept_estimate": round(d.estimate, 5),
            "calibration": d.method,
            "calibrated_people": gallery.people,
        }
    )


class RuleSource:
    """The rule each match uses: fixed (``target`` None), or derived for the gallery and
    derived again when its faces change.

    Below ``LARGE`` people, on every change: a derivation costs under 0.1 s there, and
    every replica at the same gallery version applies the same rule. From ``LARGE``
    people a derivation costs 0.3 s and more (0.6 s at 2,800 people), which a bulk
    enrollment would pay on every image, so the rule is derived again only once the
    people or the faces have changed by ``CHANGE`` since the last derivation; replicas
    may then differ by that much of a gallery, and every result records the rule it had.
    """

    LARGE = 1_000
    CHANGE = 0.01

    def __init__(self, fixed: MatchRule, target: float | None) -> None:
        self.fixed = fixed
        self.target = target
        self._rule: MatchRule | None = None
        self._generation = -1
        self._people = 0
        self._faces = 0

    def rule(self, gallery: Gallery) -> MatchRule:
        if self.target is None:
            return self.fixed
        if self._rule is None or (gallery.generation != self._generation and self._worth(gallery)):
            self._rule = calibrated_rule(gallery, self.target, self.fixed.aggregation, self.fixed.cohort)
            self._generation, self._people, self._faces = gallery.generation, gallery.people, len(gallery)
        return self._rule

    def _worth(self, gallery: Gallery) -> bool:
        if gallery.people < self.LARGE:
            return True
        return abs(gallery.people - self._people) >= self.CHANGE * self._people or abs(
            len(gallery) - self._faces
        ) >= self.CHANGE * max(self._faces, 1)
