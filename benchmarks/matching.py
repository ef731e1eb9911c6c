"""Benchmark of the face matching decision rule on the shared lfw-dev photos.

Run ``python -m benchmarks.matching`` (see docs/MATCHING.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from api.settings import ApiSettings
from recognizer.gallery import Gallery, Nearest, default_rule
from schemas.events import MatchRule

Vector = npt.NDArray[np.float64]
Indices = npt.NDArray[np.intp]
#: (tolerance, margin, aggregation, cohort)
Rule = tuple[float, float, str, int]

ROOT = Path(__file__).resolve().parents[1]
DATASET = Path(os.environ.get("FACESTREAM_FACES", ROOT.parent / "shared" / "datasets" / "faces")) / "lfw-dev"
CACHE = ROOT / ".cache" / "lfw-dev-encodings.npz"
#: The shipped enrollment setting (``ENROLL_NUM_JITTERS``'s default), read from the API's
#: settings so the benchmark cannot drift from it; probes are always encoded with 1 jitter.
ENROLL_JITTERS: int = ApiSettings.model_fields["enroll_num_jitters"].default


def enroll_cache(num_jitters: int) -> Path:
    return ROOT / ".cache" / f"lfw-dev-enroll-jitter{num_jitters}.npz"


@dataclass(frozen=True)
class Photo:
    path: str  # relative to the dataset folder: the cache key
    name: str
    image_no: int
    set: str  # "known" or "stranger"


def save_figure(fig: Any, path: Path, dpi: int) -> Path:
    """Write a matplotlib figure as a PNG with a 256-colour palette (a quarter of the bytes
    of a full-colour one in the repository) and close it."""
    import matplotlib.pyplot as plt
    from PIL import Image

    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    with Image.open(path) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)
    return path


def read_manifest(dataset: Path) -> list[Photo]:
    with (dataset / "manifest.csv").open(newline="") as f:
        return [Photo(r["path"], r["name"], int(r["image_no"]), r["set"]) for r in csv.DictReader(f)]


def _encode_one(args: tuple[str, str]) -> tuple[str, Vector | None, int, str]:
    """Worker: (dataset, path) -> (path, largest face's encoding or None, faces found, error)."""
    from recognizer.core import DetectionConfig, find_faces, largest_face, load_image
    from recognizer.errors import ImageRejected

    dataset, path = args
    try:
        rgb = load_image((Path(dataset) / path).read_bytes())
    except ImageRejected as exc:
        return path, None, 0, str(exc)
    faces = find_faces(rgb, DetectionConfig())
    face = largest_face(faces)
    return path, None if face is None else face.encoding, len(faces), ""


def _enroll_one(args: tuple[str, str, int]) -> tuple[str, Vector | None, int, str]:
    """Worker: (dataset, path, jitters) -> the face enrollment would store, as ``_encode_one``.

    Calls the product's own ``recognizer.scan.scan_photo`` (``load_image``, ``find_faces``,
    ``largest_face``, then ``encode_box`` on the largest face's box with ``jitters`` copies).
    """
    from recognizer.scan import LARGEST, scan_photo
    from schemas.events import ScanFaceFound, ScanNoFace, ScanRejected

    dataset, path, num_jitters = args
    # The largest face, as the demo and the CLI enroll a portrait; a face enrollment would
    # refuse as a poor template is encoded all the same (the refusal is measured apart:
    # benchmarks.enroll_quality), so every photo's template is in the cache.
    found = scan_photo((Path(dataset) / path).read_bytes(), num_jitters, LARGEST, check_quality=False)
    if isinstance(found, ScanFaceFound):
        return path, np.array(found.encoding, dtype=np.float64), found.faces_found, ""
    if isinstance(found, ScanNoFace):
        return path, None, 0, ""
    return path, None, 0, found.detail if isinstance(found, ScanRejected) else "several faces"


@dataclass
class Encodings:
    """The largest face of each photo, by dataset-relative path (None: no face found)."""

    encoding: dict[str, Vector | None]
    faces_found: dict[str, int]
    errors: dict[str, str]


def _config_key(num_jitters: int = 1) -> str:
    """What the cached encodings depend on: detection settings and jitters (as enrollment records them)."""
    from recognizer.core import DetectionConfig

    info = DetectionConfig().model_info()
    if num_jitters != info.num_jitters:
        info = info.model_copy(update={"num_jitters": num_jitters})
    return info.model_dump_json()


def _file_key(dataset: Path, path: str) -> str:
    st = (dataset / path).stat()
    return f"{path}:{st.st_size}"


def load_cache(cache: Path, config: str) -> dict[str, tuple[Vector | None, int, str]]:
    """Cached results by file key (path and size), if the cache was made with ``config``."""
    if not cache.exists():
        return {}
    with np.load(cache, allow_pickle=False) as z:
        fields = {"config", "keys", "encodings", "found", "faces", "errors"}
        if not fields <= set(z.files) or str(z["config"]) != config:
            return {}  # another format or other settings: encoded afresh and overwritten
        keys = [str(k) for k in z["keys"]]
        enc, found, faces, errors = z["encodings"], z["found"], z["faces"], z["errors"]
        return {
            k: (enc[i].astype(np.float64) if found[i] else None, int(faces[i]), str(errors[i]))
            for i, k in enumerate(keys)
        }


def save_cache(cache: Path, config: str, entries: dict[str, tuple[Vector | None, int, str]]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(entries)
    enc = np.zeros((len(keys), 128), dtype=np.float64)
    found = np.zeros(len(keys), dtype=bool)
    for i, k in enumerate(keys):
        e = entries[k][0]
        if e is not None:
            enc[i], found[i] = e, True
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        config=np.array(config),
        keys=np.array(keys),
        encodings=enc,
        found=found,
        faces=np.array([entries[k][1] for k in keys], dtype=np.int32),
        errors=np.array([entries[k][2] for k in keys]),
    )
    tmp.replace(cache)


def encode_all(
    dataset: Path, paths: list[str], workers: int, cache: Path = CACHE, num_jitters: int = 1
) -> Encodings:
    """Encode every photo once (largest face), reusing and extending the cache.

    ``num_jitters`` 1 is the probes' encoding (``find_faces``); more is enrollment's
    (``scan_photo``), which re-encodes the same face box from jittered copies.
    """
    config = _config_key(num_jitters)
    entries = load_cache(cache, config)
    keys = {p: _file_key(dataset, p) for p in paths}
    todo = [p for p in paths if keys[p] not in entries]
    if todo:
        what = "photos" if num_jitters == 1 else f"enrollment photos at {num_jitters} jitters"
        print(f"encoding {len(todo)} {what} with {workers} worker(s) (cache: {cache}) ...", flush=True)
        t0 = time.perf_counter()
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            results: Iterator[tuple[str, Vector | None, int, str]] = (
                pool.imap_unordered(_encode_one, [(str(dataset), p) for p in todo], chunksize=4)
                if num_jitters == 1
                else pool.imap_unordered(_enroll_one, [(str(dataset), p, num_jitters) for p in todo])
            )
            every = 100 if num_jitters == 1 else 20
            for i, (path, enc, n, err) in enumerate(results, 1):
                entries[keys[path]] = (enc, n, err)
                if i % every == 0 or i == len(todo):
                    save_cache(cache, config, entries)
                    rate = i / (time.perf_counter() - t0)
                    print(f"  {i}/{len(todo)} ({rate:.2f} photos/s)", flush=True)
    out = Encodings({}, {}, {})
    for p in paths:
        enc, n, err = entries[keys[p]]
        out.encoding[p] = enc
        out.faces_found[p] = n
        if err:
            out.errors[p] = err
    return out


def enrollment_encodings(
    dataset: Path, photos: list[Photo], enc: Encodings, workers: int, num_jitters: int
) -> tuple[Encodings, float]:
    """``enc`` with every photo that some split enrolls re-encoded as enrollment does, and the seconds taken.

    With 1 jitter enrollment stores exactly the probes' encoding, so ``enc`` is returned.
    """
    if num_jitters == 1:
        return enc, 0.0
    t0 = time.perf_counter()
    paths = sorted({path for k in KS for _, path in make_split(photos, enc, k).enroll})
    jittered = encode_all(dataset, paths, workers, enroll_cache(num_jitters), num_jitters)
    for path in paths:  # same detector, same box: only the encoding may differ
        assert jittered.encoding[path] is not None, path
        assert jittered.faces_found[path] == enc.faces_found[path], path
    enrolled = Encodings({**enc.encoding, **jittered.encoding}, enc.faces_found, enc.errors)
    return enrolled, time.perf_counter() - t0


# --- protocol ---------------------------------------------------------------------------

PROTOCOL = (
    "For k enrollment photos per person: only known people with at least k+1 photos are enrolled, "
    "with their first k photos (in file order) in which a face was found; every other photo of an "
    "enrolled person is a known probe (a probe where no face is found counts as missed). Known people "
    "with too few photos are neither enrolled nor probed. Strangers are the strangers/ photos only "
    "(100 people, none enrolled); the false accept rate is over the stranger photos where a face was "
    "found. Each photo contributes its largest face."
)


@dataclass
class Split:
    k: int
    people: list[str]  # enrolled, in gallery order
    enroll: list[tuple[str, str]]  # (person, path), grouped by person in ``people`` order
    known: list[tuple[str, str]]  # probes of enrolled people
    strangers: list[str]


def make_split(photos: list[Photo], enc: Encodings, k: int) -> Split:
    by_person: dict[str, list[Photo]] = {}
    for p in photos:
        if p.set == "known":
            by_person.setdefault(p.name, []).append(p)
    split = Split(k, [], [], [], [p.path for p in photos if p.set == "stranger"])
    for name in sorted(by_person):
        mine = sorted(by_person[name], key=lambda p: p.image_no)
        if len(mine) < k + 1:
            continue
        with_face = [p for p in mine if enc.encoding[p.path] is not None]
        chosen = {p.path for p in with_face[:k]}
        if not chosen:
            continue  # no usable enrollment photo at all
        split.people.append(name)
        split.enroll += [(name, p.path) for p in mine if p.path in chosen]
        split.known += [(name, p.path) for p in mine if p.path not in chosen]
    return split


# --- decisions --------------------------------------------------------------------------

TOLERANCES = tuple(round(0.30 + 0.01 * i, 2) for i in range(36))  # 0.30 .. 0.65
MARGINS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.09, 0.10, 0.11, 0.12, 0.14, 0.16)
AGGREGATIONS = ("min", "mean", "centroid")
COHORTS = (1, 3, 5, 10)
#: face_recognition's customary rule: the nearest photo, named when within 0.6.
CUSTOMARY: Rule = (0.6, 0.0, "min", 1)
#: The previous default: nearest photo within 0.5 and 0.06 nearer than the runner-up.
PREVIOUS: Rule = (0.5, 0.06, "min", 1)
TARGET_CORRECT, TARGET_FALSE_ACCEPT, TARGET_K = 0.95, 0.05, 3
#: Enrollment photos per person, one split each.
KS = (1, 3)


def as_rule(rule: MatchRule) -> Rule:
    return (rule.tolerance, rule.margin, rule.aggregation, rule.cohort)


#: The shipped default (``default_rule()``; docs/MATCHING.md says why).
SHIPPED: Rule = as_rule(default_rule())


def build_gallery(split: Split, enc: Encodings) -> Gallery:
    """The gallery of ``split``'s enrollment photos, with their encodings in ``enc``."""
    gallery = Gallery()
    for name in split.people:
        gallery.set_person(name, name.replace("_", " "))
    for name, path in split.enroll:
        e = enc.encoding[path]
        assert e is not None
        gallery.add_face(name, path, e)
    # Person indices follow the order of first enrollment: split.people's.
    assert [gallery.person_id(i) for i in range(len(split.people))] == split.people
    return gallery


def decide(near: Nearest, tolerance: float, margin: float) -> Indices:
    """Index of the person named for each probe, -1 for unknown (``Gallery.match``'s rule)."""
    return np.where(near.accept(tolerance, margin), near.person, -1)


def check_against_gallery(
    gallery: Gallery,
    split: Split,
    probes: Vector,
    near: dict[tuple[str, int], Nearest],
    rng: np.random.Generator,
) -> int:
    """Assert that the vectorised decisions are ``Gallery.match``'s, on a sample of rules."""
    rules = {CUSTOMARY, PREVIOUS, SHIPPED}
    for agg in AGGREGATIONS:
        for _ in range(4):
            rules.add(
                (float(rng.choice(TOLERANCES)), float(rng.choice(MARGINS)), agg, int(rng.choice(COHORTS)))
            )
    for tol, margin, agg, cohort in sorted(rules):
        got = gallery.match(probes, default_rule(tol, margin, agg, cohort))
        want = decide(near[agg, cohort], tol, margin)
        for m, w in zip(got, want, strict=True):
            expected = None if w < 0 else split.people[int(w)]
            assert m.person_id == expected, (tol, margin, agg, cohort, m, expected)
    return len(rules)


# --- counting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    known: int  # known probe photos
    correct: int
    wrong: int  # named, but someone else
    missed: int  # unknown, or no face found
    no_face: int  # of the missed: no face found
    strangers: int  # stranger photos with a face
    strangers_named: int

    def rates(self) -> dict[str, float]:
        return {
            "correct": self.correct / self.known,
            "wrong": self.wrong / self.known,
            "missed": self.missed / self.known,
            "false_accept": self.strangers_named / self.strangers,
        }

    def row(self) -> dict[str, object]:
        return {**self.__dict__, **{f"{k}_rate": round(v, 4) for k, v in self.rates().items()}}


@dataclass
class Case:
    """One enrollment split, its probes and each aggregation's nearest people."""

    split: Split
    truth: Indices  # person index of each known probe with a face
    known_no_face: int
    n_known: int
    n_strangers: int  # with a face
    near_known: dict[tuple[str, int], Nearest]
    near_strangers: dict[tuple[str, int], Nearest]

    def counts(self, tolerance: float, margin: float, aggregation: str, cohort: int) -> Counts:
        named = decide(self.near_known[aggregation, cohort], tolerance, margin)
        s_named = decide(self.near_strangers[aggregation, cohort], tolerance, margin)
        correct = int(np.sum(named == self.truth))
        wrong = int(np.sum((named >= 0) & (named != self.truth)))
        return Counts(
            known=self.n_known,
            correct=correct,
            wrong=wrong,
            missed=self.n_known - correct - wrong,
            no_face=self.known_no_face,
            strangers=self.n_strangers,
            strangers_named=int(np.sum(s_named >= 0)),
        )


def make_case(
    photos: list[Photo], enc: Encodings, enrolled: Encodings, k: int, rng: np.random.Generator
) -> tuple[Case, int]:
    """Probes encoded as in ``enc`` (1 jitter), the gallery as in ``enrolled``."""
    split = make_split(photos, enc, k)
    gallery = build_gallery(split, enrolled)
    index = {name: i for i, name in enumerate(split.people)}
    known = [(name, path) for name, path in split.known if enc.encoding[path] is not None]
    strangers = [path for path in split.strangers if enc.encoding[path] is not None]
    known_probes = np.stack([enc.encoding[path] for _, path in known])  # type: ignore[misc]
    stranger_probes = np.stack([enc.encoding[path] for path in strangers])  # type: ignore[misc]
    case = Case(
        split=split,
        truth=np.array([index[name] for name, _ in known]),
        known_no_face=len(split.known) - len(known),
        n_known=len(split.known),
        n_strangers=len(strangers),
        near_known={(a, c): gallery.nearest(known_probes, a, c) for a in AGGREGATIONS for c in COHORTS},
        near_strangers={
            (a, c): gallery.nearest(stranger_probes, a, c) for a in AGGREGATIONS for c in COHORTS
        },
    )
    checked = check_against_gallery(gallery, split, known_probes, case.near_known, rng)
    checked += check_against_gallery(gallery, split, stranger_probes, case.near_strangers, rng)
    return case, checked


def face_recognition_direct(
    enc: Encodings, enrolled: Encodings, split: Split, tolerance: float = 0.6
) -> Counts:
    """The baseline without this project's code: face_recognition's own README recipe.

    ``compare_faces`` against every enrolled photo, then the name of the nearest photo if
    it matched (``face_distance``), as in face_recognition's examples; float64 throughout.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition

    known_encodings = [enrolled.encoding[path] for _, path in split.enroll]
    known_names = [name for name, _ in split.enroll]

    def name_of(path: str) -> str | None:
        e = enc.encoding[path]
        if e is None:
            return None
        matches = face_recognition.compare_faces(known_encodings, e, tolerance=tolerance)
        best = int(np.argmin(face_recognition.face_distance(known_encodings, e)))
        return known_names[best] if matches[best] else None

    correct = wrong = no_face = 0
    for name, path in split.known:
        got = name_of(path)
        correct += got == name
        wrong += got is not None and got != name
        no_face += enc.encoding[path] is None
    strangers = [p for p in split.strangers if enc.encoding[p] is not None]
    return Counts(
        known=len(split.known),
        correct=correct,
        wrong=wrong,
        missed=len(split.known) - correct - wrong,
        no_face=no_face,
        strangers=len(strangers),
        strangers_named=sum(name_of(p) is not None for p in strangers),
    )


# --- report -----------------------------------------------------------------------------


def rule_label(tolerance: float, margin: float, aggregation: str, cohort: int) -> str:
    return f"{aggregation} cohort={cohort} tol={tolerance:.2f} margin={margin:.2f}"


def grid() -> list[Rule]:
    return [(t, m, a, c) for a in AGGREGATIONS for c in COHORTS for m in MARGINS for t in TOLERANCES]


def neighbours(rule: Rule = SHIPPED) -> list[Rule]:
    """Settings around ``rule``, for the flatness table: tolerance x margin, then the other
    aggregations and cohort sizes at the same tolerance and margin."""
    tol, margin, agg, cohort = rule
    out: list[Rule] = []
    for dm in (-0.02, -0.01, 0.0, 0.01, 0.02):
        for dt in (-0.05, -0.02, 0.0, 0.02, 0.05):
            out.append((round(tol + dt, 2), round(max(0.0, margin + dm), 2), agg, cohort))
    out += [(tol, margin, a, cohort) for a in AGGREGATIONS if a != agg]
    out += [(tol, margin, agg, c) for c in COHORTS if c != cohort]
    return out


def sweep(case: Case) -> list[dict[str, object]]:
    return [{**rule_dict(r), **case.counts(*r).row()} for r in grid()]


def meets_target(c: Counts) -> bool:
    r = c.rates()
    return r["correct"] >= TARGET_CORRECT and r["false_accept"] <= TARGET_FALSE_ACCEPT


def target_ranges(case: Case) -> dict[str, tuple[float, float, int]]:
    """For each aggregation, cohort and margin: lowest and highest tolerance meeting the target."""
    out = {}
    for a in AGGREGATIONS:
        for c in COHORTS:
            for m in MARGINS:
                ok = [t for t in TOLERANCES if meets_target(case.counts(t, m, a, c))]
                if ok:
                    out[f"{a} cohort={c} margin={m:.2f}"] = (min(ok), max(ok), len(ok))
    return out


def best_tradeoffs(case: Case) -> dict[str, tuple[Rule, Counts] | None]:
    """The grid's best setting for each half of the target, holding the other half."""
    rules = grid()
    rates = {rule: case.counts(*rule).rates() for rule in rules}
    few = [r for r in rules if rates[r]["false_accept"] <= TARGET_FALSE_ACCEPT]
    many = [r for r in rules if rates[r]["correct"] >= TARGET_CORRECT]
    # Ties go to the smaller margin, then the larger tolerance.
    most = max(few, key=lambda r: (rates[r]["correct"], -r[1], r[0]), default=None)
    fewest = max(many, key=lambda r: (-rates[r]["false_accept"], -r[1], r[0]), default=None)
    return {
        "most correct with strangers named within target": None
        if most is None
        else (most, case.counts(*most)),
        "fewest strangers named with correct within target": (
            None if fewest is None else (fewest, case.counts(*fewest))
        ),
    }


def rule_dict(rule: Rule) -> dict[str, object]:
    return dict(zip(("tolerance", "margin", "aggregation", "cohort"), rule, strict=True))


def fmt_row(label: str, c: Counts) -> str:
    r = c.rates()
    return (
        f"  {label:<50} {100 * r['correct']:6.1f}% {100 * r['wrong']:6.1f}% {100 * r['missed']:6.1f}%"
        f" {100 * r['false_accept']:8.1f}%  ({c.strangers_named}/{c.strangers})"
    )


def timing(
    sizes: tuple[int, ...] = (10_000, 100_000), per_person: int = 3, faces: int = 50
) -> dict[str, object]:
    """Cost of ``Gallery.match`` per probe face with the shipped rule, on synthetic encodings.

    One face per call (an image with one face) and a batch of ``faces`` in one call; the
    gallery holds ``per_person`` encodings per person. BLAS threads are whatever the
    environment sets (``OPENBLAS_NUM_THREADS=1`` for one core).
    """
    rng = np.random.default_rng(1)
    rule = default_rule()
    out: dict[str, object] = {}
    for n in sizes:
        gallery = Gallery()
        vectors = rng.normal(scale=0.09, size=(n, 128))  # norm about 1, like dlib's encodings
        for i, v in enumerate(vectors):
            gallery.add_face(f"p{i // per_person}", f"f{i}", v)
        probes = rng.normal(scale=0.09, size=(faces, 128))
        gallery.match(probes[:1], rule)  # warm up
        t0 = time.perf_counter()
        for p in probes:
            gallery.match(p[None, :], rule)
        single = (time.perf_counter() - t0) / faces * 1000
        t0 = time.perf_counter()
        gallery.match(probes, rule)
        batch = (time.perf_counter() - t0) / faces * 1000
        out[str(n)] = {
            "people": gallery.people,
            "ms_per_face_one_per_call": round(single, 3),
            "ms_per_face_in_a_batch": round(batch, 3),
        }
        print(
            f"  {n:>7} encodings ({gallery.people} people): {single:.2f} ms per face one at a time,"
            f" {batch:.2f} ms per face in a batch of {faces}"
        )
    return out


def plot(cases: dict[int, Case], out: Path, enroll_jitters: int) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cases), figsize=(6.5 * len(cases), 5.5), sharey=True)
    colours = plt.get_cmap("tab10")
    _, s_margin, s_agg, s_cohort = SHIPPED
    families = (
        (s_agg, s_cohort, "-", sorted({0.0, 0.06, s_margin, 0.12})),
        ("min", 1, "--", [0.0, 0.06]),
    )
    for ax, (k, case) in zip(np.atleast_1d(axes), cases.items(), strict=True):
        i = 0
        for a, c, style, margins in families:
            for m in margins:
                cs = [case.counts(t, m, a, c).rates() for t in TOLERANCES]
                ax.plot(
                    [100 * r["false_accept"] for r in cs],
                    [100 * r["correct"] for r in cs],
                    style,
                    color=colours(i),
                    label=f"{a}, cohort {c}, margin {m:.2f}",
                    linewidth=1.2,
                )
                i += 1
        for rule, marker, name in (
            (SHIPPED, "*", "default"),
            (PREVIOUS, "P", "previous default"),
            (CUSTOMARY, "X", "0.6 (customary)"),
        ):
            r = case.counts(*rule).rates()
            ax.plot(
                100 * r["false_accept"],
                100 * r["correct"],
                marker,
                markersize=11,
                linestyle="none",
                color="crimson",
                label=f"{name}: {rule_label(*rule)}",
            )
        ax.axhline(100 * TARGET_CORRECT, color="grey", linewidth=0.8, linestyle=":")
        ax.axvline(100 * TARGET_FALSE_ACCEPT, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"{k} enrollment photo(s) per person: {len(case.split.people)} people")
        ax.set_xlabel("strangers given a name (%; logarithmic past 10)")
        ax.set_xscale("symlog", linthresh=10, linscale=2)  # linear up to 10 %, then logarithmic
        ax.set_xticks([0, 2, 4, 6, 8, 10, 20, 50, 100], ["0", "2", "4", "6", "8", "10", "20", "50", "100"])
        ax.set_xlim(0, 100)
        ax.set_ylim(50, 100)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("known probes named correctly, top-1 (%)")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        f"lfw-dev: correct vs false accept as tolerance sweeps 0.30-0.65 (dotted: target);"
        f" enrollment {enroll_jitters} jitter(s), probes 1"
    )
    fig.tight_layout()
    path = out / "matching.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.matching", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results", help="folder for the results")
    parser.add_argument("--workers", type=int, default=2, help="encoding processes (default 2)")
    parser.add_argument("--dataset", type=Path, default=DATASET, help="the lfw-dev folder")
    parser.add_argument("--cache", type=Path, default=CACHE, help="probe encodings cache (.npz)")
    parser.add_argument(
        "--enroll-jitters",
        type=int,
        default=ENROLL_JITTERS,
        metavar="N",
        help=f"jitters for enrollment photos (default {ENROLL_JITTERS}, the API's ENROLL_NUM_JITTERS;"
        " probes use 1); cached in .cache/lfw-dev-enroll-jitterN.npz",
    )
    parser.add_argument(
        "--timing", action="store_true", help="also time Gallery.match at 10k and 100k synthetic encodings"
    )
    args = parser.parse_args(argv)
    if args.enroll_jitters < 1:
        parser.error("--enroll-jitters must be at least 1")

    from recognizer.core import DetectionConfig

    t0 = time.perf_counter()
    photos = read_manifest(args.dataset)
    enc = encode_all(args.dataset, [p.path for p in photos], args.workers, args.cache)
    enrolled, enroll_s = enrollment_encodings(args.dataset, photos, enc, args.workers, args.enroll_jitters)
    no_face = sorted(p for p, e in enc.encoding.items() if e is None)
    several = sum(1 for n in enc.faces_found.values() if n > 1)
    rng = np.random.default_rng(0)
    cases: dict[int, Case] = {}
    checked = 0
    for k in KS:
        cases[k], n = make_case(photos, enc, enrolled, k, rng)
        checked += n

    highlights = {"default": SHIPPED, "previous default": PREVIOUS, "customary 0.6": CUSTOMARY}
    goal = (
        f"correct >= {TARGET_CORRECT:.0%} and strangers named <= {TARGET_FALSE_ACCEPT:.0%} with k={TARGET_K}"
    )
    k_results: dict[str, object] = {}
    results: dict[str, object] = {
        "dataset": str(args.dataset),
        "protocol": PROTOCOL,
        "detection": DetectionConfig().model_info().model_dump(),
        "enroll_num_jitters": args.enroll_jitters,
        "probe_num_jitters": 1,
        "default_rule": default_rule().model_dump(),
        "photos": len(photos),
        "no_face": no_face,
        "photos_with_several_faces": several,
        "decoding_errors": enc.errors,
        "target": {
            "k": TARGET_K,
            "correct_at_least": TARGET_CORRECT,
            "false_accept_at_most": TARGET_FALSE_ACCEPT,
        },
        "grid": {
            "tolerances": TOLERANCES,
            "margins": MARGINS,
            "aggregations": AGGREGATIONS,
            "cohorts": COHORTS,
        },
        "rules_checked_against_gallery_match": checked,
        "k": k_results,
    }
    print(f"\n{len(photos)} photos, no face found in {len(no_face)}: {', '.join(no_face) or '-'}")
    print(f"decisions checked against Gallery.match for {checked} rules on every probe: identical")
    jitters = f"enrollment photos encoded with {args.enroll_jitters} jitter(s), probes with 1"
    print(jitters + (f" (enrollment encodings took {enroll_s:.1f} s)" if enroll_s else ""))
    print(f"\nprotocol: {PROTOCOL}\n")
    header = f"  {'rule':<50} {'correct':>7} {'wrong':>7} {'missed':>7} {'strangers named':>16}"
    for k, case in cases.items():
        direct = face_recognition_direct(enc, enrolled, case.split)
        rows = {name: case.counts(*rule) for name, rule in highlights.items()}
        s = case.split
        print(
            f"k={k}: {len(s.people)} people enrolled ({len(s.enroll)} photos, {args.enroll_jitters}"
            f" jitter(s)), {case.n_known} known probes, {case.n_strangers} stranger probes with a face"
        )
        print(header)
        for name, rule in highlights.items():
            print(fmt_row(f"{name}: {rule_label(*rule)}", rows[name]))
        print(fmt_row("face_recognition's own recipe, 0.6", direct))
        print("  around the default:")
        for rule in neighbours():
            print(fmt_row(rule_label(*rule), case.counts(*rule)))
        ranges = target_ranges(case)
        tradeoffs = best_tradeoffs(case)
        if k == TARGET_K:
            print(f"  target ({goal}) met by:")
            for label, (lo, hi, n) in ranges.items():
                print(f"    {label}: tolerance {lo:.2f}..{hi:.2f} ({n} of {len(TOLERANCES)} steps)")
            if not ranges:
                print("    no setting of the grid; its best trade-offs:")
                for key, best in tradeoffs.items():
                    if best is not None:
                        print(f"    {key}: {rule_label(*best[0])}")
                        print(fmt_row("", best[1]))
        print()
        k_results[str(k)] = {
            "enrolled_people": len(s.people),
            "enrolled_photos": len(s.enroll),
            "enroll_num_jitters": args.enroll_jitters,
            "known_probes": case.n_known,
            "stranger_probes_with_face": case.n_strangers,
            "highlights": {
                name: {"rule": rule_dict(rule), **rows[name].row()} for name, rule in highlights.items()
            },
            "face_recognition_recipe_0.6": direct.row(),
            "around_the_default": [{**rule_dict(r), **case.counts(*r).row()} for r in neighbours()],
            "target_met_tolerance_ranges": ranges,
            "best_tradeoffs": {
                key: None if best is None else {"rule": rule_dict(best[0]), **best[1].row()}
                for key, best in tradeoffs.items()
            },
            "sweep": sweep(case),
        }
    if args.timing:
        print(f"Gallery.match with the default rule ({rule_label(*SHIPPED)}), synthetic encodings:")
        results["timing_ms"] = timing()
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "results-matching.json"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    png = plot(cases, args.out, args.enroll_jitters)
    print(f"wrote {json_path}" + (f" and {png}" if png else "") + f" in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
