"""Enrollment throughput of a bulk import against 1 and 2 recognizer processes.

``./facestream import`` sends N photos of lfw-distractors (one folder per person, LFW's
layout) to the results API, ``--concurrency`` at a time; each photo is scanned by a
recognizer (faces.scan, 10 jitters: about 1.3 s of one core) before it is stored and
published. Since the scans moved from the API's one encoder process to the recognizer
pool, enrollment scales with the recognizer processes: this measures how far.

For each recognizer count the import runs ``--repeats`` times, each time under fresh
person names (an import of names already enrolled would only skip), and the median
photos/s is reported (the command's own start, about a second, is in the time: use
enough photos that it does not matter). Runs on a broker and database of its own (the pipeline
benchmark's ports), with the whole platform started as ``make up`` starts it. Not part
of ``make bench``: run it by hand::

    .venv/bin/python -m benchmarks.enroll_import --photos 40 --repeats 3

On a machine with fewer cores than recognizer processes plus the API, the second
process has no core of its own and the figure says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.pipeline import FACES, PORTS, ROOT, set_workers, stack
from tests.platform import ADMIN_KEY, start_platform

DISTRACTORS = FACES / "lfw-distractors"


def sample(n: int) -> list[Path]:
    """``n`` photos of lfw-distractors, the first photo of each person first, in a stable order."""
    people = sorted(p for p in DISTRACTORS.iterdir() if p.is_dir())
    photos = [sorted(p.glob("*.jpg")) for p in people]
    ordered = [group[0] for group in photos if group] + [x for group in photos for x in group[1:]]
    if len(ordered) < n:
        raise SystemExit(f"lfw-distractors has {len(ordered)} photos, fewer than {n}")
    return ordered[:n]


def layout(photos: list[Path], into: Path, tag: str) -> Path:
    """LFW's layout of ``photos`` under ``into`` (symlinks), person names suffixed by ``tag``."""
    root = into / tag
    for photo in photos:
        folder = root / f"{photo.parent.name}_{tag}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / photo.name).symlink_to(photo)
    return root


def import_once(api_url: str, folder: Path, n: int, concurrency: int) -> float:
    """Seconds ``./facestream import`` takes for ``folder``; every photo must be answered."""
    env = {
        **os.environ,
        "FACESTREAM_API_URL": api_url,
        "FACESTREAM_API_KEY": ADMIN_KEY,
        "FACESTREAM_RUN_DIR": str(folder / "no-run-dir"),
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "import", str(folder), "--concurrency", str(concurrency), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    fates = [json.loads(line)["fate"] for line in done.stdout.splitlines() if line.startswith("{")]
    answered = sum(f in ("ok", "refused") for f in fates)  # a photo without a face is answered too
    if done.returncode not in (0, 1) or answered != n:
        raise RuntimeError(
            f"import answered {answered} of {n} (exit {done.returncode}): {done.stderr[-2000:]}"
        )
    return seconds


def run(n: int, repeats: int, workers: list[int], concurrency: int) -> dict[str, Any]:
    photos = sample(n)
    results: dict[str, Any] = {"photos": n, "repeats": repeats, "concurrency": concurrency, "runs": {}}
    with stack() as (bootstrap, database_url), tempfile.TemporaryDirectory() as tmp:
        platform = start_platform(
            bootstrap, database_url, FACES, workers=workers[0], ports=PORTS, log_dir=ROOT / ".run/bench/logs"
        )
        try:
            for count in workers:
                set_workers(platform, count)
                seconds = [
                    import_once(
                        platform.api_url, layout(photos, Path(tmp), uuid.uuid4().hex[:8]), n, concurrency
                    )
                    for _ in range(repeats)
                ]
                rates = [n / s for s in seconds]
                results["runs"][str(count)] = {
                    "seconds": seconds,
                    "photos_per_s": rates,
                    "median_photos_per_s": statistics.median(rates),
                }
                median = statistics.median(rates)
                print(f"{count} recognizer process(es): {median:.2f} photos/s (median of {repeats})")
        finally:
            platform.stop_all()
    medians = [results["runs"][str(c)]["median_photos_per_s"] for c in workers]
    results["speedup"] = medians[-1] / medians[0]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.enroll_import", description=__doc__)
    parser.add_argument("--photos", type=int, default=40, help="photos per import (default 40)")
    parser.add_argument("--repeats", type=int, default=3, help="imports per recognizer count (default 3)")
    parser.add_argument("--workers", default="1,2", help="recognizer process counts (default 1,2)")
    parser.add_argument("--concurrency", type=int, default=4, help="photos the import sends at once")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    results = run(args.photos, args.repeats, workers, args.concurrency)
    print(f"speed-up from {workers[0]} to {workers[-1]} process(es): {results['speedup']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
