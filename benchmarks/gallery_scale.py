"""Gallery at scale: matching cost, recall, memory and load time at 10k, 100k and 1M faces.

Measured side by side in one run, on the same synthetic gallery per size (3 photos per
person, so 1M faces are 333k people; the default rule, ``centroid`` with cohort 5):

1. ms per face (median over every probe, one face per call, one core): exact search
   (``Gallery(ann_threshold=0)``), the shipped index (faiss IVF with 8-bit codes, the
   ``Gallery`` path above ``GALLERY_ANN_THRESHOLD``), and two HNSW graphs for comparison
   (usearch and faiss, the same exact re-ranking of their candidates);
2. recall@1 against exact search on the same gallery (the nearest person is the same), for
   photos of enrolled people and of strangers, the largest cohort-distance difference and
   how many of the rule's decisions differ; with lfw-dev's real encodings (from
   ``.cache/lfw-dev-encodings.npz``, made by ``python -m benchmarks.matching``) enrolled
   into the synthetic gallery, the same for real probes;
3. memory: resident memory of a fresh process holding the gallery (and its index), minus
   the same process's after its imports;
4. load: seconds for a new replica's ``GalleryFeed`` to load the gallery from the
   compacted topic of a private broker (``scripts/kafka.sh``, port 29092), as published
   by the API (``PersonEnrolled`` then ``FaceEnrolled`` per person), index build included;
5. the crossover: exact against the index by number of people, which sets the default
   ``GALLERY_ANN_THRESHOLD``.

Synthetic encodings: person centres around the mean of real encodings, photos around their
person's centre, with covariances fitted to lfw-dev's encodings when the cache exists
(otherwise spectra of the same shape): genuine pairs sit about 0.45 apart, impostors 0.8,
as with real faces, so the recall measured means something.

``python -m benchmarks.gallery_scale [--quick] [--out bench-results]``
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import queue as queue_module
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# One core per process, as in a recognizer replica (set before numpy loads its BLAS).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from benchmarks.synthetic_faces import SyntheticFaces, real_encodings  # noqa: E402
from recognizer.gallery import DIM, Gallery, default_rule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".cache" / "lfw-dev-encodings.npz"
PER_PERSON = 3
KAFKA_PORT, CONTROLLER_PORT = 29092, 29093
#: HNSW settings for the comparison: M 32, ef_construction 128, ef_search 256 reached
#: recall@1 0.99 at 333k people in the exploration (docs/MATCHING.md).
HNSW_M, HNSW_EF_ADD, HNSW_EF = 32, 128, 256

F32 = npt.NDArray[np.float32]


# ------------------------------------------------------------------------ galleries


@dataclass
class Synthetic:
    """A gallery's encodings: ``faces`` rows, ``PER_PERSON`` consecutive rows per person."""

    centres: F32
    faces: F32
    person_ids: list[str]
    face_ids: list[str]


def make_gallery_data(synth: SyntheticFaces, faces: int) -> Synthetic:
    people = faces // PER_PERSON
    centres = synth.centres(people)
    photos = synth.photos(np.repeat(centres, PER_PERSON, axis=0))
    ids = np.random.default_rng(faces)
    person_ids = [str(uuid.UUID(int=int(x), version=4)) for x in ids.integers(0, 2**63, people)]
    face_ids = [str(uuid.UUID(int=int(x), version=4)) for x in ids.integers(0, 2**63, people * PER_PERSON)]
    return Synthetic(centres, photos, person_ids, face_ids)


def fill(gallery: Gallery, data: Synthetic) -> Gallery:
    for p, pid in enumerate(data.person_ids):
        gallery.set_person(pid, f"person {p}")
    for row in range(len(data.faces)):
        gallery.add_face(data.person_ids[row // PER_PERSON], data.face_ids[row], data.faces[row])
    return gallery


# ------------------------------------------------------------------------ methods


@dataclass
class Found:
    """Per probe: the nearest person index, its distance and the cohort mean."""

    person: npt.NDArray[np.object_]  # person ids
    best: npt.NDArray[np.float64]
    cohort: npt.NDArray[np.float64]
    ms: list[float]


Method = Callable[[F32], tuple[str, float, float]]


def _time_each(probes: F32, one: Method) -> Found:
    one(probes[0])  # warm up
    person: list[str] = []
    best: list[float] = []
    cohort: list[float] = []
    ms: list[float] = []
    for p in probes:
        t0 = time.perf_counter()
        got = one(p)
        ms.append((time.perf_counter() - t0) * 1000)
        person.append(got[0])
        best.append(got[1])
        cohort.append(got[2])
    return Found(np.array(person, dtype=object), np.array(best), np.array(cohort), ms)


def gallery_method(gallery: Gallery, cohort: int) -> Method:
    """The product path: ``Gallery.match`` on one face, as a recognizer does per face."""
    rule = default_rule(cohort=cohort)

    def one(p: F32) -> tuple[str, float, float]:
        [m] = gallery.match(p[None, :], rule)
        assert m.nearest_person_id is not None
        assert m.distance is not None
        return m.nearest_person_id, m.distance, m.cohort_distance or math.nan

    return one


def rerank(
    gallery: Gallery, cohort: int
) -> tuple[F32, Callable[[F32, npt.NDArray[np.int64]], tuple[str, float, float]]]:
    """The gallery's centroids, and the exact re-ranking of an index's candidates among them
    (as ``Gallery`` re-ranks its own index's)."""
    # The very centroids the gallery searches (one per person index; every person has a face).
    cent = np.ascontiguousarray(gallery._cent[: len(gallery._person_ids)])
    csq = (cent * cent).sum(axis=1)

    def one(p: F32, ids: npt.NDArray[np.int64]) -> tuple[str, float, float]:
        ids = ids[ids >= 0]
        d = np.sqrt(np.maximum(float(p @ p) + csq[ids] - 2.0 * (cent[ids] @ p), 0.0))
        order = np.argsort(d, kind="stable")[: cohort + 1]
        best = gallery.person_id(int(ids[order[0]]))
        return best, round(float(d[order[0]]), 4), round(float(d[order[1:]].mean()), 4)

    return cent, one


def usearch_method(gallery: Gallery, cohort: int) -> tuple[Method, float]:
    from usearch.index import Index

    cent, exact = rerank(gallery, cohort)
    t0 = time.perf_counter()
    index = Index(
        ndim=DIM,
        metric="l2sq",
        dtype="f16",
        connectivity=HNSW_M,
        expansion_add=HNSW_EF_ADD,
        expansion_search=HNSW_EF,
    )
    index.add(np.arange(len(cent)), cent, threads=1)
    build = time.perf_counter() - t0

    def one(p: F32) -> tuple[str, float, float]:
        return exact(p, np.asarray(index.search(p, 32, threads=1).keys, dtype=np.int64))

    return one, build


def faiss_hnsw_method(gallery: Gallery, cohort: int) -> tuple[Method, float]:
    import faiss

    faiss.omp_set_num_threads(1)
    cent, exact = rerank(gallery, cohort)
    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(DIM, HNSW_M)
    index.hnsw.efConstruction = HNSW_EF_ADD
    index.add(cent)
    build = time.perf_counter() - t0
    index.hnsw.efSearch = HNSW_EF

    def one(p: F32) -> tuple[str, float, float]:
        return exact(p, index.search(p[None, :], 32)[1][0].astype(np.int64))

    return one, build


def compare(found: Found, exact: Found, genuine: int, tolerance: float, margin: float) -> dict[str, Any]:
    """Recall@1 against exact search (first ``genuine`` probes are enrolled people)."""
    same = found.person == exact.person

    def named(f: Found) -> npt.NDArray[np.object_]:
        ok = (f.best <= tolerance) & (np.nan_to_num(f.cohort, nan=np.inf) - f.best >= margin)
        out = f.person.copy()
        out[~ok] = None
        return out

    return {
        "recall_at_1": round(float(same.mean()), 4),
        "recall_at_1_enrolled": round(float(same[:genuine].mean()), 4),
        "recall_at_1_strangers": round(float(same[genuine:].mean()), 4),
        "cohort_max_abs_diff": round(float(np.nanmax(np.abs(found.cohort - exact.cohort))), 4),
        "decisions_differ": int((named(found) != named(exact)).sum()),
    }


# ------------------------------------------------------------------------ memory


def _reset_peak() -> None:
    """Start VmHWM (peak resident memory) afresh from now (Linux 4.0+)."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def _memory_child(faces: int, queue: Any) -> None:
    import faiss  # noqa: F401  (its libraries are part of the baseline, as in a replica)

    synth = SyntheticFaces(1, REAL)
    data = make_gallery_data(synth, faces)
    # The baseline: imports done and the inputs made (their arrays are not the gallery's).
    base = _rss_mb()
    _reset_peak()
    gallery = fill(Gallery(), data)
    gallery.prepare()
    queue.put(
        {
            "faces": faces,
            "people": gallery.people,
            "index": gallery.uses_index,
            "rss_mb": round(_rss_mb() - base, 1),
            "peak_rss_mb": round(_rss_mb("VmHWM") - base, 1),
        }
    )


def _in_fresh_process(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    """Run ``target(*args, queue)`` in a new interpreter; return what it puts on the queue."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    try:
        while True:
            try:
                out: dict[str, Any] = queue.get(timeout=1)
                return out
            except queue_module.Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"{target.__name__} exited with {proc.exitcode}") from None
    finally:
        proc.join(60)


def memory(faces: int) -> dict[str, Any]:
    """Resident memory a fresh process gains by holding a gallery of ``faces``."""
    return _in_fresh_process(_memory_child, faces)


# ------------------------------------------------------------------------ load from the topic


@contextmanager
def private_broker() -> Iterator[dict[str, Any]]:
    """A throwaway single-node broker on port 29092 (scripts/kafka.sh), removed afterwards."""
    run_dir = Path(tempfile.mkdtemp(prefix="gallery-bench-"))
    env = {
        **os.environ,
        "KAFKA_PORT": str(KAFKA_PORT),
        "KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT),
        "FACESTREAM_RUN_DIR": str(run_dir),
    }
    script = ROOT / "scripts" / "kafka.sh"
    try:
        subprocess.run(["bash", str(script), "start"], env=env, check=True)
        yield {"bootstrap.servers": f"127.0.0.1:{KAFKA_PORT}"}
    finally:
        subprocess.run(["bash", str(script), "stop"], env=env, check=False)
        shutil.rmtree(run_dir, ignore_errors=True)


def publish(conf: dict[str, Any], data: Synthetic) -> float:
    """Publish the gallery as the API does; returns seconds taken."""
    from confluent_kafka import Producer

    from common.kafka import ensure_topics, producer_config
    from recognizer.core import DetectionConfig
    from schemas import codec, topics
    from schemas.events import Box, FaceEnrolled, PersonEnrolled

    ensure_topics(conf)
    producer = Producer(producer_config(conf, **{"linger.ms": 50, "batch.size": 1 << 20}))
    model = DetectionConfig().model_info().model_copy(update={"num_jitters": 10})
    box = Box(top=10, right=90, bottom=90, left=10)
    now = datetime.now(UTC)

    def send(key: str, value: bytes) -> None:
        while True:
            try:
                producer.produce(topics.GALLERY, value=value, key=key)
                return
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.1)

    t0 = time.perf_counter()
    for p, pid in enumerate(data.person_ids):
        person = PersonEnrolled(person_id=pid, name=f"Person {p}", enrolled_at=now)
        send(topics.person_key(pid), codec.encode_data(person, source="api"))
        for row in range(p * PER_PERSON, (p + 1) * PER_PERSON):
            face = FaceEnrolled(
                person_id=pid,
                face_id=data.face_ids[row],
                # dlib's encodings arrive as float64: publish them so (their text is longer)
                encoding=[float(x) for x in data.faces[row].astype(np.float64)],
                model=model,
                box=box,
                source_sha256="0" * 64,
                filename=f"photo-{row}.jpg",
                enrolled_at=now,
            )
            send(topics.face_key(pid, data.face_ids[row]), codec.encode_data(face, source="api"))
        producer.poll(0)
    if producer.flush(600) != 0:
        raise RuntimeError("gallery events not delivered")
    return time.perf_counter() - t0


def _load_child(conf: dict[str, Any], queue: Any) -> None:
    import faiss  # noqa: F401  (part of a replica's baseline)

    from recognizer.worker import GalleryFeed

    base = _rss_mb()
    _reset_peak()
    gallery = Gallery()
    t0 = time.perf_counter()
    feed = GalleryFeed(conf, gallery)
    feed.load(timeout=3600)
    seconds = time.perf_counter() - t0
    feed.close()
    queue.put(
        {
            "faces": len(gallery),
            "people": gallery.people,
            "index": gallery.uses_index,
            "load_s": round(seconds, 1),
            "rss_mb": round(_rss_mb() - base, 1),
            "peak_rss_mb": round(_rss_mb("VmHWM") - base, 1),
        }
    )


def load_from_topic(faces: int) -> dict[str, Any]:
    """Publish ``faces`` to a private broker's gallery topic; time a fresh replica's load."""
    data = make_gallery_data(SyntheticFaces(2, REAL), faces)
    with private_broker() as conf:
        published = publish(conf, data)
        del data
        out = _in_fresh_process(_load_child, conf)
    return {**out, "publish_s": round(published, 1)}


# ------------------------------------------------------------------------ the run


def real_probes(synth_gallery: Gallery) -> tuple[F32, int] | None:
    """Enroll lfw-dev's known people (first 3 photos of those with 4+) into the gallery;
    their other photos, then the strangers' photos, are the probes."""
    if not REAL.exists():
        return None
    enc, names = real_encodings(REAL)
    enc32 = enc.astype(np.float32)
    known_probes, strangers = [], []
    for name in sorted(set(names)):
        rows = np.flatnonzero(names == name)
        if name.startswith("strangers/"):
            strangers += list(rows)
        elif len(rows) > PER_PERSON:
            for r in rows[:PER_PERSON]:
                synth_gallery.add_face(name, f"{name}/{r}", enc32[r])
            known_probes += list(rows[PER_PERSON:])
    return enc32[known_probes + strangers], len(known_probes)


def _median(xs: list[float]) -> float:
    return round(float(np.median(xs)), 3)


def scale(faces: int, probes_each: int, hnsw: bool) -> dict[str, Any]:
    """Every method on one gallery of ``faces`` synthetic faces (and the real people)."""
    rule = default_rule()
    synth = SyntheticFaces(1, REAL)
    data = make_gallery_data(synth, faces)
    genuine = synth.photos(data.centres[synth.rng.choice(len(data.centres), probes_each, replace=False)])
    probes = np.vstack([genuine, synth.photos(synth.centres(probes_each))])

    t0 = time.perf_counter()
    gallery = fill(Gallery(ann_threshold=0), data)
    fill_s = time.perf_counter() - t0
    real = real_probes(gallery)
    exact = _time_each(probes, gallery_method(gallery, rule.cohort))
    exact_real = _time_each(real[0], gallery_method(gallery, rule.cohort)) if real else None

    out: dict[str, Any] = {
        "faces": len(gallery),
        "people": gallery.people,
        "probes": len(probes),
        "fill_s": round(fill_s, 1),
        "methods": {"exact": {"ms_per_face": _median(exact.ms), "build_s": 0.0, "recall_at_1": 1.0}},
    }
    # The shipped index, through the same Gallery (forced on whatever the size).
    gallery.ann_threshold = 1
    t0 = time.perf_counter()
    gallery.prepare()
    build = time.perf_counter() - t0
    ivf = _time_each(probes, gallery_method(gallery, rule.cohort))
    row: dict[str, Any] = {"ms_per_face": _median(ivf.ms), "build_s": round(build, 2)}
    row.update(compare(ivf, exact, probes_each, rule.tolerance, rule.margin))
    if real and exact_real:
        real_ivf = _time_each(real[0], gallery_method(gallery, rule.cohort))
        cmp = compare(real_ivf, exact_real, real[1], rule.tolerance, rule.margin)
        row["real_lfw"] = {"probes": len(real[0]), "enrolled_probes": real[1], **cmp}
    out["methods"]["faiss-ivf-sq8 (shipped)"] = row

    if hnsw:
        for name, make in (("usearch-hnsw", usearch_method), ("faiss-hnsw", faiss_hnsw_method)):
            one, build = make(gallery, rule.cohort)
            found = _time_each(probes, one)
            row = {"ms_per_face": _median(found.ms), "build_s": round(build, 2)}
            row.update(compare(found, exact, probes_each, rule.tolerance, rule.margin))
            out["methods"][name] = row
    return out


def crossover(people_sizes: tuple[int, ...], probes: int) -> list[dict[str, Any]]:
    """Exact against the index by people (one photo each): where the index starts to pay."""
    rule = default_rule()
    synth = SyntheticFaces(3, REAL)
    rows = []
    for people in people_sizes:
        gallery = Gallery(ann_threshold=0)
        for i, v in enumerate(synth.photos(synth.centres(people))):
            gallery.add_face(str(i), str(i), v)
        ps = synth.photos(synth.centres(probes))
        exact = _time_each(ps, gallery_method(gallery, rule.cohort))
        gallery.ann_threshold = 1
        gallery.prepare()
        ivf = _time_each(ps, gallery_method(gallery, rule.cohort))
        rows.append({"people": people, "exact_ms": _median(exact.ms), "index_ms": _median(ivf.ms)})
    return rows


def table(results: dict[str, Any]) -> list[str]:
    lines = [
        f"{'faces':>9} {'method':<24} {'ms/face':>8} {'recall@1':>9} {'enrolled':>9} {'strangers':>9}"
        f" {'decisions':>9} {'build s':>8}"
    ]
    for size in results["sizes"]:
        for name, m in size["methods"].items():
            lines.append(
                f"{size['faces']:>9} {name:<24} {m['ms_per_face']:>8.3f} {m['recall_at_1']:>9.4f}"
                f" {m.get('recall_at_1_enrolled', 1.0):>9.4f} {m.get('recall_at_1_strangers', 1.0):>9.4f}"
                f" {m.get('decisions_differ', 0):>9} {m['build_s']:>8.1f}"
            )
            if "real_lfw" in m:
                r = m["real_lfw"]
                lines.append(
                    f"{'':>9} {'  real lfw-dev probes':<24} {'':>8} {r['recall_at_1']:>9.4f}"
                    f" {r['recall_at_1_enrolled']:>9.4f} {r['recall_at_1_strangers']:>9.4f}"
                    f" {r['decisions_differ']:>9}"
                )
    lines.append("memory (fresh process, gallery + index, MB over its baseline):")
    for m in results["memory"]:
        lines.append(
            f"  {m['faces']:>9} faces ({m['people']} people, index {m['index']}):"
            f" {m['rss_mb']:.0f} MB resident, {m['peak_rss_mb']:.0f} MB peak"
        )
    load = results.get("load")
    if load and "load_s" in load:
        lines.append(
            f"load from the compacted topic: {load['faces']} faces in {load['load_s']:.1f} s"
            f" ({load['rss_mb']:.0f} MB resident, {load['peak_rss_mb']:.0f} MB peak; published in"
            f" {load['publish_s']:.0f} s)"
        )
    elif load:
        lines.append(f"load from the compacted topic: not measured ({load.get('skipped')})")
    lines.append(
        "crossover (people: exact ms / index ms): "
        + ", ".join(f"{r['people']}: {r['exact_ms']:.2f}/{r['index_ms']:.2f}" for r in results["crossover"])
    )
    return lines


def plot(results: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    sizes = results["sizes"]
    names = list(sizes[0]["methods"])
    for name in names:
        xs = [s["faces"] for s in sizes if name in s["methods"]]
        ax1.plot(
            xs, [s["methods"][name]["ms_per_face"] for s in sizes if name in s["methods"]], "o-", label=name
        )
        ax2.plot(
            xs, [s["methods"][name]["recall_at_1"] for s in sizes if name in s["methods"]], "o-", label=name
        )
    cross = results["crossover"]
    ax1.plot(
        [r["people"] * PER_PERSON for r in cross],
        [r["exact_ms"] for r in cross],
        "k:",
        label="exact (crossover)",
    )
    ax1.plot(
        [r["people"] * PER_PERSON for r in cross],
        [r["index_ms"] for r in cross],
        "k--",
        label="index (crossover)",
    )
    ax1.axhline(5, color="grey", linewidth=0.8, linestyle=":")
    ax1.set(
        xscale="log", yscale="log", xlabel="enrolled faces (3 per person)", ylabel="ms per face, one core"
    )
    ax1.set_title("matching one face (median)")
    ax2.axhline(0.99, color="grey", linewidth=0.8, linestyle=":")
    ax2.set(xscale="log", xlabel="enrolled faces (3 per person)", ylabel="recall@1 vs exact")
    ax2.set_title("same nearest person as exact search")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "gallery_scale.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(quick: bool, out_dir: Path, load: bool = True) -> dict[str, Any]:
    """Measure (see the module docstring); writes ``out_dir/gallery_scale.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    probes_each = 300 if quick else 1000
    results: dict[str, Any] = {
        "per_person": PER_PERSON,
        "rule": default_rule().model_dump(),
        "synthetic": SyntheticFaces(0, REAL).source,
        "hnsw": {"M": HNSW_M, "ef_construction": HNSW_EF_ADD, "ef_search": HNSW_EF, "dtype_usearch": "f16"},
        "sizes": [],
    }
    for n in sizes:
        print(f"[gallery] {n} faces ...", flush=True)
        results["sizes"].append(scale(n, probes_each, hnsw=True))
    results["memory"] = [memory(n) for n in sizes]
    results["crossover"] = crossover((1_000, 2_500, 5_000, 10_000, 20_000, 40_000), 200 if quick else 500)
    load_faces = 100_000 if quick else 1_000_000
    if not load:
        results["load"] = {"skipped": "--no-load"}
    elif shutil.which("java") is None:
        results["load"] = {"skipped": "no Java for the private broker"}
    else:
        print(f"[gallery] load of {load_faces} faces from a private broker ...", flush=True)
        results["load"] = load_from_topic(load_faces)
    results["table"] = table(results)
    plot(results, out_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gallery_scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10k and 100k faces, fewer probes, load 100k")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--no-load", action="store_true", help="skip the load from a private broker")
    args = parser.parse_args(argv)
    from benchmarks.__main__ import machine

    results: dict[str, Any] = {"machine": machine(), "mode": "quick" if args.quick else "full"}
    results.update(run(args.quick, args.out, load=not args.no_load))
    (args.out / "gallery_scale.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(results["table"]))
    print(f"wrote {args.out / 'gallery_scale.json'} and {args.out / 'gallery_scale.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
