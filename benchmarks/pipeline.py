"""Pipeline benchmarks on the real broker and database: how close the platform gets to the model.

Measured side by side in one run, on the same lfw-dev photos:

1. efficiency: images/s through the whole platform (ingest answer to result queryable in
   PostgreSQL) over images/s of calling ``recognizer.core.recognize`` directly, with the
   same number of processes;
2. scale-out: both throughputs with 1, 2, ... N recognizer processes;
3. latency: per image, from the ingest's answer to the result being queryable, at 50 %
   and 90 % of the saturated throughput, next to the model's own time for that image;
4. ingest: accepted images/s and MB/s for one ingest process pinned to one core;
5. large photos: recognizing a 4000-pixel photo with and without downscaling for detection.

Run through ``python -m benchmarks`` (``make bench``), which writes the JSON and the plots.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np

from common.kafka import ensure_topics, producer_config
from common.migrate import apply_migrations
from recognizer.core import DetectionConfig, FoundFace, find_faces, largest_face, load_image, recognize
from recognizer.gallery import Gallery, default_rule
from schemas import codec, lifecycle, topics
from schemas.envelope import new_id
from schemas.events import FaceEnrolled, PersonEnrolled
from tests.platform import ADMIN_KEY, Platform, start_platform, wait_ready

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("FACESTREAM_FACES", ROOT.parent / "shared" / "datasets" / "faces"))
RUN_DIR = ROOT / ".run" / "bench"
KAFKA_PORT, PG_PORT = 29192, 25532
#: ingest, api, stream, recognizer
PORTS = (28000, 28001, 26066, 29101)
FINAL = tuple(s.value for s in lifecycle.FINAL)
#: Passes over the probe photos in each latency run (40 photos in quick mode: 120 images).
LATENCY_PASSES = 3


# ------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Photos:
    """Probe photos (bytes) and the enrollment photos of the gallery, from lfw-dev."""

    probes: list[bytes]
    enroll: list[tuple[str, bytes]]  # (person name, photo)


def lfw_photos(n_probes: int, n_people: int = 50) -> Photos:
    known = FACES / "lfw-dev" / "known"
    people = sorted(p for p in known.iterdir() if p.is_dir())
    enroll = [(p.name, sorted(p.glob("*.jpg"))[0].read_bytes()) for p in people[:n_people]]
    # Probes: each person's second, third, ... photo, round-robin over people.
    later = [sorted(p.glob("*.jpg"))[1:] for p in people]
    probes: list[bytes] = []
    for i in range(max(len(x) for x in later)):
        probes += [x[i].read_bytes() for x in later if i < len(x)]
    return Photos(probes=probes[:n_probes], enroll=enroll)


def _encode_enrollment(photo: bytes) -> FoundFace | None:
    return largest_face(find_faces(load_image(photo), DetectionConfig()))


def gallery_events(photos: Photos) -> list[tuple[str, PersonEnrolled | FaceEnrolled]]:
    """PersonEnrolled and FaceEnrolled events for the enrollment photos, keyed as the API keys them."""
    out: list[tuple[str, PersonEnrolled | FaceEnrolled]] = []
    now = datetime.now(UTC)
    for name, photo in photos.enroll:
        found = _encode_enrollment(photo)
        if found is None:
            continue
        person, face = new_id(), new_id()
        out.append((topics.person_key(person), PersonEnrolled(person_id=person, name=name, enrolled_at=now)))
        out.append(
            (
                topics.face_key(person, face),
                FaceEnrolled(
                    person_id=person,
                    face_id=face,
                    encoding=[float(x) for x in found.encoding],
                    model=DetectionConfig().model_info(),
                    box=found.box,
                    enrolled_at=now,
                ),
            )
        )
    return out


def build_gallery(events: list[tuple[str, PersonEnrolled | FaceEnrolled]]) -> Gallery:
    gallery = Gallery()
    for _, e in events:
        if isinstance(e, PersonEnrolled):
            gallery.set_person(e.person_id, e.name)
        else:
            gallery.add_face(e.person_id, e.face_id, e.encoding)
    return gallery


# --------------------------------------------------------------- the model alone

_worker_gallery: Gallery | None = None


def _init_direct(events: list[tuple[str, PersonEnrolled | FaceEnrolled]], warm: bytes) -> None:
    global _worker_gallery
    _worker_gallery = build_gallery(events)
    recognize(warm, _worker_gallery, default_rule(), DetectionConfig())  # load dlib's models


def _recognize_timed(photo: bytes) -> float:
    assert _worker_gallery is not None
    t = time.perf_counter()
    recognize(photo, _worker_gallery, default_rule(), DetectionConfig())
    return (time.perf_counter() - t) * 1000


def _barrier(_: int) -> int:
    time.sleep(0.2)  # every worker is up and initialised before the clock starts
    return os.getpid()


@contextmanager
def direct_pool(
    workers: int, events: list[tuple[str, PersonEnrolled | FaceEnrolled]], warm: bytes
) -> Iterator[ProcessPoolExecutor]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_direct, initargs=(events, warm)
    ) as pool:
        list(pool.map(_barrier, range(workers * 4)))
        yield pool


def direct_throughput(pool: ProcessPoolExecutor, probes: Sequence[bytes]) -> tuple[float, list[float]]:
    """(images/s, per-image model time in ms) of ``recognize`` over ``probes`` in ``pool``."""
    t = time.perf_counter()
    per_image = list(pool.map(_recognize_timed, probes, chunksize=1))
    return len(probes) / (time.perf_counter() - t), per_image


# ------------------------------------------------------------------ the platform


def _script(name: str, action: str, env: dict[str, str]) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / name), action],
        check=True,
        env={**os.environ, "PYTHON": sys.executable, "FACESTREAM_RUN_DIR": str(RUN_DIR), **env},
        stdout=subprocess.DEVNULL,
    )


_KAFKA_ENV = {"KAFKA_PORT": str(KAFKA_PORT), "KAFKA_CONTROLLER_PORT": str(KAFKA_PORT + 1)}
_PG_ENV = {"PG_PORT": str(PG_PORT), "PG_DIR": f"/tmp/facestream-bench-pg-{PG_PORT}"}


@contextmanager
def stack() -> Iterator[tuple[str, str]]:
    """A fresh broker and database on the benchmark's own ports: (bootstrap, database url)."""
    for path in (RUN_DIR / f"kafka-{KAFKA_PORT}", Path(_PG_ENV["PG_DIR"])):
        shutil.rmtree(path, ignore_errors=True)
    _script("kafka.sh", "start", _KAFKA_ENV)
    try:
        _script("postgres.sh", "start", _PG_ENV)
        try:
            database_url = f"postgresql://facestream:facestream@127.0.0.1:{PG_PORT}/facestream"
            apply_migrations(database_url)  # as make up does: the services run no DDL
            yield (f"127.0.0.1:{KAFKA_PORT}", database_url)
        finally:
            _script("postgres.sh", "stop", _PG_ENV)
    finally:
        _script("kafka.sh", "stop", _KAFKA_ENV)


def publish_gallery(bootstrap: str, events: list[tuple[str, PersonEnrolled | FaceEnrolled]]) -> None:
    """Enroll through the public gallery topic, as the API does."""
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": bootstrap}
    ensure_topics(conf)
    producer = Producer(producer_config(conf))
    for key, event in events:
        producer.produce(topics.GALLERY, key=key, value=codec.encode_data(event, source="benchmark"))
    if producer.flush(30):
        raise RuntimeError("gallery events not acknowledged")


def set_workers(platform: Platform, workers: int) -> None:
    """Restart the recognizer pool with ``workers`` processes."""
    platform.stop("recognizer")
    platform.start("recognizer", "--workers", str(workers), ready_url=f"{platform.recognizer_url}/readyz")


def submit(client: httpx.Client, photos: Sequence[bytes], batch: int = 10) -> list[tuple[str, float]]:
    """Upload ``photos`` in batches; (image id, time.time() of the ingest's answer) each."""
    out: list[tuple[str, float]] = []
    for i in range(0, len(photos), batch):
        files = [("files", (f"p{i + j}.jpg", p, "image/jpeg")) for j, p in enumerate(photos[i : i + batch])]
        r = client.post("/v1/images", files=files)
        answered = time.time()
        r.raise_for_status()
        out += [(item["id"], answered) for item in r.json()["data"]]
    return out


async def _finished(database_url: str, ids: list[str]) -> dict[str, float]:
    """image id -> when its final status was written (epoch seconds), for the final ones."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT id::text, extract(epoch FROM updated_at)::float8 AS at FROM images "
            "WHERE id = ANY($1::uuid[]) AND status = ANY($2::text[])",
            ids,
            list(FINAL),
        )
    finally:
        await conn.close()
    return {r["id"]: r["at"] for r in rows}


def wait_finished(database_url: str, ids: list[str], timeout: float = 600) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        done = asyncio.run(_finished(database_url, ids))
        if len(done) == len(ids):
            return done
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids) - len(done)} of {len(ids)} images not final after {timeout}s")
        time.sleep(0.2)


def _cpu_seconds(pids: set[int]) -> float:
    """CPU time (user + system, of reaped children too) of ``pids`` and all their descendants."""
    stats: dict[int, tuple[int, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tick)
    total, seen = 0.0, set()
    for pid in stats:
        p = pid
        while p in stats and p not in pids and p > 1:
            p = stats[p][0]
        if p in pids and pid not in seen:
            seen.add(pid)
            total += stats[pid][1]
    return total


def component_pids(platform: Platform) -> dict[str, set[int]]:
    """The root process of each part of the platform (services, broker, database)."""
    pids = {name: {proc.pid} for name, proc in platform.procs.items()}
    kafka = RUN_DIR / f"kafka-{KAFKA_PORT}" / "kafka.pid"
    postgres = Path(_PG_ENV["PG_DIR"]) / "data" / "postmaster.pid"
    for name, path in (("kafka", kafka), ("postgres", postgres)):
        if path.exists():
            pids[name] = {int(path.read_text().split()[0])}
    return pids


def pipeline_throughput(
    platform: Platform, database_url: str, probes: Sequence[bytes], cpu: dict[str, list[float]] | None = None
) -> float:
    """Images/s from the first upload to the last result queryable in PostgreSQL.

    With ``cpu``, appends each component's CPU milliseconds per image to ``cpu[name]``.
    """
    parts = component_pids(platform)
    before = {name: _cpu_seconds(pids) for name, pids in parts.items()}
    with httpx.Client(base_url=platform.ingest_url, headers=platform.headers, timeout=60) as client:
        start = time.time()
        ids = [i for i, _ in submit(client, probes)]
    done = wait_finished(database_url, ids)
    if cpu is not None:
        for name, pids in parts.items():
            cpu.setdefault(name, []).append((_cpu_seconds(pids) - before[name]) * 1000 / len(ids))
    return len(ids) / (max(done.values()) - start)


def latency_at(
    platform: Platform, database_url: str, probes: Sequence[bytes], rate: float
) -> list[tuple[int, float]]:
    """Submit one image every 1/``rate`` s (open loop); (probe index, latency ms) for each."""
    sent: list[tuple[int, str, float]] = []
    with httpx.Client(base_url=platform.ingest_url, headers=platform.headers, timeout=60) as client:
        start = time.monotonic()
        for n, photo in enumerate(probes):
            pause = start + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            ((image_id, answered),) = submit(client, [photo])
            sent.append((n, image_id, answered))
    done = wait_finished(database_url, [i for _, i, _ in sent])
    return [(n, (done[i] - answered) * 1000) for n, i, answered in sent]


# ------------------------------------------------------------------------ ingest


def ingest_throughput(
    platform: Platform, photos: Sequence[bytes], seconds: float, batch: int
) -> dict[str, float]:
    """One ingest process pinned to core 0; this client on the other cores, 16 requests in flight."""
    cores = sorted(os.sched_getaffinity(0))
    env = {**platform.env, "INGEST_PORT": str(PORTS[0] + 10)}
    url = f"http://127.0.0.1:{PORTS[0] + 10}"
    proc = subprocess.Popen(
        ["taskset", "-c", str(cores[0]), sys.executable, "-m", "ingest"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready("ingest (pinned)", f"{url}/readyz", proc)
        if len(cores) > 1:
            # The broker and this client use the other cores: the ingest core is its own.
            os.sched_setaffinity(0, cores[1:])
            kafka = component_pids(platform).get("kafka", set())
            for pid in kafka:
                _pin_all_threads(pid, ",".join(map(str, cores[1:])))
        accepted, sent_bytes, elapsed = asyncio.run(_hammer(url, photos, seconds, batch))
    finally:
        os.sched_setaffinity(0, cores)
        for pid in component_pids(platform).get("kafka", set()):
            _pin_all_threads(pid, ",".join(map(str, cores)))
        proc.terminate()
        proc.wait(30)
    return {"images_per_s": accepted / elapsed, "mb_per_s": sent_bytes / elapsed / 1e6, "batch": batch}


def multipart(photos: Sequence[bytes], boundary: str = "facestreambenchboundary") -> tuple[bytes, str]:
    """A ready-made ``files`` upload of ``photos`` (body, content type): the client then costs
    almost nothing per request, so the ingest process, not the load generator, is measured."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{i}.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + photo
        + b"\r\n"
        for i, photo in enumerate(photos)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _pin_all_threads(pid: int, cpus: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=False, stdout=subprocess.DEVNULL)


async def _hammer(url: str, photos: Sequence[bytes], seconds: float, batch: int) -> tuple[int, int, float]:
    """Upload from 16 keep-alive connections for ``seconds``: (images accepted, bytes, elapsed).

    A minimal HTTP/1.1 client over asyncio streams with the requests built beforehand:
    httpx costs milliseconds of CPU per request, which on a small machine would measure
    the load generator instead of the ingest process.
    """
    host, port = url.removeprefix("http://").split(":")
    requests = []
    for i in range(len(photos)):
        chunk = [photos[(i + k) % len(photos)] for k in range(batch)]
        body, ctype = multipart(chunk)
        head = (
            f"POST /v1/images HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {ADMIN_KEY}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        requests.append((head + body, sum(len(c) for c in chunk)))
    accepted = sent_bytes = 0
    deadline = time.monotonic() + seconds

    async def one(worker: int) -> None:
        nonlocal accepted, sent_bytes
        reader, writer = await asyncio.open_connection(host, int(port))
        i = worker
        try:
            while time.monotonic() < deadline:
                request, size = requests[i % len(requests)]
                i += 1
                writer.write(request)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if status == 202:
                    accepted += batch
                    sent_bytes += size
        finally:
            writer.close()

    start = time.monotonic()
    await asyncio.gather(*(one(w) for w in range(16)))
    return accepted, sent_bytes, time.monotonic() - start


# ------------------------------------------------------------------ large photos


def large_photos(repeats: int) -> list[dict[str, Any]]:
    """Each large photo recognized with the default downscaling for detection, and without."""
    out = []
    gallery, rule = Gallery(), default_rule()
    for path in sorted((FACES / "extras" / "large").glob("*.jpg")):
        data = path.read_bytes()
        row: dict[str, Any] = {"photo": path.name, "megapixels": round(load_image(data).size / 3 / 1e6, 1)}
        for label, cfg in (
            ("downscaled", DetectionConfig()),
            ("full", DetectionConfig(detection_max_side=1_000_000)),
        ):
            times, faces = [], 0
            for _ in range(repeats):
                t = time.perf_counter()
                result = recognize(data, gallery, rule, cfg)
                times.append(time.perf_counter() - t)
                faces = len(result.faces)
            row[f"{label}_s"] = round(statistics.median(times), 2)
            row[f"{label}_faces"] = faces
        row["speedup"] = round(row["full_s"] / row["downscaled_s"], 1)
        out.append(row)
    return out


# ---------------------------------------------------------------------- the run


def run(quick: bool, out_dir: Path) -> dict[str, Any]:
    """All pipeline benchmarks; returns their JSON-able results (and writes the plots)."""
    cores = len(os.sched_getaffinity(0))
    n = 40 if quick else 160
    repeats = 3 if quick else 5
    photos = lfw_photos(n_probes=max(n, 60))
    probes = photos.probes[:n]
    events = gallery_events(photos)
    levels = sorted({1, cores} if quick else {1, *range(2, cores + 1, max(1, cores // 8))} | {cores})
    results: dict[str, Any] = {"images": n, "repeats": repeats, "gallery_faces": len(events) // 2}

    with stack() as (bootstrap, database_url):
        publish_gallery(bootstrap, events)
        platform = start_platform(
            bootstrap,
            database_url,
            FACES,
            workers=levels[0],
            ports=PORTS,
            env={"WORKERS": str(levels[0])},
            log_dir=RUN_DIR / "logs",
        )
        try:
            pipeline_throughput(platform, database_url, probes[: 2 * cores])  # warm-up
            scale: list[dict[str, Any]] = []
            model_ms: list[float] = []
            for workers in levels:
                set_workers(platform, workers)
                pipeline_throughput(platform, database_url, probes[: 2 * workers])  # every process warm
                direct, pipeline = [], []
                cpu: dict[str, list[float]] = {}
                with direct_pool(workers, events, probes[0]) as pool:
                    for _ in range(repeats):  # alternate, so drifts hit both alike
                        ips, per_image = direct_throughput(pool, probes)
                        direct.append(ips)
                        if workers == 1:
                            model_ms = per_image
                        pipeline.append(pipeline_throughput(platform, database_url, probes, cpu))
                scale.append(
                    {
                        "workers": workers,
                        "direct_ips": statistics.median(direct),
                        "pipeline_ips": statistics.median(pipeline),
                        "direct_runs": direct,
                        "pipeline_runs": pipeline,
                        "cpu_ms_per_image": {name: statistics.median(v) for name, v in cpu.items()},
                        "model_cpu_ms_per_image": statistics.median(model_ms) if model_ms else None,
                    }
                )
            one_direct, one_pipe = scale[0]["direct_ips"], scale[0]["pipeline_ips"]
            for row in scale:
                row["efficiency"] = row["pipeline_ips"] / row["direct_ips"]
                row["pipeline_scaling"] = row["pipeline_ips"] / (row["workers"] * one_pipe)
                row["direct_scaling"] = row["direct_ips"] / (row["workers"] * one_direct)
            results["scale_out"] = scale

            # Latency at 50 % and 90 % of the saturated pipeline throughput (all cores): of
            # the slowest of its runs, so that "90 %" is not above what the platform can do
            # (the queue would then grow without bound and measure nothing but the overload).
            # Three passes over the probes, so that p99 rests on more than a handful of images.
            saturated = min(scale[-1]["pipeline_runs"])
            stream_of = [probes[i % len(probes)] for i in range(LATENCY_PASSES * len(probes))]
            latency = []
            for load in (0.5, 0.9):
                samples = latency_at(platform, database_url, stream_of, rate=load * saturated)
                lat = np.array([ms for _, ms in samples])
                over = np.array([ms - model_ms[i % len(probes)] for i, ms in samples])
                latency.append(
                    {
                        "load": load,
                        "rate_ips": load * saturated,
                        **{f"p{q}_ms": float(np.percentile(lat, q)) for q in (50, 95, 99)},
                        "model_p50_ms": float(np.median(model_ms)),
                        "overhead_p50_ms": float(np.median(over)),
                        "samples_ms": lat.round(1).tolist(),
                    }
                )
            results["latency"] = latency

            # Ingest alone: stop the consumers so that only the broker and ingest work.
            platform.stop("recognizer")
            platform.stop("stream")
            secs = 5.0 if quick else 15.0
            ingest = [ingest_throughput(platform, probes, secs, batch) for batch in (1, 10)]
            for row in ingest:
                row["ratio_to_one_recognizer"] = row["images_per_s"] / one_direct
            results["ingest"] = ingest
        finally:
            platform.stop_all()

    results["large_photos"] = large_photos(repeats=1 if quick else 3)
    plot(results, out_dir)
    return results


def plot(results: dict[str, Any], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = results["scale_out"]
    workers = [r["workers"] for r in scale]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(workers, [r["direct_ips"] for r in scale], "o-", label="recognize() directly")
    left.plot(workers, [r["pipeline_ips"] for r in scale], "s-", label="whole pipeline")
    left.plot(workers, [w * scale[0]["direct_ips"] for w in workers], ":", color="grey", label="linear")
    left.set_xlabel("recognizer processes")
    left.set_ylabel("images / s")
    left.set_title("Throughput and scale-out")
    left.legend()
    for row in results["latency"]:
        right.hist(row["samples_ms"], bins=30, alpha=0.6, label=f"{int(row['load'] * 100)} % load")
    right.axvline(results["latency"][0]["model_p50_ms"], color="k", ls="--", label="model p50")
    right.set_xlabel("ingest answer -> result queryable (ms)")
    right.set_title("End-to-end latency")
    right.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "pipeline.png", dpi=110)
    plt.close(fig)
