"""Matching at every gallery size: how the rule's false accepts grow with the people enrolled.

Run ``python -m benchmarks.matching_scale`` (``--out DIR``, default ``bench-results/``;
``--workers N`` for the first run's encoding). It needs the shared photos:
``lfw-dev/`` (known people and strangers) and ``lfw-distractors/`` (2,500 more people, one
photo each), under ``FACESTREAM_FACES`` or ``../shared/datasets/faces``.

Encodings are made as the product makes them and cached in ``.cache/``: probes with 1
jitter (recognition), enrollment photos with ``ENROLL_NUM_JITTERS`` (10) through the
recognizers' own ``scan_photo``. The first run encodes the 2,500 distractors twice (about
45 minutes on 2 cores); later runs take about a minute.

Rules measured: the rule derived from a stated false-accept rate (``MATCH_FALSE_ACCEPT``
1% and 2%, :func:`recognizer.calibration.calibrated_rule`, as the recognizers derive it
for the gallery), the fixed rule (0.50, 0.10), and a threshold alone from the pair
distances; each beside the plain nearest-photo threshold at the same strangers' rate.

Protocol, for k = 1 and k = 3 enrollment photos per person and galleries of about
20, 60, 100, 300, 1,000 and 2,800 people (under 300: ``--repeats`` draws, pooled):

- **Who is enrolled.** Up to the size, known people with at least k+1 photos (chosen at
  random, seeded), each with their first k photos with a face; the rest of the size is
  filled with distractors, one photo each. 2,800 is every known person and every
  distractor (a mixed gallery at k = 3, as real ones are).
- **Known probes.** Every other photo of an enrolled known person: correct, wrong, missed.
- **Strangers.** Every face that is nobody's in the gallery: the ``strangers/`` photos;
  every photo of a known person not enrolled at this size; and each enrolled distractor's
  own photo (encoded as a probe) against the gallery without that distractor
  (leave-one-out, so that the largest galleries still have thousands of strangers). The
  false-accept rate is the share of them that got a name, with its 95% Wilson interval.

Every decision is the shipped ``Gallery``'s: the leave-one-out decisions are computed from
``Gallery.person_distances`` with the left-out person masked, and checked against a
``Gallery`` with that person removed on a sample.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from benchmarks import matching as m
from recognizer.calibration import DEFAULT_FALSE_ACCEPT, calibrated_rule
from recognizer.gallery import Gallery, default_rule
from schemas.events import MatchRule

Vector = npt.NDArray[np.float64]
Floats = npt.NDArray[np.floating]
Ints = npt.NDArray[np.intp]

FACES = Path(os.environ.get("FACESTREAM_FACES", m.ROOT.parent / "shared" / "datasets" / "faces"))
DISTRACTORS = FACES / "lfw-distractors"
SIZES = (20, 60, 100, 300, 1000, 2800)
#: Galleries below this many people are drawn this many times (different people each time)
#: and their counts pooled: one small gallery says more about its people than about the rule.
REPEAT_BELOW, REPEATS = 300, 5
#: The customary plain rule: the nearest enrolled photo, named within a distance.
PLAIN_THRESHOLDS = tuple(round(0.30 + 0.005 * i, 3) for i in range(61))  # 0.30 .. 0.60
#: Stated false-accept rates (MATCH_FALSE_ACCEPT) the derived rule is measured at.
TARGETS = (0.01, 0.02)


def distractor_cache(num_jitters: int) -> Path:
    return (
        m.ROOT
        / ".cache"
        / f"lfw-distractors-{'encodings' if num_jitters == 1 else f'enroll-jitter{num_jitters}'}.npz"
    )


@dataclass(frozen=True)
class Data:
    photos: list[m.Photo]
    probe: m.Encodings  # lfw-dev, 1 jitter
    enrolled: m.Encodings  # lfw-dev, enrollment photos as enrollment encodes them
    distractors: list[str]  # paths in lfw-distractors
    distractor_probe: m.Encodings
    distractor_enrolled: m.Encodings


def load(workers: int) -> Data:
    photos = m.read_manifest(m.DATASET)
    probe = m.encode_all(m.DATASET, [p.path for p in photos], workers)
    enrolled, _ = m.enrollment_encodings(m.DATASET, photos, probe, workers, m.ENROLL_JITTERS)
    with (DISTRACTORS / "manifest.csv").open(newline="") as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    d_probe = m.encode_all(DISTRACTORS, paths, workers, distractor_cache(1), 1)
    d_enrolled = m.encode_all(
        DISTRACTORS, paths, workers, distractor_cache(m.ENROLL_JITTERS), m.ENROLL_JITTERS
    )
    usable = [p for p in paths if d_enrolled.encoding[p] is not None and d_probe.encoding[p] is not None]
    return Data(photos, probe, enrolled, usable, d_probe, d_enrolled)


@dataclass
class Composition:
    """One gallery and its probes."""

    size: int
    k: int
    gallery: Gallery
    people: list[str]  # gallery order
    faces: list[tuple[str, str, Vector]]  # (person, face id, encoding), as enrolled
    known: Vector  # probe encodings of enrolled known people
    truth: Ints  # their person index
    known_missing: int  # known probes without a face (missed)
    strangers: Vector  # probes of nobody in the gallery
    loo: Vector  # enrolled distractors' own photos, as probes
    loo_person: Ints  # ... and the person index each must not be matched with


def compose(data: Data, size: int, k: int, rng: np.random.Generator) -> Composition:
    split = m.make_split(data.photos, data.probe, k)
    chosen = set(rng.permutation(split.people)[: min(size, len(split.people))].tolist())
    people = [p for p in split.people if p in chosen]
    fill = data.distractors[: max(0, size - len(people))]
    faces: list[tuple[str, str, Vector]] = [
        (name, path, data.enrolled.encoding[path])  # type: ignore[misc]
        for name, path in split.enroll
        if name in chosen
    ]
    faces += [(path, path, data.distractor_enrolled.encoding[path]) for path in fill]  # type: ignore[misc]
    order = people + fill
    gallery = gallery_of(order, faces)
    index = {p: i for i, p in enumerate(order)}
    known = [(n, p) for n, p in split.known if n in chosen]
    with_face = [(n, p) for n, p in known if data.probe.encoding[p] is not None]
    enrolled_paths = {p for n, p in split.enroll if n in chosen}
    stranger_paths = [
        p.path
        for p in data.photos
        if data.probe.encoding[p.path] is not None
        and (p.set == "stranger" or (p.name not in chosen and p.path not in enrolled_paths))
    ]
    return Composition(
        size=len(order),
        k=k,
        gallery=gallery,
        people=order,
        faces=faces,
        known=np.stack([data.probe.encoding[p] for _, p in with_face]),  # type: ignore[misc]
        truth=np.array([index[n] for n, _ in with_face], dtype=np.intp),
        known_missing=len(known) - len(with_face),
        strangers=np.stack([data.probe.encoding[p] for p in stranger_paths]),  # type: ignore[misc]
        loo=np.stack([data.distractor_probe.encoding[p] for p in fill]) if fill else np.empty((0, 128)),  # type: ignore[misc]
        loo_person=np.array([index[p] for p in fill], dtype=np.intp),
    )


def gallery_of(people: list[str], faces: list[tuple[str, str, Vector]]) -> Gallery:
    """The shipped gallery (exact search) of ``faces``; person indices in ``people``'s order."""
    gallery = Gallery(ann_threshold=0)
    for pid in people:
        gallery.set_person(pid, pid)
    for pid, face_id, encoding in faces:
        gallery.add_face(pid, face_id, encoding)
    return gallery


def shipped_rule(gallery: Gallery) -> MatchRule:
    """The rule the recognizers apply to ``gallery`` as it is, by default: tolerance and
    margin derived for it from ``MATCH_FALSE_ACCEPT``'s default (``DEFAULT_FALSE_ACCEPT``),
    with ``default_rule()``'s aggregation and cohort. Deterministic for a gallery; it costs
    up to about a second at 2,800 people, so derive it once per gallery."""
    base = default_rule()
    return calibrated_rule(gallery, DEFAULT_FALSE_ACCEPT, base.aggregation, base.cohort)


@dataclass(frozen=True)
class Near:
    """Per probe: nearest person, its distance, the mean of the next ``cohort`` (NaN alone)."""

    person: Ints
    best: Floats
    cohort: Floats

    def accept(self, tolerance: float, margin: float) -> npt.NDArray[np.bool_]:
        alone = np.isnan(self.cohort)
        return (self.best <= tolerance) & (alone | (np.where(alone, 0.0, self.cohort) - self.best >= margin))


def near_from(per: Floats, cohort: int) -> Near:
    """``Gallery.nearest``'s reduction of a probes x people distance matrix (inf: absent)."""
    take = min(cohort + 1, per.shape[1])
    idx = np.argsort(per, axis=1, kind="stable")[:, :take]
    vals = np.take_along_axis(per, idx, axis=1)
    others = vals[:, 1:]
    present = np.isfinite(others)
    count = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(present, others, 0.0).sum(axis=1) / count
    return Near(idx[:, 0], vals[:, 0], np.where(count > 0, mean, np.nan))


def distances(c: Composition, aggregation: str) -> tuple[Floats, Floats, Floats]:
    """Person distances of the known probes, the strangers, and the leave-one-out probes
    (their own person masked)."""
    known, _ = c.gallery.person_distances(c.known, aggregation)
    strangers, _ = c.gallery.person_distances(c.strangers, aggregation)
    if len(c.loo):
        loo, _ = c.gallery.person_distances(c.loo, aggregation)
        loo[np.arange(len(c.loo)), c.loo_person] = np.inf
    else:
        loo = np.empty((0, len(c.people)))
    return known, strangers, loo


def check(c: Composition, rng: np.random.Generator, samples: int = 20) -> None:
    """The reductions here are the shipped Gallery's decisions (with a person removed for
    leave-one-out probes)."""
    rule = default_rule()
    known, strangers, loo = distances(c, rule.aggregation)
    for probes, per in ((c.known, known), (c.strangers, strangers)):
        want = near_from(per, rule.cohort)
        got = c.gallery.nearest(probes, rule.aggregation, rule.cohort)
        assert np.array_equal(want.person, got.person)
        assert np.allclose(want.best, got.best, atol=1e-5)
    if not len(c.loo):
        return
    want = near_from(loo, rule.cohort)
    for i in rng.choice(len(c.loo), size=min(samples, len(c.loo)), replace=False):
        out = c.people[int(c.loo_person[i])]
        without = gallery_of([p for p in c.people if p != out], [f for f in c.faces if f[0] != out])
        decided = without.match(c.loo[i : i + 1], rule)[0]
        named = want.accept(rule.tolerance, rule.margin)[i]
        assert (decided.person_id is not None) == bool(named), (i, decided)
        assert decided.nearest_person_id == c.people[int(want.person[i])]


def wilson(named: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = named / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Outcome:
    """What one rule did on one or more compositions: known probes named correctly, named
    wrongly, and all of them; strangers, and strangers named."""

    known_correct: int
    known_wrong: int
    known: int
    strangers: int
    strangers_named: int

    @property
    def correct(self) -> float:
        return self.known_correct / self.known

    @property
    def wrong(self) -> float:
        return self.known_wrong / self.known

    @property
    def missed(self) -> float:
        return 1.0 - self.correct - self.wrong

    @property
    def false_accept(self) -> float:
        return self.strangers_named / self.strangers

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            self.known_correct + other.known_correct,
            self.known_wrong + other.known_wrong,
            self.known + other.known,
            self.strangers + other.strangers,
            self.strangers_named + other.strangers_named,
        )

    def row(self) -> dict[str, object]:
        low, high = wilson(self.strangers_named, self.strangers)
        return {
            "correct": round(self.correct, 4),
            "wrong": round(self.wrong, 4),
            "missed": round(self.missed, 4),
            "known": self.known,
            "strangers": self.strangers,
            "strangers_named": self.strangers_named,
            "false_accept": round(self.false_accept, 4),
            "false_accept_95": [round(low, 4), round(high, 4)],
        }


def outcome(
    c: Composition, known: Near, accept_k: npt.NDArray[np.bool_], accept_s: npt.NDArray[np.bool_]
) -> Outcome:
    named = np.where(accept_k, known.person, -1)
    n_known = len(c.truth) + c.known_missing
    correct = int(np.sum(named == c.truth))
    wrong = int(np.sum((named >= 0) & (named != c.truth)))
    return Outcome(
        known_correct=correct,
        known_wrong=wrong,
        known=n_known,
        strangers=len(accept_s),
        strangers_named=int(np.sum(accept_s)),
    )


def pairs_threshold(c: Composition, target: float) -> float:
    """The route the issue sketched, for comparison: a threshold alone, from the distances
    between each enrolled face and every other person's centroid taken as normal, and the
    nearest of N - 1 people taken as independent: P(named) = 1 - (1 - F(T))^(N-1)."""
    faces = np.stack([f[2] for f in c.faces])
    owner = np.array([c.people.index(f[0]) for f in c.faces])
    per, _ = c.gallery.person_distances(faces, "centroid")
    per[np.arange(len(faces)), owner] = np.inf
    pairs = per[np.isfinite(per)]
    p = 1.0 - (1.0 - target) ** (1.0 / (len(c.people) - 1))
    return float(pairs.mean() + pairs.std() * NormalDist().inv_cdf(p))


@dataclass(frozen=True)
class Result:
    """One rule on one composition (or several pooled), beside the plain nearest-photo
    threshold that names known probes best without naming more strangers."""

    size: int
    k: int
    rule: str  # fixed, calibrated, pairs-threshold
    target: float | None
    tolerance: float
    margin: float
    calibration: str | None
    outcome: Outcome
    plain: Outcome
    plain_threshold: float
    compositions: int = 1

    def __add__(self, other: Result) -> Result:
        return Result(
            self.size,
            self.k,
            self.rule,
            self.target,
            self.tolerance,  # the first composition's (they differ by the people drawn)
            self.margin,
            self.calibration,
            self.outcome + other.outcome,
            self.plain + other.plain,
            self.plain_threshold,
            self.compositions + other.compositions,
        )

    def row(self) -> dict[str, object]:
        return {
            "size": self.size,
            "k": self.k,
            "rule": self.rule,
            "target": self.target,
            "tolerance": round(self.tolerance, 4),
            "margin": round(self.margin, 4),
            "calibration": self.calibration,
            "compositions": self.compositions,
            **self.outcome.row(),
            "plain_threshold": self.plain_threshold,
            "plain": self.plain.row(),
        }


def measure(c: Composition) -> list[Result]:
    """The fixed rule (MATCH_FALSE_ACCEPT=0), the rule derived for each target
    (recognizer.calibration, as the recognizers derive it for this gallery), and the
    threshold-only route, each beside the plain nearest-photo threshold at the same
    strangers' rate. A leave-one-out probe is matched with the rule derived for the whole
    gallery (one person more than its own gallery: the same rule but at the smallest sizes)."""
    fixed = default_rule()
    known, strangers, loo = distances(c, fixed.aggregation)
    nk, ns = near_from(known, fixed.cohort), near_from(np.vstack([strangers, loo]), fixed.cohort)
    known_p, strangers_p, loo_p = distances(c, "min")
    pk, ps = near_from(known_p, 1), near_from(np.vstack([strangers_p, loo_p]), 1)
    plain = [(t, outcome(c, pk, pk.best <= t, ps.best <= t)) for t in PLAIN_THRESHOLDS]

    def result(name: str, target: float | None, tolerance: float, margin: float, how: str | None) -> Result:
        got = outcome(c, nk, nk.accept(tolerance, margin), ns.accept(tolerance, margin))
        within = [p for p in plain if p[1].false_accept <= got.false_accept] or plain[:1]
        t, best = max(within, key=lambda p: p[1].correct)
        return Result(c.size, c.k, name, target, tolerance, margin, how, got, best, t)

    out = [result("fixed", None, fixed.tolerance, fixed.margin, None)]
    for target in TARGETS:
        rule = calibrated_rule(c.gallery, target, fixed.aggregation, fixed.cohort)
        out.append(result("calibrated", target, rule.tolerance, rule.margin, rule.calibration))
        out.append(result("pairs-threshold", target, pairs_threshold(c, target), 0.0, "pairs model"))
    return out


def plot(results: list[Result], out: Path) -> Path:
    """Strangers named (with 95% intervals) and probes named correctly against the
    gallery's size, per rule and k; the plain threshold at the derived rule's rate dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(m.KS), figsize=(6.5 * len(m.KS), 9), sharex=True)
    colours = plt.get_cmap("tab10")
    rules = sorted(
        {(r.rule, r.target) for r in results}, key=lambda rt: (rt[0] != "fixed", rt[1] or 0, rt[0])
    )
    for col, k in enumerate(m.KS):
        top, bottom = axes[0][col], axes[1][col]
        for i, (name, target) in enumerate(rules):
            mine = sorted(
                (r for r in results if r.k == k and (r.rule, r.target) == (name, target)),
                key=lambda r: r.size,
            )
            label = "fixed (0.50, 0.10)" if target is None else f"{name}, target {target:.0%}"
            style = "o-" if name != "pairs-threshold" else "x:"
            sizes = [r.size for r in mine]
            rates = [100 * r.outcome.false_accept for r in mine]
            bounds = [wilson(r.outcome.strangers_named, r.outcome.strangers) for r in mine]
            errors = [
                [rate - 100 * low for rate, (low, _) in zip(rates, bounds, strict=True)],
                [100 * high - rate for rate, (_, high) in zip(rates, bounds, strict=True)],
            ]
            top.errorbar(sizes, rates, yerr=errors, fmt=style, color=colours(i), label=label, capsize=3)
            bottom.plot(sizes, [100 * r.outcome.correct for r in mine], style, color=colours(i), label=label)
            if name == "calibrated":
                bottom.plot(
                    sizes,
                    [100 * r.plain.correct for r in mine],
                    "--",
                    color=colours(i),
                    alpha=0.6,
                    label=f"plain threshold at the same rate as target {target:.0%}",
                )
        for target in TARGETS:
            top.axhline(100 * target, color="black", linewidth=0.6, linestyle=":")
        top.set_title(f"k = {k} enrollment photo{'s' if k > 1 else ''} per person")
        top.set_ylabel("strangers named (%)")
        bottom.set_ylabel("known probes named correctly (%)")
        bottom.set_xlabel("people in the gallery")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.grid(True, alpha=0.3)
        top.legend(fontsize=7)
        bottom.legend(fontsize=7)
    fig.tight_layout()
    path = out / "matching-scale.png"
    return m.save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.matching_scale", description=__doc__)
    parser.add_argument("--out", type=Path, default=m.ROOT / "bench-results")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--repeats", type=int, default=REPEATS, help=f"Draws of galleries under {REPEAT_BELOW}."
    )
    args = parser.parse_args(argv)
    data = load(args.workers)
    rng = np.random.default_rng(args.seed)
    results: list[Result] = []
    print(
        f"{'k':>2} {'people':>6} {'rule':>20} {'T':>6} {'m':>6} {'correct':>8} {'wrong':>6} "
        f"{'strangers named':>28} {'plain same rate':>22}"
    )
    for k in m.KS:
        for size in SIZES:
            pooled: dict[tuple[str, float | None], Result] = {}
            for draw in range(args.repeats if size < REPEAT_BELOW else 1):
                c = compose(data, size, k, rng)
                if draw == 0:
                    check(c, rng)
                for r in measure(c):
                    key = (r.rule, r.target)
                    pooled[key] = pooled[key] + r if key in pooled else r
            for r in pooled.values():
                results.append(r)
                o, po = r.outcome, r.plain
                low, high = wilson(o.strangers_named, o.strangers)
                name = r.rule if r.target is None else f"{r.rule} {r.target:.0%}"
                print(
                    f"{k:>2} {r.size:>6} {name:>20} {r.tolerance:>6.3f} {r.margin:>6.3f} {o.correct:>8.1%} "
                    f"{o.wrong:>6.1%} {o.strangers_named:>5}/{o.strangers:<5} {o.false_accept:>6.2%} "
                    f"[{low:.1%}-{high:.1%}] {po.correct:>8.1%} ({r.compositions} draw"
                    f"{'s' if r.compositions > 1 else ''})",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results-matching-scale.json").write_text(json.dumps([r.row() for r in results], indent=1))
    print(f"wrote {args.out / 'results-matching-scale.json'} and {plot(results, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
