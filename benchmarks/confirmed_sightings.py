"""Confirmed sightings: do faces an operator names on the review page lift recognition, and drift?

Run ``python -m benchmarks.confirmed_sightings`` (``--out DIR``, default ``bench-results/``;
part of ``make bench-matching``). It reads the encodings ``benchmarks.matching_scale``
caches in ``.cache/`` (made on its first run): lfw-dev and lfw-distractors, probes and
sightings with 1 jitter, enrollment photos with ``ENROLL_NUM_JITTERS`` (10). Nothing is
encoded here: a run takes several minutes on 2 cores. Every decision is the shipped
``Gallery``'s with the shipped rule: the tolerance and margin the recognizers derive for
that gallery from ``MATCH_FALSE_ACCEPT``'s default (``matching_scale.shipped_rule``),
derived again for every gallery matched against (each condition, fold and round); when
``recognizer.calibration`` changes, rerun this.

Protocol (seeded), at galleries of about 300 and 2,600 people:

- **People.** The lfw-dev people with 6 photos (129): photos 1-3 (the first three with a
  face) are the ones enrollment may use (10 jitters, as the API encodes them); photos 4-6
  are held-out probes, one per fold (3 folds, every probe photo used once). A fold's
  *sightings* of a person are their photos but photo 1 and the fold's probe (4), as the
  recognizer encoded them (1 jitter): the faces an operator could confirm.
- **Gallery.** Those people, filled up to the size with lfw-distractors (one photo each).
- **Others.** Every other face of lfw-dev (people with fewer photos, and ``strangers/``) is
  split by person, seeded, in two halves: *passers-by*, whose photos appear among the
  sightings (they can be confirmed by mistake, or auto-added), and *strangers*, used only
  to measure false accepts, with each enrolled distractor's own photo against the gallery
  without it (leave-one-out, as in ``benchmarks.matching_scale``).
- **Baselines:** k = 1 (photo 1) and k = 3 (photos 1-3) enrollment photos.
- **Confirmed:** photo 1 plus m = 1, 2, 4 confirmed sightings, chosen either as the review
  page offers them (``missed``: only sightings the k = 1 gallery left unknown) or among all
  of the person's sightings (``any``).
- **Operator error:** a share e of the confirmations (exactly round(e x n), at random
  positions) is a wrong face: a passer-by's or another enrolled person's sighting (unknown
  ones, for ``missed``) that looks like the person: within the review page's grouping
  threshold of their enrollment face, else the nearest.
- **Drift:** 5 rounds. Confirmed: each round every person with an unknown sighting gets one
  of them confirmed (with operator error e). Self-training, the contrast: each round every
  sighting the system named (passers-by included) is added to the person it was named as.
- Rates over the held-out probes (correct / wrong / missed) and over the strangers
  (named), pooled over the folds, with 95% Wilson intervals; beside them, the range of the
  rules derived for the condition's galleries (one per fold).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from api.settings import ApiSettings
from benchmarks import matching as m
from benchmarks import matching_scale as ms
from recognizer.calibration import DEFAULT_FALSE_ACCEPT
from recognizer.gallery import Gallery, default_rule
from schemas.events import MatchRule

Vector = npt.NDArray[np.float64]

SIZES = (300, 2800)
#: Photos a person needs: 3 that enrollment may use and 3 held-out probes.
PHOTOS = 6
CONFIRMED = (1, 2, 4)
SELECTIONS = ("missed", "any")
ERRORS = (0.0, 0.02, 0.05)
ROUNDS = 5
#: Two unknown faces closer than this share a group on the review page: the faces an
#: operator could plausibly confuse with a person.
LOOKALIKE: float = ApiSettings.model_fields["review_cluster_threshold"].default


@dataclass(frozen=True)
class Sighting:
    """A face the recognizer saw (1 jitter): ``owner`` is who it really is."""

    owner: str  # an enrolled person, or "passer:<name>"
    path: str
    encoding: Vector


@dataclass(frozen=True)
class Setting:
    """Everything one gallery size shares across folds and conditions."""

    data: ms.Data
    people: list[str]  # the 129, in gallery order
    enroll: dict[str, list[str]]  # their 3 enrollment photos
    probes: dict[str, list[str]]  # their 3 held-out probes
    fill: list[str]  # distractors enrolled, after the people
    passers: list[Sighting]
    strangers: Vector  # probe encodings of the strangers' half


def setting(data: ms.Data, size: int, rng: np.random.Generator) -> Setting:
    split = m.make_split(data.photos, data.probe, 3)
    files: dict[str, int] = {}
    for p in data.photos:
        if p.set == "known":
            files[p.name] = files.get(p.name, 0) + 1
    people = [p for p in split.people if files[p] >= PHOTOS]
    enroll = {p: [path for n, path in split.enroll if n == p] for p in people}
    probes = {p: [path for n, path in split.known if n == p] for p in people}
    assert all(len(enroll[p]) == 3 and len(probes[p]) == 3 for p in people)
    # Everybody else, by person (a stranger's photos all on one side).
    others = sorted({p.name for p in data.photos if p.name not in probes})
    passer_names = set(rng.permutation(others)[: len(others) // 2].tolist())
    passers, strangers = [], []
    for p in data.photos:
        e = data.probe.encoding[p.path]
        if p.name in probes or e is None:
            continue
        if p.name in passer_names:
            passers.append(Sighting(f"passer:{p.name}", p.path, e))
        else:
            strangers.append(e)
    fill = data.distractors[: max(0, size - len(people))]
    return Setting(data, people, enroll, probes, fill, passers, np.stack(strangers))


@dataclass(frozen=True)
class Fold:
    index: int
    probe: dict[str, str]  # person -> the held-out photo
    own: dict[str, list[Sighting]]  # person -> their sightings in this fold

    @property
    def sightings(self) -> list[Sighting]:
        return [s for mine in self.own.values() for s in mine]


def folds(s: Setting) -> list[Fold]:
    out = []
    for i in range(3):
        own = {}
        for p in s.people:
            paths = s.enroll[p][1:] + [q for j, q in enumerate(s.probes[p]) if j != i]
            own[p] = [Sighting(p, q, e) for q in paths if (e := s.data.probe.encoding[q]) is not None]
        out.append(Fold(i, {p: s.probes[p][i] for p in s.people}, own))
    return out


Added = list[tuple[str, Sighting]]  # (the person it was added to, the face)


def composition(s: Setting, fold: Fold, k: int, added: Added) -> ms.Composition:
    """The gallery (k enrollment photos, the distractors, ``added``) and its probes."""
    d = s.data
    faces: list[tuple[str, str, Vector]] = []
    for p in s.people:
        faces += [(p, path, d.enrolled.encoding[path]) for path in s.enroll[p][:k]]  # type: ignore[misc]
    faces += [(path, path, d.distractor_enrolled.encoding[path]) for path in s.fill]  # type: ignore[misc]
    # The face id names the person: a wrong face may also be its owner's sighting.
    faces += [(p, f"{p}:{x.path}", x.encoding) for p, x in added]
    order = s.people + s.fill
    index = {p: i for i, p in enumerate(order)}
    probes = [(p, fold.probe[p]) for p in s.people]
    with_face = [(p, q) for p, q in probes if d.probe.encoding[q] is not None]
    return ms.Composition(
        size=len(order),
        k=k,
        gallery=ms.gallery_of(order, faces),
        people=order,
        faces=faces,
        known=np.stack([d.probe.encoding[q] for _, q in with_face]),  # type: ignore[misc]
        truth=np.array([index[p] for p, _ in with_face], dtype=np.intp),
        known_missing=len(probes) - len(with_face),
        strangers=s.strangers,
        loo=np.stack([d.distractor_probe.encoding[q] for q in s.fill]) if s.fill else np.empty((0, 128)),  # type: ignore[misc]
        loo_person=np.array([index[q] for q in s.fill], dtype=np.intp),
    )


def nearest(per: ms.Floats, cohort: int) -> ms.Near:
    """``ms.near_from`` on each row's ``cohort`` + 1 nearest people only, as ``Gallery.nearest``
    selects them (a partial sort first): the same decisions, without sorting whole rows."""
    take = min(cohort + 1, per.shape[1])
    cols = np.argpartition(per, take - 1, axis=1)[:, :take]
    near = ms.near_from(np.take_along_axis(per, cols, axis=1), cohort)
    return ms.Near(np.take_along_axis(cols, near.person[:, None], axis=1)[:, 0], near.best, near.cohort)


def evaluate(c: ms.Composition, rule: MatchRule) -> ms.Outcome:
    """``rule`` (``c.gallery``'s) on the held-out probes and the strangers, the leave-one-out
    ones included (``matching_scale``'s way: they are matched with the whole gallery's rule)."""
    known, strangers, loo = ms.distances(c, rule.aggregation)
    nk = nearest(known, rule.cohort)
    ns = nearest(np.vstack([strangers, loo]), rule.cohort)
    return ms.outcome(c, nk, nk.accept(rule.tolerance, rule.margin), ns.accept(rule.tolerance, rule.margin))


def named(gallery: Gallery, rule: MatchRule, faces: Sequence[Sighting]) -> list[str | None]:
    """Who the shipped gallery, with ``rule`` (its own), names each face as (None: unknown)."""
    if not faces:
        return []
    return [r.person_id for r in gallery.match(np.stack([f.encoding for f in faces]), rule)]


def first_photo(s: Setting, person: str) -> Vector:
    """The person's enrollment face at k = 1 (photo 1, 10 jitters)."""
    e = s.data.enrolled.encoding[s.enroll[person][0]]
    assert e is not None  # make_split enrolls photos with a face only
    return e


def lookalike(person: Vector, candidates: Sequence[Sighting], rng: np.random.Generator) -> Sighting | None:
    """A wrong face an operator could take for ``person``: one at random among those within
    the review page's grouping threshold, else the nearest; None if there is none."""
    if not candidates:
        return None
    dist = np.linalg.norm(np.stack([c.encoding for c in candidates]) - person, axis=1)
    close = np.flatnonzero(dist <= LOOKALIKE)
    return candidates[int(rng.choice(close)) if len(close) else int(np.argmin(dist))]


# --- tallies ----------------------------------------------------------------------------


@dataclass
class Tally:
    """Outcomes pooled over the folds (the strangers are the same photos in every fold)."""

    known: int = 0
    correct: int = 0
    wrong: int = 0
    missed: int = 0
    strangers: int = 0  # per fold
    strangers_named: int = 0  # over all folds
    folds: int = 0
    confirmed: int = 0  # faces added to the gallery, over all folds
    wrong_added: int = 0  # of which somebody else's
    rules: list[MatchRule] = field(default_factory=list)  # the rule of each fold's gallery
    extra: dict[str, int] = field(default_factory=dict)

    def add(self, c: ms.Composition, rule: MatchRule, added: Sequence[tuple[str, Sighting]] = ()) -> None:
        """Add what ``rule`` (``c.gallery``'s own) decides on ``c``'s probes and strangers."""
        o = evaluate(c, rule)
        self.rules.append(rule)
        n = len(c.truth) + c.known_missing
        self.known += n
        self.correct += round(o.correct * n)
        self.wrong += round(o.wrong * n)
        self.missed += round(o.missed * n)
        self.strangers = o.strangers
        self.strangers_named += o.strangers_named
        self.folds += 1
        self.confirmed += len(added)
        self.wrong_added += sum(p != x.owner for p, x in added)
        self.bump("passers_by_added", sum(p != x.owner and x.owner.startswith("passer:") for p, x in added))

    def bump(self, key: str, n: int) -> None:
        self.extra[key] = self.extra.get(key, 0) + n

    def rate(self, what: str) -> float:
        if what == "false_accept":
            return self.strangers_named / (self.strangers * self.folds)
        return int(getattr(self, what)) / self.known

    def interval(self, what: str) -> tuple[float, float]:
        """95% Wilson interval; for strangers, that of one fold's count (the folds repeat
        the same photos, so pooling them would overstate the precision)."""
        if what == "false_accept":
            return ms.wilson(round(self.strangers_named / self.folds), self.strangers)
        return ms.wilson(int(getattr(self, what)), self.known)

    def row(self) -> dict[str, object]:
        out: dict[str, object] = {
            "known_probes": self.known,
            "strangers": self.strangers,
            "folds": self.folds,
        }
        for what in ("correct", "wrong", "missed", "false_accept"):
            low, high = self.interval(what)
            out[what] = round(self.rate(what), 4)
            out[f"{what}_95"] = [round(low, 4), round(high, 4)]
        out["strangers_named_per_fold"] = round(self.strangers_named / self.folds, 2)
        out["confirmed_per_person"] = round(self.confirmed / self.known, 3)
        out["wrong_faces_added"] = self.wrong_added
        out["rule"] = rule_range(self.rules)
        return {**out, **self.extra}


def span(values: Iterable[float | None]) -> list[float]:
    """[lowest, highest] of the values given (None left out), rounded to 5 decimals."""
    v = [x for x in values if x is not None]
    return [round(min(v), 5), round(max(v), 5)]


def rule_range(rules: Sequence[MatchRule]) -> dict[str, object]:
    """The span of ``rules`` (derived rules, one per gallery): tolerance, margin and the
    false-accept estimate each as [lowest, highest], the target and how they were derived."""
    return {
        "galleries": len(rules),
        "tolerance": span(r.tolerance for r in rules),
        "margin": span(r.margin for r in rules),
        "false_accept_target": sorted({r.false_accept_target for r in rules if r.false_accept_target}),
        "false_accept_estimate": span(r.false_accept_estimate for r in rules),
        "calibration": sorted({r.calibration for r in rules if r.calibration}),
    }


def fmt(label: str, t: Tally) -> str:
    lo, hi = t.interval("false_accept")
    tol, mar = span(r.tolerance for r in t.rules), span(r.margin for r in t.rules)
    return (
        f"  {label:<34} {t.rate('correct'):7.1%} {t.rate('wrong'):6.1%} {t.rate('missed'):7.1%}"
        f" {t.rate('false_accept'):7.2%} [{lo:.1%}-{hi:.1%}]  +{t.confirmed / t.known:.2f}/person"
        f" ({t.wrong_added} wrong)  T {tol[0]:.3f}-{tol[1]:.3f} m {mar[0]:.3f}-{mar[1]:.3f}"
    )


# --- conditions -------------------------------------------------------------------------


def baseline(s: Setting, fs: Iterable[Fold], k: int) -> Tally:
    t = Tally()
    for fold in fs:
        c = composition(s, fold, k, [])
        t.add(c, ms.shipped_rule(c.gallery))
    return t


def sightings_of_enrollment_photos(s: Setting, fs: Iterable[Fold]) -> Tally:
    """k = 3's photos, 2 and 3 as the recognizer encoded them (1 jitter): what jitters are worth."""
    t = Tally()
    for fold in fs:
        added: Added = [(p, x) for p in s.people for x in fold.own[p] if x.path in s.enroll[p][1:]]
        c = composition(s, fold, 1, added)
        t.add(c, ms.shipped_rule(c.gallery), added)
    return t


def confirmed(s: Setting, fs: Iterable[Fold], selection: str, count: int, error: float, seed: int) -> Tally:
    """Photo 1 plus up to ``count`` confirmed sightings per person, a share ``error`` wrong.

    The same sightings are chosen for every ``error`` (one seed per selection and count),
    so the error rows differ from the e = 0 row only by the wrong faces, and the rule
    derived for the gallery with them. ``extra``: the victims' probes (of the people given
    a wrong face) named correctly with and without it, and, for ``error`` > 0, the held-out
    probes named correctly when this gallery is matched with the e = 0 gallery's rule.
    """
    t = Tally()
    for fold in fs:
        pick = np.random.default_rng([seed, fold.index, SELECTIONS.index(selection), count])
        slip = np.random.default_rng([seed, fold.index, SELECTIONS.index(selection), count, 1])
        start = composition(s, fold, 1, [])
        pool = fold.sightings + s.passers
        decided = named(start.gallery, ms.shipped_rule(start.gallery), pool)
        unknown = {x.path for x, n in zip(pool, decided, strict=True) if n is None}
        offered = [x for x in pool if selection == "any" or x.path in unknown]
        added: Added = []
        for p in s.people:
            mine = [x for x in offered if x.owner == p]
            added += [(p, mine[int(i)]) for i in pick.permutation(len(mine))[:count]]
        right = list(added)
        slips = slip.choice(len(added), size=round(error * len(added)), replace=False)
        used = {x.path for _, x in added}
        for i in sorted(int(j) for j in slips):
            p = added[i][0]
            others = [x for x in offered if x.owner != p and x.path not in used]
            wrong = lookalike(first_photo(s, p), others, slip)
            if wrong is not None:
                added[i] = (p, wrong)
                used.add(wrong.path)
        c = composition(s, fold, 1, added)
        rule = ms.shipped_rule(c.gallery)
        t.add(c, rule, added)
        slipped = [x.path for _, x in added] != [x.path for _, x in right]
        clean = composition(s, fold, 1, right) if slipped else c
        clean_rule = ms.shipped_rule(clean.gallery) if slipped else rule
        if error > 0:
            # How much of the change is the rule's: this gallery under the rule derived
            # for it without the wrong faces (the e = 0 row's gallery and rule).
            t.bump("correct_under_the_rule_without_the_wrong_faces", evaluate(c, clean_rule).known_correct)
        # The harm of a wrong face falls on one person: their probe, with and without it
        # (each gallery with its own rule).
        victims = sorted({p for p, x in added if p != x.owner})
        if victims:
            probes = [x for p in victims if (x := probe_sighting(s, fold, p)) is not None]
            with_it = named(c.gallery, rule, probes)
            without = named(clean.gallery, clean_rule, probes)
            t.bump("victims", len(probes))
            t.bump("victims_correct", sum(n == x.owner for x, n in zip(probes, with_it, strict=True)))
            t.bump(
                "victims_correct_without_the_wrong_face",
                sum(n == x.owner for x, n in zip(probes, without, strict=True)),
            )
    return t


def probe_sighting(s: Setting, fold: Fold, person: str) -> Sighting | None:
    """The person's held-out probe in ``fold`` (None: no face found in it)."""
    path = fold.probe[person]
    e = s.data.probe.encoding[path]
    return None if e is None else Sighting(person, path, e)


def loop(s: Setting, fs: Iterable[Fold], error: float | None, seed: int) -> list[Tally]:
    """Rounds 0 (photo 1 only) to ``ROUNDS``; ``error`` None is self-training.

    Confirmed: each round, each person with a sighting still unknown gets one of them
    confirmed; every round(e x confirmations so far)-th confirmation is a look-alike
    wrong face taken from the unknown ones instead. Self-training: each round, every
    sighting named (and not yet added) is added to whoever it was named as.
    ``extra``: how many of the passers-by's photos the round's gallery names (those
    added to a person's faces included), and how many of them are in the gallery.
    """
    rounds = [Tally() for _ in range(ROUNDS + 1)]
    for fold in fs:
        rng = np.random.default_rng([seed, fold.index, 1000 if error is None else round(error * 1000)])
        pool = fold.sightings + s.passers
        added: Added = []
        for r in range(ROUNDS + 1):
            c = composition(s, fold, 1, added)
            rule = ms.shipped_rule(c.gallery)
            rounds[r].add(c, rule, added)
            rounds[r].bump("passers_by", len(s.passers))
            rounds[r].bump("passers_by_named", sum(n is not None for n in named(c.gallery, rule, s.passers)))
            used = {x.path for _, x in added}
            fresh = [x for x in pool if x.path not in used]
            decided = named(c.gallery, rule, fresh)
            if r == ROUNDS:
                break
            if error is None:
                added += [(n, x) for x, n in zip(fresh, decided, strict=True) if n is not None]
                continue
            unknown = [x for x, n in zip(fresh, decided, strict=True) if n is None]
            for p in rng.permutation(s.people).tolist():
                mine = [x for x in unknown if x.owner == p and x.path not in used]
                if not mine:
                    continue
                face = mine[int(rng.integers(len(mine)))]
                wrong_due = round(error * (len(added) + 1)) > sum(q != x.owner for q, x in added)
                if wrong_due:
                    others = [x for x in unknown if x.owner != p and x.path not in used]
                    face = lookalike(first_photo(s, p), others, rng) or face
                added.append((p, face))
                used.add(face.path)
    return rounds


# --- report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """Every condition at one gallery size."""

    people: int  # in the gallery
    baseline: dict[int, Tally]  # by k
    jitter: Tally  # photo 1 + photos 2-3 as sightings
    confirmed: dict[tuple[str, int, float], Tally]  # by (selection, m, e)
    loops: dict[str, list[Tally]]  # by label: rounds 0..ROUNDS


def measure(s: Setting, seed: int) -> Measured:
    fs = folds(s)
    ms.check(composition(s, fs[0], 1, []), np.random.default_rng(seed))
    loops = {f"confirmed, e = {e:.0%}": loop(s, fs, e, seed) for e in ERRORS}
    loops["self-training (no operator)"] = loop(s, fs, None, seed)
    return Measured(
        people=len(s.people) + len(s.fill),
        baseline={k: baseline(s, fs, k) for k in (1, 3)},
        jitter=sightings_of_enrollment_photos(s, fs),
        confirmed={
            (sel, n, e): confirmed(s, fs, sel, n, e, seed)
            for sel in SELECTIONS
            for n in CONFIRMED
            for e in ERRORS
        },
        loops=loops,
    )


def report(s: Setting, t: Measured) -> dict[str, object]:
    """Print the tables; the JSON of one size."""
    base = t.baseline
    print(
        f"\n{t.people} people ({len(s.people)} probed, {len(s.fill)} distractors); "
        f"{base[1].known} held-out probes over 3 folds; {len(s.strangers)} strangers + {len(s.fill)}"
        f" leave-one-out; {len(s.passers)} passers-by among the sightings"
    )
    print(f"  {'condition':<34} {'correct':>7} {'wrong':>6} {'missed':>7} {'strangers named':>22}")
    for k in (1, 3):
        print(fmt(f"k = {k}", base[k]))
    print(fmt("photo 1 + photos 2-3 at 1 jitter", t.jitter))
    for (sel, n, e), c in t.confirmed.items():
        victims = ""
        if c.extra.get("victims"):
            victims = (
                f"; victims' probes correct {c.extra['victims_correct']}/{c.extra['victims']}"
                f" ({c.extra['victims_correct_without_the_wrong_face']} without the wrong face)"
            )
        print(fmt(f"photo 1 + {n} confirmed ({sel}), e={e:.0%}", c) + victims)
    for label, rounds in t.loops.items():
        print(f"  {label}:")
        for r, c in enumerate(rounds):
            share = c.extra["passers_by_named"] / c.extra["passers_by"]
            print(
                fmt(f"  round {r} (passers-by named {share:.1%})", c)
                + f", {c.extra['passers_by_added']} of them passers-by"
            )
    every = [r for b in base.values() for r in b.rules] + t.jitter.rules
    every += [r for c in t.confirmed.values() for r in c.rules]
    every += [r for rounds in t.loops.values() for c in rounds for r in c.rules]
    return {
        "people_in_gallery": t.people,
        "rules_derived": rule_range(every),
        "people_probed": len(s.people),
        "distractors": len(s.fill),
        "strangers": len(s.strangers),
        "leave_one_out": len(s.fill),
        "passers_by": len(s.passers),
        "baseline": {f"k={k}": c.row() for k, c in base.items()},
        "photo_1_and_photos_2_3_at_1_jitter": t.jitter.row(),
        "confirmed": [
            {"selection": sel, "m": n, "operator_error": e, **c.row()}
            for (sel, n, e), c in t.confirmed.items()
        ],
        "loops": {
            label: [{"round": r, **c.row()} for r, c in enumerate(rounds)]
            for label, rounds in t.loops.items()
        },
    }


def plot(measured: list[Measured], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(measured), figsize=(6.5 * len(measured), 9))
    colours = plt.get_cmap("tab10")
    for col, t in enumerate(measured):
        top, bottom = axes[0][col], axes[1][col]
        base, conf = t.baseline, t.confirmed
        for k, style in ((1, ":"), (3, "--")):
            top.axhline(100 * base[k].rate("correct"), color="grey", linestyle=style, label=f"k = {k} photos")
        for i, sel in enumerate(SELECTIONS):
            for e, style in zip(ERRORS, ("o-", "s--", "^:"), strict=True):
                rows = [conf[sel, n, e] for n in CONFIRMED]
                lo_hi = np.array([r.interval("correct") for r in rows]) * 100
                ys = [100 * r.rate("correct") for r in rows]
                top.errorbar(
                    CONFIRMED,
                    ys,
                    yerr=[np.array(ys) - lo_hi[:, 0], lo_hi[:, 1] - np.array(ys)] if e == 0 else None,
                    fmt=style,
                    color=colours(i),
                    capsize=3,
                    label=f"photo 1 + m confirmed ({sel}), e = {e:.0%}",
                )
        top.set_title(f"{t.people} people in the gallery")
        top.set_xlabel("confirmed sightings per person, at most (m; 'missed' finds fewer to confirm)")
        top.set_ylabel("held-out probes named correctly (%)")
        top.set_xticks(CONFIRMED)
        top.grid(alpha=0.3)
        top.legend(fontsize=7)
        twin = bottom.twinx()
        for i, (label, rounds) in enumerate(t.loops.items()):
            xs = range(len(rounds))
            bottom.plot(
                xs, [100 * r.rate("correct") for r in rounds], "o-", color=colours(i + 2), label=label
            )
            twin.plot(xs, [100 * r.rate("false_accept") for r in rounds], "x--", color=colours(i + 2))
            passers = [100 * r.extra["passers_by_named"] / r.extra["passers_by"] for r in rounds]
            twin.plot(xs, passers, "^:", color=colours(i + 2))
        twin.set_ylim(0, 16)
        bottom.set_xlabel("round (0: photo 1 only)")
        bottom.set_ylabel("held-out probes named correctly (%), solid")
        twin.set_ylabel("strangers named (%), dashed; passers-by named (%), dotted")
        bottom.grid(alpha=0.3)
        bottom.legend(fontsize=7, loc="center right")
    fig.suptitle(
        "Confirmed sightings (1 jitter) added to one enrollment photo (10 jitters); shipped rule,"
        f" derived for each gallery from MATCH_FALSE_ACCEPT = {DEFAULT_FALSE_ACCEPT:.0%}"
    )
    fig.tight_layout()
    path = out / "confirmed_sightings.png"
    return m.save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.confirmed_sightings", description=__doc__)
    parser.add_argument("--out", type=Path, default=m.ROOT / "bench-results")
    parser.add_argument("--workers", type=int, default=2, help="encoding processes, if the cache is cold")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    data = ms.load(args.workers)
    results: dict[str, object] = {}
    measured = []
    for size in SIZES:
        s = setting(data, size, np.random.default_rng([args.seed, size]))
        measured.append(measure(s, args.seed))
        results[str(measured[-1].people)] = report(s, measured[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "confirmed_sightings.json"
    doc = {
        "protocol": __doc__,
        "rule": {
            "derived": "for each gallery matched against: recognizer.calibration.calibrated_rule"
            "(gallery, false_accept_target, aggregation, cohort); per condition under 'rule'",
            "false_accept_target": DEFAULT_FALSE_ACCEPT,
            "aggregation": default_rule().aggregation,
            "cohort": default_rule().cohort,
        },
        "enroll_num_jitters": m.ENROLL_JITTERS,
        "sighting_num_jitters": 1,
        "lookalike_threshold": LOOKALIKE,
        "seed": args.seed,
        "sizes": results,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path} and {plot(measured, args.out)} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
