"""``python -m benchmarks [--full] [--only pipeline,gallery] [--out bench-results] [SUITE ...]``.

Runs the suites on a fresh broker and database of their own (ports 29192 and 25532;
the pages suite keeps its seeded databases on a cluster of its own, port 25533), prints
a table, and writes ``<out>/results.json`` (every figure, plus the machine it ran on)
and the plots (``<out>/*.png``). Quick mode (the default) takes a few minutes on a
laptop; ``--full`` measures more images, more repeats and the 1M-face gallery.
``python -m benchmarks pages`` runs only the suites named (as ``--only pages``).
``make bench`` is the quick mode of every suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:  # no git
        commit = "unknown"
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _pipeline(quick: bool, out: Path) -> dict[str, Any]:
    from benchmarks import pipeline

    return pipeline.run(quick, out)


def _gallery(quick: bool, out: Path) -> dict[str, Any]:
    from benchmarks import gallery_scale

    return gallery_scale.run(quick, out)


def _wire(quick: bool, out: Path) -> dict[str, Any]:
    from benchmarks import wire

    return wire.run(quick, out)


def _pages(quick: bool, out: Path) -> dict[str, Any]:
    from benchmarks import pages

    return pages.run(quick, out)


def _image(quick: bool, out: Path) -> dict[str, Any]:
    from benchmarks import image

    return image.run(quick, out)


SUITES: dict[str, Callable[[bool, Path], dict[str, Any]]] = {
    "pipeline": _pipeline,
    "gallery": _gallery,
    "wire": _wire,
    "pages": _pages,
    "image": _image,
}


def report(results: dict[str, Any]) -> str:
    """The human-readable summary of ``results``."""
    lines = [
        f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, mode {results['mode']}"
    ]
    p = results.get("pipeline")
    if p:
        lines += [
            "",
            f"pipeline vs recognize() directly ({p['images']} lfw-dev photos, medians of {p['repeats']})",
        ]
        lines.append(
            f"{'procs':>5} {'direct img/s':>13} {'pipeline img/s':>15} {'efficiency':>11} {'scaling':>8}"
        )
        for r in p["scale_out"]:
            lines.append(
                f"{r['workers']:>5} {r['direct_ips']:>13.2f} {r['pipeline_ips']:>15.2f} "
                f"{r['efficiency']:>11.3f} {r['pipeline_scaling']:>8.3f}"
            )
        cpu = p["scale_out"][-1]["cpu_ms_per_image"]
        lines.append(
            "CPU ms per image in the pipeline ("
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
            + ")"
        )
        lines += ["", "latency, ingest answer -> result queryable (ms)"]
        for r in p["latency"]:
            lines.append(
                f"  {int(r['load'] * 100)}% load ({r['rate_ips']:.1f} img/s): p50 {r['p50_ms']:.0f}  "
                f"p95 {r['p95_ms']:.0f}  p99 {r['p99_ms']:.0f}  (model p50 {r['model_p50_ms']:.0f}; "
                f"overhead p50 {r['overhead_p50_ms']:.0f})"
            )
        lines += ["", "ingest, one process on one core"]
        for r in p["ingest"]:
            lines.append(
                f"  {r['batch']:>2} image(s)/request: {r['images_per_s']:.0f} img/s, "
                f"{r['mb_per_s']:.1f} MB/s, "
                f"{r['ratio_to_one_recognizer']:.0f}x one recognizer process"
            )
        lines += ["", "large photos (seconds; faces found)"]
        for r in p["large_photos"]:
            lines.append(
                f"  {r['photo']} ({r['megapixels']} MP): downscaled {r['downscaled_s']} s, "
                f"{r['downscaled_faces']} faces; full {r['full_s']} s, {r['full_faces']} faces"
            )
    w = results.get("wire")
    if w:
        lines += ["", f"image in the JSON event vs raw bytes (ms, medians of {w['repeats']})"]
        for r in w["sizes"]:
            lines.append(
                f"  {r['bytes'] / 1e6:>5.1f} MB: JSON encode {r['json_encode_ms']:.2f} decode "
                f"{r['json_decode_ms']:.2f}; raw encode {r['raw_encode_ms']:.3f} decode "
                f"{r['raw_decode_ms']:.3f}; message {r['json_over_raw_bytes']:.2f}x the bytes"
            )
    g = results.get("gallery")
    if g and "table" in g:
        lines += ["", "gallery at scale", *g["table"]]
    pg = results.get("pages")
    if pg:
        lines += ["", "page loads over HTTP, ms: 1,000,000 images vs 10,000 (ratio of medians)"]
        lines += pg.get("table") or [f"  skipped: {pg.get('skipped')}"]
    im = results.get("image")
    if im:
        from benchmarks.image import table

        lines += ["", "the container image (podman)", *table(im)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--full", action="store_true", help="more images and repeats, and the 1M gallery")
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated suites (%(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument("suites", nargs="*", metavar="SUITE", help="only these suites (as --only)")
    args = parser.parse_args(argv)
    names = args.suites or args.only.split(",")
    if unknown := [n for n in names if n not in SUITES]:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; the suites: {', '.join(SUITES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    quick = not args.full
    results: dict[str, Any] = {"machine": machine(), "mode": "quick" if quick else "full"}
    for name in names:
        started = time.monotonic()
        print(f"[bench] {name} ...", flush=True)
        results[name] = SUITES[name](quick, args.out)
        print(f"[bench] {name} done in {time.monotonic() - started:.0f} s", flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    summary = report(results)
    (args.out / "summary.txt").write_text(summary + "\n")
    print("\n" + summary)
    print(f"\nresults: {args.out / 'results.json'}; plots: {args.out}/*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
