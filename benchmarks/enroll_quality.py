"""Enrollment quality: how good a template a small, blurred or turned face makes.

Run ``python -m benchmarks.enroll_quality`` (part of ``make bench-matching``; ``--out DIR``,
default ``bench-results/``; ``--people N``, ``--seed S``, ``--workers N``). It needs the
shared photos (``lfw-dev/`` and ``lfw-distractors/`` under ``FACESTREAM_FACES`` or
``../shared/datasets/faces``) and reuses the encodings ``benchmarks.matching`` and
``benchmarks.matching_scale`` cache in ``.cache/``; its own measurements are cached in
``.cache/lfw-dev-enroll-quality.npz`` (the first run finds faces about 2,700 times:
about 11 minutes on 2 shared cores; later runs about 2 minutes). The limits in
:mod:`recognizer.quality` come from its figures (docs/MATCHING.md, "Enrollment quality").

Protocol. The gallery is lfw-dev's k = 1 gallery (``benchmarks.matching``): every known
person with at least two photos, their first photo with a face enrolled as enrollment
does (10 jitters). A *template* is one person's enrollment encoding put in place of that
person's own, everybody else's staying as shipped; its quality is what the shipped rule
(through ``Gallery.match``) then does. The rule is the one the recognizers derive for this
gallery of good templates from ``MATCH_FALSE_ACCEPT``'s default
(``matching_scale.shipped_rule``), derived once and kept for every swapped template, so
that a degraded template is judged against a good one with the same yardstick. One
template changed in 285 moves the derived rule little: the run derives it again with each
sampled person's two most degraded templates swapped in, and reports how often it is the
same and the span of the others (``rule_with_one_template_swapped``).

What a template does:

- with the person's other photos (encoded as probes, 1 jitter): the share named
  correctly, named as somebody else (wrong), or not named (missed, also when no face was
  found in the probe), and their distances to the template (genuine distances);
- with 2,600 faces of nobody in the gallery (lfw-dev's strangers and lfw-distractors,
  1 jitter): the share named as this person (a template that draws strangers harms the
  whole gallery, not just its owner).

Studies, on ``--people`` people drawn at random (seeded) and their enrollment photo:

- **Size**: the whole photo shrunk (area averaging) so the detected face is about 20 to
  80 px high, then found and encoded as enrollment does (``find_faces``, the largest
  face, ``encode_box``). Where the detector finds no face enrollment would answer "no
  face"; that is counted, and the template is still made from the shrunk box, to show
  what it would have been worth.
- **Blur**: the face's region (its box and a quarter of its height around it) blurred
  with a Gaussian of sigma 1% to 8% of the face's height, then found and encoded the same
  way, and its sharpness measured (:func:`recognizer.quality.sharpness`).
- **Pose**: no synthetic turn. Every photo of every gallery person (about 1,400), each in
  turn the person's only template, the others its probes, binned by the yaw measured
  from its landmarks (:func:`recognizer.quality.yaw`). These templates are the cached
  1-jitter encodings.

Degraded copies are encoded with 1 jitter, not enrollment's 10 (ten times less CPU); the
native photos are measured both ways to show what the difference is worth. Rates come
with 95% Wilson intervals over probes (a person's probes are not independent: the
intervals are a little narrow).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from benchmarks import matching as m
from benchmarks import matching_scale as ms
from recognizer import quality
from recognizer.gallery import Gallery
from schemas.events import MatchRule

Vector = npt.NDArray[np.float64]

CACHE = m.ROOT / ".cache" / "lfw-dev-enroll-quality.npz"
#: Target face heights (px) of the shrunk copies; the native faces are about 90-107 px.
HEIGHTS = (20, 30, 40, 50, 60, 80)
#: Blur sigmas, as a fraction of the face's height.
SIGMAS = (0.01, 0.02, 0.03, 0.05, 0.08)
#: The blurred region around the box, as a fraction of the box's height on each side
#: (the encoder's chip reaches a quarter of the face beyond its box).
BLUR_PAD = 0.25
#: |yaw| bins of the pose study (lower edges).
YAW_BINS = (0.0, 0.15, 0.3, 0.45, 0.6, 0.75)
#: Sharpness bins of the pooled natural and blurred templates (lower edges).
SHARPNESS_BINS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0)
#: Face height bins (px, lower edges) of the shrunk copies, by the box the detector drew.
HEIGHT_BINS = (0, 30, 40, 60, 80, 100)
PEOPLE = 100
SEED = 13

# --- measuring (in worker processes) -----------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One face as enrollment would take it: found by the detector or not, its quality and
    its encoding (1 jitter; from the box it was given when the detector found nothing)."""

    detected: bool
    height_px: int
    sharpness: float
    yaw: float
    encoding: Vector


def _enroll_face(
    rgb: npt.NDArray[np.uint8], fallback: quality.Location | None
) -> tuple[Measured, quality.Location] | None:
    """Enrollment's steps (``scan_photo`` with the largest face, 1 jitter), the face's
    quality and its box. Without a face found, the template is made from ``fallback``
    (None: no template)."""
    from recognizer.core import DetectionConfig, encode_box, find_faces, largest_face
    from schemas.events import Box

    face = largest_face(find_faces(rgb, DetectionConfig()))
    if face is None and fallback is None:
        return None
    if face is None:
        assert fallback is not None
        box = Box(top=fallback[0], right=fallback[1], bottom=fallback[2], left=fallback[3])
        encoding = encode_box(rgb, box, 1)
    else:
        box, encoding = face.box, face.encoding
    q = quality.measure(rgb, box)
    return Measured(face is not None, q.height_px, q.sharpness, q.yaw, encoding), (
        box.top,
        box.right,
        box.bottom,
        box.left,
    )


def _degrade(args: tuple[str, str]) -> tuple[str, dict[str, Measured]]:
    """Worker: (dataset, path) -> its measurements by study key ("native", "h40", "s0.02", ...)."""
    import cv2

    from recognizer.core import load_image

    dataset, path = args
    rgb = load_image((Path(dataset) / path).read_bytes())
    found = _enroll_face(rgb, None)
    if found is None:
        return path, {}
    out = {"native": found[0]}
    top, right, bottom, left = found[1]
    height = bottom - top
    h, w = rgb.shape[:2]
    for target in HEIGHTS:
        scale = target / height
        if scale >= 1:
            continue
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small: npt.NDArray[np.uint8] = np.ascontiguousarray(
            cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        )
        box = (round(top * scale), round(right * scale), round(bottom * scale), round(left * scale))
        shrunk = _enroll_face(small, box)
        assert shrunk is not None
        out[f"h{target}"] = shrunk[0]
    pad = round(BLUR_PAD * height)
    y0, y1, x0, x1 = max(0, top - pad), min(h, bottom + pad), max(0, left - pad), min(w, right + pad)
    for s in SIGMAS:
        blurred = rgb.copy()
        blurred[y0:y1, x0:x1] = cv2.GaussianBlur(np.ascontiguousarray(rgb[y0:y1, x0:x1]), (0, 0), s * height)
        got = _enroll_face(blurred, found[1])
        assert got is not None
        out[f"s{s}"] = got[0]
    return path, out


def _natural(args: tuple[str, str]) -> tuple[str, dict[str, Measured]]:
    """Worker: (dataset, path) -> {"natural": the photo's largest face} or {} without a face."""
    from recognizer.core import load_image

    dataset, path = args
    found = _enroll_face(load_image((Path(dataset) / path).read_bytes()), None)
    return path, {} if found is None else {"natural": found[0]}


# --- the cache --------------------------------------------------------------------------


def _config() -> str:
    """What the cached measurements depend on."""
    return json.dumps(
        {
            "detection": m._config_key(1),
            "heights": HEIGHTS,
            "sigmas": SIGMAS,
            "blur_pad": BLUR_PAD,
            "sharpness_side": quality.SHARPNESS_SIDE,
            "measure": 1,  # bump when recognizer.quality's measures change
        }
    )


Entries = dict[str, Measured]  # by "<file key>|<study key>"


def _load(cache: Path, config: str) -> tuple[Entries, set[str]]:
    """The cached measurements, and the file keys already done (with or without a face)."""
    if not cache.exists():
        return {}, set()
    with np.load(cache, allow_pickle=False) as z:
        if str(z["config"]) != config:
            return {}, set()
        entries = {
            str(k): Measured(bool(d), int(h), float(s), float(y), e.astype(np.float64))
            for k, d, h, s, y, e in zip(
                z["keys"], z["detected"], z["height"], z["sharpness"], z["yaw"], z["encodings"], strict=True
            )
        }
        return entries, {str(k) for k in z["done"]}


def _save(cache: Path, config: str, entries: Entries, done: set[str]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(entries)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        config=np.array(config),
        keys=np.array(keys),
        done=np.array(sorted(done)),
        detected=np.array([entries[k].detected for k in keys], dtype=bool),
        height=np.array([entries[k].height_px for k in keys], dtype=np.int32),
        sharpness=np.array([entries[k].sharpness for k in keys]),
        yaw=np.array([entries[k].yaw for k in keys]),
        encodings=np.stack([entries[k].encoding for k in keys]) if keys else np.zeros((0, 128)),
    )
    tmp.replace(cache)


def measure_all(
    jobs: dict[str, list[str]], workers: int, cache: Path = CACHE
) -> dict[str, dict[str, Measured]]:
    """Run ``_degrade`` on ``jobs["degrade"]``'s paths and ``_natural`` on ``jobs["natural"]``'s
    (lfw-dev paths), reusing and extending the cache; results by path, then study key."""
    config = _config()
    entries, done = _load(cache, config)
    keys = {p: m._file_key(m.DATASET, p) for paths in jobs.values() for p in paths}
    todo = [(kind, p) for kind, paths in jobs.items() for p in paths if f"{kind}:{keys[p]}" not in done]
    if todo:
        print(f"measuring {len(todo)} photos with {workers} worker(s) (cache: {cache}) ...", flush=True)
        t0 = time.perf_counter()
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            degrade = pool.imap_unordered(_degrade, [(str(m.DATASET), p) for k, p in todo if k == "degrade"])
            natural = pool.imap_unordered(
                _natural, [(str(m.DATASET), p) for k, p in todo if k == "natural"], chunksize=8
            )
            for i, (kind, (path, got)) in enumerate(_tagged(("degrade", degrade), ("natural", natural)), 1):
                key = f"{kind}:{keys[path]}"
                done.add(key)
                entries.update({f"{key}|{study}": v for study, v in got.items()})
                if i % 50 == 0 or i == len(todo):
                    _save(cache, config, entries, done)
                    print(f"  {i}/{len(todo)} ({i / (time.perf_counter() - t0):.2f} photos/s)", flush=True)
    by_key: dict[str, dict[str, Measured]] = {}
    for k, v in entries.items():
        key, study = k.split("|", 1)
        by_key.setdefault(key, {})[study] = v
    out: dict[str, dict[str, Measured]] = {}
    for kind, paths in jobs.items():
        for path in paths:
            out[path] = out.get(path, {}) | by_key.get(f"{kind}:{keys[path]}", {})
    return out


def _tagged(
    *streams: tuple[str, Iterable[tuple[str, dict[str, Measured]]]],
) -> Iterable[tuple[str, tuple[str, dict[str, Measured]]]]:
    for kind, stream in streams:
        for item in stream:
            yield kind, item


# --- judging templates ------------------------------------------------------------------


@dataclass
class Tally:
    """What a set of templates did; rates over their genuine probes, and over impostor trials."""

    templates: int = 0
    detection_failed: int = 0
    probes: int = 0
    correct: int = 0
    wrong: int = 0
    impostor_trials: int = 0  # templates x impostor faces
    impostors_named: int = 0
    genuine: list[float] = field(default_factory=list)
    height: list[float] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)
    yaw: list[float] = field(default_factory=list)
    #: (person, probe) -> named correctly; for paired comparisons of tallies that hold
    #: one template per person (the degraded copies).
    outcomes: dict[tuple[str, str], bool] = field(default_factory=dict)

    def row(self, tolerance: float) -> dict[str, object]:
        """The rates with 95% intervals; ``genuine_distance.within_tolerance``: the share of
        genuine distances within ``tolerance`` (the rule's)."""
        missed = self.probes - self.correct - self.wrong

        def rate(n: int, of: int) -> dict[str, object]:
            low, high = ms.wilson(n, of)
            return {
                "n": n,
                "of": of,
                "rate": round(n / of, 6) if of else None,
                "95": [round(low, 6), round(high, 6)],
            }

        g = np.array(self.genuine) if self.genuine else np.array([np.nan])
        return {
            "templates": self.templates,
            "detection_failed": rate(self.detection_failed, self.templates),
            "correct": rate(self.correct, self.probes),
            "wrong": rate(self.wrong, self.probes),
            "missed": rate(missed, self.probes),
            "impostors_named": rate(self.impostors_named, self.impostor_trials),
            "genuine_distance": {
                "p25": round(float(np.nanpercentile(g, 25)), 3),
                "median": round(float(np.nanmedian(g)), 3),
                "p75": round(float(np.nanpercentile(g, 75)), 3),
                "within_tolerance": round(float(np.mean(g <= tolerance)), 4),
            },
            "median_height_px": _median(self.height),
            "median_sharpness": _median(self.sharpness, 2),
            "median_abs_yaw": _median([abs(y) for y in self.yaw], 2),
        }


def _median(values: list[float], digits: int = 1) -> float | None:
    return round(float(np.median(values)), digits) if values else None


@dataclass
class Bench:
    """The k = 1 gallery, the rule derived for it (as shipped), the probes of each person in
    it, and the impostor faces."""

    gallery: Gallery
    rule: MatchRule
    enrolled: dict[str, tuple[str, Vector]]  # person -> (face id, shipped template)
    photos: dict[str, list[str]]  # person -> every photo, enrollment photo first
    probe: dict[str, Vector | None]  # path -> 1-jitter encoding
    impostors: Vector

    def judge(self, person: str, template: Vector, probes: list[str], into: Tally) -> None:
        """Add to ``into`` what ``template``, as ``person``'s only one, does with ``probes`` and
        the impostors; the gallery is left as it was."""
        face_id, shipped = self.enrolled[person]
        self.gallery.add_face(person, face_id, template)  # replaces the shipped one
        try:
            into.templates += 1
            into.probes += len(probes)
            with_face = [p for p in probes if self.probe[p] is not None]
            into.outcomes.update({(person, p): False for p in probes})  # no face: missed
            if with_face:
                own = np.stack([self.probe[p] for p in with_face])  # type: ignore[misc]
                named = [r.person_id for r in self.gallery.match(own, self.rule)]
                into.correct += sum(n == person for n in named)
                into.wrong += sum(n is not None and n != person for n in named)
                into.genuine += np.linalg.norm(own - template, axis=1).tolist()
                into.outcomes.update(
                    {(person, p): n == person for p, n in zip(with_face, named, strict=True)}
                )
            # Only a face within the tolerance of the template can be named as this person.
            near = np.linalg.norm(self.impostors - template, axis=1) <= self.rule.tolerance + 1e-4
            into.impostor_trials += len(self.impostors)
            if near.any():
                got = self.gallery.match(self.impostors[near], self.rule)
                into.impostors_named += sum(r.person_id == person for r in got)
        finally:
            self.gallery.add_face(person, face_id, shipped)


def load_bench(workers: int) -> Bench:
    photos = m.read_manifest(m.DATASET)
    probe = m.encode_all(m.DATASET, [p.path for p in photos], workers)
    enrolled, _ = m.enrollment_encodings(m.DATASET, photos, probe, workers, m.ENROLL_JITTERS)
    split = m.make_split(photos, probe, 1)
    with (ms.DISTRACTORS / "manifest.csv").open(newline="") as f:
        d_paths = [r["path"] for r in csv.DictReader(f)]
    d_probe = m.encode_all(ms.DISTRACTORS, d_paths, workers, ms.distractor_cache(1), 1)
    impostors = [probe.encoding[p] for p in split.strangers] + [d_probe.encoding[p] for p in d_paths]
    by_person: dict[str, list[str]] = {}
    for name, path in split.enroll + split.known:
        by_person.setdefault(name, []).append(path)
    gallery = m.build_gallery(split, enrolled)
    return Bench(
        gallery=gallery,
        rule=ms.shipped_rule(gallery),
        enrolled={name: (path, enrolled.encoding[path]) for name, path in split.enroll},  # type: ignore[misc]
        photos=by_person,
        probe=probe.encoding,
        impostors=np.stack([e for e in impostors if e is not None]),
    )


# --- the studies ------------------------------------------------------------------------


def degraded_study(
    bench: Bench, people: list[str], measured: dict[str, dict[str, Measured]]
) -> dict[str, Tally]:
    """Per study key: the tallies of the sampled people's degraded templates, and the
    native photo as shipped (10 jitters) and at 1 jitter."""
    out: dict[str, Tally] = {}
    for person in people:
        path, shipped = bench.enrolled[person]
        probes = bench.photos[person][1:]
        native = measured[path]["native"]
        _judge_into(
            bench,
            person,
            shipped,
            probes,
            native,
            out.setdefault(f"native {m.ENROLL_JITTERS} jitters", Tally()),
        )
        for key, got in measured[path].items():
            _judge_into(bench, person, got.encoding, probes, got, out.setdefault(key, Tally()))
    return out


def rule_with_one_swapped(
    bench: Bench, people: list[str], measured: dict[str, dict[str, Measured]]
) -> dict[str, object]:
    """How far one degraded template moves the derived rule: for each sampled person and
    each of their most degraded templates (the smallest and the most blurred), the rule
    derived for the gallery with that one template swapped in, against ``bench.rule``."""
    worst = (f"h{HEIGHTS[0]}", f"s{SIGMAS[-1]}")
    rules: list[MatchRule] = []
    for person in people:
        face_id, shipped = bench.enrolled[person]
        for key in worst:
            got = measured[face_id].get(key)
            if got is None:
                continue
            bench.gallery.add_face(person, face_id, got.encoding)
            try:
                rules.append(ms.shipped_rule(bench.gallery))
            finally:
                bench.gallery.add_face(person, face_id, shipped)

    def span(values: list[float]) -> list[float]:
        return [round(min(values), 5), round(max(values), 5)]

    same = sum((r.tolerance, r.margin) == (bench.rule.tolerance, bench.rule.margin) for r in rules)
    return {
        "templates": list(worst),
        "galleries": len(rules),
        "same_tolerance_and_margin": same,
        "tolerance": span([r.tolerance for r in rules]),
        "margin": span([r.margin for r in rules]),
        "false_accept_estimate": span([r.false_accept_estimate or 0.0 for r in rules]),
    }


def _judge_into(
    bench: Bench, person: str, template: Vector, probes: list[str], q: Measured, into: Tally
) -> None:
    bench.judge(person, template, probes, into)
    into.detection_failed += not q.detected
    into.height.append(q.height_px)
    into.sharpness.append(q.sharpness)
    into.yaw.append(q.yaw)


def paired(base: Tally, other: Tally) -> dict[str, object]:
    """``other`` against ``base`` on the same probes: named correctly by one and not the other."""
    assert base.outcomes.keys() == other.outcomes.keys()
    lost = sum(base.outcomes[k] and not v for k, v in other.outcomes.items())
    gained = sum(v and not base.outcomes[k] for k, v in other.outcomes.items())
    return {
        "lost": lost,
        "gained": gained,
        "net_points": round(100 * (gained - lost) / len(base.outcomes), 1),
    }


def natural_templates(
    bench: Bench, measured: dict[str, dict[str, Measured]]
) -> list[tuple[str, str, Measured]]:
    """(person, path, measurement) of every gallery person's photo with a face."""
    return [
        (person, path, measured[path]["natural"])
        for person, paths in bench.photos.items()
        for path in paths
        if "natural" in measured[path] and bench.probe[path] is not None
    ]


def binned(
    bench: Bench, items: list[tuple[str, Vector, list[str], Measured]], value: str, edges: tuple[float, ...]
) -> dict[str, Tally]:
    """Tallies of (person, template, probes, measurement) by the bin of the measurement's ``value``."""
    out: dict[str, Tally] = {}
    for person, template, probes, q in items:
        v = abs(q.yaw) if value == "yaw" else float(getattr(q, value))
        i = int(np.searchsorted(edges, v, side="right")) - 1
        hi = f"{edges[i + 1]:g}" if i + 1 < len(edges) else ""
        _judge_into(bench, person, template, probes, q, out.setdefault(f"{edges[i]:g}-{hi}", Tally()))
    return dict(sorted(out.items(), key=lambda kv: float(kv[0].split("-")[0])))


def natural_shares(natural: list[tuple[str, str, Measured]]) -> dict[str, object]:
    """How many natural photos each limit would refuse or flag (a limit's cost on normal photos)."""
    qs = [n[2] for n in natural]
    counts: dict[str, int] = {}
    for q in qs:
        for issue in quality.judge(quality.FaceQuality(q.height_px, q.sharpness, q.yaw)):
            counts[f"{issue.code} {issue.severity}"] = counts.get(f"{issue.code} {issue.severity}", 0) + 1
    s = np.array([q.sharpness for q in qs])
    y = np.abs([q.yaw for q in qs])
    return {
        "photos": len(qs),
        "judged": {k: {"n": v, "share": round(v / len(qs), 4)} for k, v in sorted(counts.items())},
        "sharpness_percentiles": {
            str(p): round(float(np.percentile(s, p)), 2) for p in (1, 5, 10, 25, 50, 75, 90)
        },
        "abs_yaw_percentiles": {
            str(p): round(float(np.percentile(y, p)), 2) for p in (10, 25, 50, 75, 90, 95, 99)
        },
        "height_percentiles": {str(p): int(np.percentile([q.height_px for q in qs], p)) for p in (1, 50, 99)},
    }


# --- report -----------------------------------------------------------------------------


def print_table(title: str, tallies: dict[str, Tally]) -> None:
    print(f"\n{title}")
    print(
        f"  {'':<18} {'n':>4} {'no face':>7} {'height':>6} {'sharp':>5} {'|yaw|':>5} {'probes':>6}"
        f" {'correct (95%)':>18} {'wrong':>6} {'missed':>6} {'genuine d':>9} {'impostors named':>15}"
    )
    for key, t in tallies.items():
        lo, hi = ms.wilson(t.correct, t.probes)
        missed = t.probes - t.correct - t.wrong
        print(
            f"  {key:<18} {t.templates:>4} {t.detection_failed:>7} {_median(t.height)!s:>6}"
            f" {_median(t.sharpness, 2)!s:>5} {_median([abs(y) for y in t.yaw], 2)!s:>5} {t.probes:>6}"
            f" {t.correct / t.probes:>7.1%} ({lo:.0%}-{hi:.0%}) {t.wrong / t.probes:>6.1%}"
            f" {missed / t.probes:>6.1%} {_median(t.genuine, 3)!s:>9}"
            f" {t.impostors_named:>5}/{t.impostor_trials:<9}",
            flush=True,
        )


@dataclass(frozen=True)
class Panel:
    """One study in the plot: its tallies, where each sits on the x axis, and its limits."""

    title: str
    xlabel: str
    tallies: dict[str, Tally]
    x: str  # the Tally list whose median places a tally: "height", "sharpness" or "yaw"
    refuse: float | None
    flag: float


def plot(panels: list[Panel], out: Path) -> Path:
    """Correct, missed and wrong (with 95% intervals) against each study's measure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.7 * len(panels), 5.2), sharey=True)
    for ax, panel in zip(axes, panels, strict=True):
        tallies = list(panel.tallies.values())
        xs = [float(np.median(np.abs(getattr(t, panel.x)))) for t in tallies]
        for what, colour in (("correct", "tab:green"), ("missed", "tab:orange"), ("wrong", "tab:red")):
            n = [
                t.correct
                if what == "correct"
                else t.wrong
                if what == "wrong"
                else t.probes - t.correct - t.wrong
                for t in tallies
            ]
            rates = [100 * k / t.probes for k, t in zip(n, tallies, strict=True)]
            bounds = [ms.wilson(k, t.probes) for k, t in zip(n, tallies, strict=True)]
            err = [
                [r - 100 * lo for r, (lo, _) in zip(rates, bounds, strict=True)],
                [100 * hi - r for r, (_, hi) in zip(rates, bounds, strict=True)],
            ]
            ax.errorbar(xs, rates, yerr=err, fmt="o-", color=colour, capsize=3, label=what)
        if panel.x == "height":
            failed = [100 * t.detection_failed / t.templates for t in tallies]
            ax.plot(xs, failed, "s--", color="grey", label="no face detected")
        for limit, style, name in ((panel.refuse, "-", "refuse"), (panel.flag, ":", "flag")):
            if limit is not None:
                ax.axvline(limit, color="black", linestyle=style, linewidth=1, label=f"{name} limit")
        ax.set_title(panel.title)
        ax.set_xlabel(panel.xlabel)
        ax.grid(alpha=0.3)
        ax.set_ylim(-2, 100)
    axes[0].set_ylabel("the person's other photos (%), shipped rule")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "lfw-dev, k = 1: one template per person in the 285-person gallery, by the template's quality"
        " (points: medians of bins)"
    )
    fig.tight_layout()
    path = out / "enroll_quality.png"
    return m.save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.enroll_quality", description=__doc__)
    parser.add_argument("--out", type=Path, default=m.ROOT / "bench-results")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--people", type=int, default=PEOPLE, help=f"people for the degraded copies ({PEOPLE})"
    )
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    bench = load_bench(args.workers)
    rng = np.random.default_rng(args.seed)
    people = sorted(
        rng.choice(sorted(bench.enrolled), size=min(args.people, len(bench.enrolled)), replace=False)
    )
    every = [p for paths in bench.photos.values() for p in paths]
    measured = measure_all(
        {"degrade": [bench.enrolled[p][0] for p in people], "natural": every}, args.workers
    )

    degraded = degraded_study(bench, people, measured)
    native = [f"native {m.ENROLL_JITTERS} jitters", "native"]
    size = {k: degraded[k] for k in native + [f"h{h}" for h in reversed(HEIGHTS)] if k in degraded}
    blur = {k: degraded[k] for k in native + [f"s{s}" for s in SIGMAS]}
    natural = natural_templates(bench, measured)
    pose_items = [
        (person, bench.probe[path], [p for p in bench.photos[person] if p != path], q)
        for person, path, q in natural
    ]
    pose = binned(bench, pose_items, "yaw", YAW_BINS)  # type: ignore[arg-type]
    blurred = [
        (person, got.encoding, bench.photos[person][1:], got)
        for person in people
        for key, got in measured[bench.enrolled[person][0]].items()
        if key.startswith("s")
    ]
    sharp = binned(bench, pose_items + blurred, "sharpness", SHARPNESS_BINS)  # type: ignore[arg-type]
    sharp_natural = binned(bench, pose_items, "sharpness", SHARPNESS_BINS)  # type: ignore[arg-type]
    shrunk = [
        (person, got.encoding, bench.photos[person][1:], got)
        for person in people
        for key, got in measured[bench.enrolled[person][0]].items()
        if key.startswith("h") or key == "native"
    ]
    by_height = binned(bench, shrunk, "height_px", HEIGHT_BINS)
    versus = {k: paired(degraded["native"], t) for k, t in degraded.items()}
    moved = rule_with_one_swapped(bench, people, measured)
    r = bench.rule
    print(
        f"rule derived for the {bench.gallery.people}-person gallery (MATCH_FALSE_ACCEPT"
        f" {r.false_accept_target:.0%}): tolerance {r.tolerance}, margin {r.margin}, estimate"
        f" {r.false_accept_estimate} ({r.calibration}); with one degraded template swapped in: {moved}"
    )
    print_table("size (shrunk photos; 'native' is 1 jitter like the copies), by target height:", size)
    print_table("size, by the height of the box the detector drew (20 px: none, the shrunk box):", by_height)
    print_table(f"blur (sigma as a share of the face's height), {len(people)} people:", blur)
    print("\npaired against the native photo at 1 jitter (probes lost, gained, net points):")
    for k, v in versus.items():
        print(f"  {k:<18} {v}")
    print_table("sharpness, natural and blurred templates pooled, by measured sharpness:", sharp)
    print_table("sharpness, natural photos only:", sharp_natural)
    print_table("pose: every natural photo as the template, by |yaw|:", pose)
    shares = natural_shares(natural)
    print(f"\nthe limits on {shares['photos']} natural lfw-dev photos: {json.dumps(shares['judged'])}")
    print(f"sharpness percentiles {shares['sharpness_percentiles']}; |yaw| {shares['abs_yaw_percentiles']}")

    tol = bench.rule.tolerance
    results = {
        "protocol": __doc__,
        "rule": bench.rule.model_dump(),
        "rule_with_one_template_swapped": moved,
        "gallery_people": bench.gallery.people,
        "impostor_faces": len(bench.impostors),
        "people_sampled": len(people),
        "seed": args.seed,
        "degraded_num_jitters": 1,
        "limits": {
            "min_height_refuse": quality.MIN_HEIGHT_REFUSE,
            "min_height_flag": quality.MIN_HEIGHT_FLAG,
            "min_sharpness_refuse": quality.MIN_SHARPNESS_REFUSE,
            "min_sharpness_flag": quality.MIN_SHARPNESS_FLAG,
            "max_yaw_flag": quality.MAX_YAW_FLAG,
        },
        "size": {k: {**t.row(tol), "vs_native_1_jitter": versus[k]} for k, t in size.items()},
        "size_by_height": {k: t.row(tol) for k, t in by_height.items()},
        "blur": {k: {**t.row(tol), "vs_native_1_jitter": versus[k]} for k, t in blur.items()},
        "sharpness": {k: t.row(tol) for k, t in sharp.items()},
        "sharpness_natural": {k: t.row(tol) for k, t in sharp_natural.items()},
        "pose": {k: t.row(tol) for k, t in pose.items()},
        "natural_photos": shares,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "enroll_quality-2cores.json"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    png = plot(
        [
            Panel(
                "shrunk photos (100 people)",
                "face box height (px)",
                by_height,
                "height",
                quality.MIN_HEIGHT_REFUSE,
                quality.MIN_HEIGHT_FLAG,
            ),
            Panel(
                "natural and blurred faces",
                "sharpness",
                sharp,
                "sharpness",
                quality.MIN_SHARPNESS_REFUSE,
                quality.MIN_SHARPNESS_FLAG,
            ),
            Panel("natural photos as templates", "|yaw|", pose, "yaw", None, quality.MAX_YAW_FLAG),
        ],
        args.out,
    )
    print(f"wrote {json_path} and {png} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
