"""``python -m benchmarks image``: the project image's size and each service's start-up.

- Size: the image as podman stores it, the base under it, and what is largest inside
  (the dlib model files, OpenCV, faiss...).
- Start-up: seconds from ``podman run`` (hardened as compose runs it: read-only root,
  non-root, no capabilities) to the service's ``/healthz`` (started) and ``/readyz``
  (ready to work) answering 200, against a broker and database of the benchmark's own;
  and the same service started natively (``python -m SERVICE`` from .venv) in the same
  run, for the ratio. Medians of 3 runs (5 with ``--full``).

Needs podman (scripts/podman.sh builds the images first). BENCHMARKS.md reports it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from benchmarks.pipeline import stack
from tests.containers.podman import (
    IMAGE,
    PORTS,
    compose_config,
    compose_run_options,
    podman,
    script,
    service_env,
)
from tests.platform import role_urls, until

ROOT = Path(__file__).resolve().parents[1]
BASE = "localhost/facestream-debian:bookworm"


def _mb(size: str) -> float:
    return round(int(size) / 1e6, 1)


def sizes() -> dict[str, Any]:
    image = _mb(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    base = _mb(podman("image", "inspect", "--format", "{{.Size}}", BASE).stdout.strip())
    listing = podman(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        IMAGE,
        "-c",
        "du -sm /opt/venv/lib/python3*/site-packages/* | sort -n",
    ).stdout
    largest = [
        {"path": Path(path).name, "mb": int(mb)}
        for mb, path in (line.split("\t") for line in listing.splitlines()[-8:])
    ][::-1]
    return {"image_mb": image, "base_mb": base, "largest": largest}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _measure(start: Callable[[], Callable[[], object]], url: str) -> tuple[float, float]:
    """(seconds to /healthz, seconds to /readyz) of one start; ``start`` returns its stop."""
    began = time.monotonic()
    stop = start()
    try:
        until(f"{url}/healthz answers", partial(_answers, f"{url}/healthz"), 240, every=0.05)
        healthy = time.monotonic() - began
        until(f"{url}/readyz answers", partial(_answers, f"{url}/readyz"), 240, every=0.05)
        return healthy, time.monotonic() - began
    finally:
        stop()


def in_container(definition: dict[str, Any], env: dict[str, str]) -> Callable[[], object]:
    """Start the service from the image, hardened as compose runs it; returns its stop."""
    name = f"facestream-bench-{os.getpid()}-{time.monotonic_ns()}"
    options = ["--name", name, "--network", "host", *compose_run_options(definition)]
    options += [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    podman("run", "-d", *options, IMAGE, *definition["command"])
    return partial(podman, "rm", "-f", "-t", "5", name, check=False)


def native(definition: dict[str, Any], env: dict[str, str], scratch: str) -> Callable[[], object]:
    """Start the service from .venv with the same settings; returns its stop."""
    local = {**os.environ, **env, "F_DATADIR": f"{scratch}/stream-data", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, *definition["command"][1:]]
    proc = subprocess.Popen(
        command, cwd=scratch, env=local, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def stop() -> None:
        proc.terminate()
        proc.wait(60)

    return stop


def startup(repeats: int) -> list[dict[str, Any]]:
    compose = compose_config()["services"]
    rows = []
    with stack() as (kafka, database_url), tempfile.TemporaryDirectory() as scratch:
        own_urls = role_urls(database_url)
        for service, (_, _, port) in PORTS.items():
            definition = compose[service]
            env = service_env(service, definition, kafka, own_urls)
            url = f"http://127.0.0.1:{port}"
            runs = {
                "container": [_measure(partial(in_container, definition, env), url) for _ in range(repeats)],
                "native": [_measure(partial(native, definition, env, scratch), url) for _ in range(repeats)],
            }
            row: dict[str, Any] = {"service": service}
            for how, measured in runs.items():
                row[f"{how}_healthz_s"] = round(statistics.median(m[0] for m in measured), 2)
                row[f"{how}_readyz_s"] = round(statistics.median(m[1] for m in measured), 2)
            row["ratio_readyz"] = round(row["container_readyz_s"] / row["native_readyz_s"], 2)
            rows.append(row)
    return rows


def run(quick: bool, out: Path) -> dict[str, Any]:
    del out  # no plot: a table says it
    script("images")
    return {"size": sizes(), "startup": startup(3 if quick else 5), "repeats": 3 if quick else 5}


def table(results: dict[str, Any]) -> list[str]:
    size = results["size"]
    lines = [
        f"  image {size['image_mb']:.0f} MB on a base of {size['base_mb']:.0f} MB; largest inside: "
        + ", ".join(f"{x['path']} {x['mb']} MB" for x in size["largest"][:5]),
        f"  start-up, s (medians of {results['repeats']}): container / native, to /healthz and /readyz",
    ]
    for r in results["startup"]:
        lines.append(
            f"  {r['service']:<10} healthz {r['container_healthz_s']:.2f} / {r['native_healthz_s']:.2f}   "
            f"readyz {r['container_readyz_s']:.2f} / {r['native_readyz_s']:.2f}  ({r['ratio_readyz']:.2f}x)"
        )
    return lines


if __name__ == "__main__":
    import json

    found = run(quick="--full" not in sys.argv, out=ROOT / "bench-results")
    print(json.dumps(found, indent=2))
    print("\n".join(table(found)))
