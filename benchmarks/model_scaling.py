"""Scale-out of the model and of the recognizer's message path, without a broker.

With 1, 2, 4, ... N processes (N = the cores this process may use), each process works
through its share of the same lfw-dev photos, and the images per second of all together
are compared with N times one process:

- ``model``: :func:`recognizer.core.recognize` on the photo's bytes (the model alone);
- ``recognizer``: :func:`recognizer.worker.process_request` on the ``images.recognize``
  message of the photo: what a recognizer process does per message (decode and validate
  the event, base64, recognize, build and encode the result), all but the Kafka I/O.

It needs no broker or database, so it also runs on machines that have many cores but
none of the platform's services (the 16-core curve in BENCHMARKS.md came from one).
``python -m benchmarks.model_scaling [--images N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("FACESTREAM_FACES", ROOT.parent / "shared" / "datasets" / "faces"))

_state: dict[str, Any] = {}


def photos(n: int, folder: Path | None = None) -> list[bytes]:
    """``n`` lfw-dev photos (every person's second photo first, then the third, ...)."""
    root = folder or FACES / "lfw-dev" / "known"
    people = sorted(p for p in root.iterdir() if p.is_dir())
    later = [sorted(p.glob("*.jpg"))[1:] for p in people]
    out: list[bytes] = []
    for i in range(max(len(x) for x in later)):
        out += [x[i].read_bytes() for x in later if i < len(x)]
    return out[:n]


def request_message(photo: bytes, n: int) -> bytes:
    from schemas import codec
    from schemas.envelope import new_id
    from schemas.events import ImageSubmitted, RecognitionRequested

    image = ImageSubmitted(
        image_id=new_id(),
        filename=f"{n}.jpg",
        content_type="image/jpeg",
        size_bytes=len(photo),
        sha256=hashlib.sha256(photo).hexdigest(),
        image_b64=base64.b64encode(photo).decode("ascii"),
        submitted_at=datetime.now(UTC),
    )
    return codec.encode_data(RecognitionRequested(image=image, attempt=1), source="benchmark")


def _init(items: list[bytes], mode: str) -> None:
    from recognizer.core import DetectionConfig
    from recognizer.gallery import Gallery, default_rule

    _state.update(items=items, mode=mode, gallery=Gallery(), rule=default_rule(), cfg=DetectionConfig())
    _work(0)  # load dlib's models before the clock starts


def _work(i: int) -> float:
    t = time.perf_counter()
    item = _state["items"][i % len(_state["items"])]
    if _state["mode"] == "model":
        from recognizer.core import recognize

        recognize(item, _state["gallery"], _state["rule"], _state["cfg"])
    else:
        from recognizer.worker import process_request

        origin = ("images.recognize", 0, i)
        out = process_request(item, origin, _state["gallery"], _state["rule"], _state["cfg"], "bench")
        assert out.topic == "images.results", out.topic
    return time.perf_counter() - t


def _ready(_: int) -> int:
    time.sleep(0.3)
    return os.getpid()


def throughput(items: list[bytes], mode: str, workers: int, per_worker: int) -> float:
    """Images/s of ``workers`` processes doing ``per_worker`` items each."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(items, mode)) as pool:
        list(pool.map(_ready, range(workers * 3)))
        n = workers * per_worker
        t = time.perf_counter()
        list(pool.map(_work, range(n), chunksize=max(1, per_worker // 4)))
        return n / (time.perf_counter() - t)


def run(images: int, repeats: int, levels: list[int] | None = None, per_worker: int = 0) -> dict[str, Any]:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):  # one core per process, as in the pool
        os.environ.setdefault(var, "1")
    cores = len(os.sched_getaffinity(0))
    levels = levels or sorted({1, 2, 4, 8, 12, 16, 24, 32, cores} & set(range(1, cores + 1)))
    raw = photos(images)
    messages = [request_message(p, n) for n, p in enumerate(raw)]
    rows = []
    for workers in levels:
        row: dict[str, Any] = {"workers": workers}
        for mode, items in (("model", raw), ("recognizer", messages)):
            each = per_worker or len(items) // 2
            runs = [throughput(items, mode, workers, per_worker=each) for _ in range(repeats)]
            row[f"{mode}_ips"] = statistics.median(runs)
            row[f"{mode}_runs"] = runs
        rows.append(row)
        print(
            f"{workers:>3} processes: model {row['model_ips']:.1f} img/s, "
            f"recognizer path {row['recognizer_ips']:.1f} img/s",
            flush=True,
        )
    for row in rows:
        for mode in ("model", "recognizer"):
            row[f"{mode}_scaling"] = row[f"{mode}_ips"] / (row["workers"] * rows[0][f"{mode}_ips"])
        row["recognizer_over_model"] = row["recognizer_ips"] / row["model_ips"]
    return {"cores": cores, "images": len(raw), "repeats": repeats, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_scaling", description=__doc__)
    parser.add_argument("--images", type=int, default=32, help="distinct photos (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--levels", help="comma-separated process counts (default: 1, 2, 4, ... cores)")
    parser.add_argument("--per-worker", type=int, default=0, help="images per process (default: half)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from benchmarks.__main__ import machine

    levels = [int(x) for x in args.levels.split(",")] if args.levels else None
    result = {"machine": machine(), **run(args.images, args.repeats, levels, args.per_worker)}
    path = args.out / f"model_scaling-{result['cores']}cores.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
