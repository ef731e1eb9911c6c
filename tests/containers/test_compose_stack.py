"""The compose stack under podman-compose: docker-compose.yml with deploy/local/compose.yml
(local stand-ins for the hub images; Grafana left out, its provisioning is validated
offline in tests/deploy). ``up`` brings every service to healthy by its own healthcheck,
the demo runs through it, Prometheus scrapes every service, and ``down`` leaves nothing.

The stack runs as a project of its own (``facestream-test``), its published ports moved
to free ones by one more override file, so a stack or ``make up`` already running here
is left alone.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.conftest import PORT_OFFSET
from tests.containers.podman import (
    COMPOSE_FILES,
    PODMAN_COMPOSE,
    ROOT,
    SECRETS,
    healthcheck_ok,
    podman,
    podman_env,
    until,
)

# The first test builds the images (about 4 minutes on a machine that has none yet).
pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]

PROJECT = f"facestream-test{PORT_OFFSET or ''}"
#: The services published on the host, with their container ports.
PUBLISHED = {"ingest": 8000, "api": 8001, "prometheus": 9090}
#: Every service `up` starts here (Grafana and the mqtt profile's broker are not).
SERVICES = {"kafka", "postgres", "migrate", "stream", "recognizer", "ingest", "api", "notify", "prometheus"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    files: list[str]
    ports: dict[str, int]  # service -> its port on the host

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        command = [PODMAN_COMPOSE, "-p", PROJECT, *(a for f in self.files for a in ("-f", f)), *args]
        return subprocess.run(
            command,
            cwd=ROOT,
            env=podman_env(**SECRETS),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def containers(self) -> dict[str, dict[str, object]]:
        """service -> podman's view of its container (all states)."""
        label = f"io.podman.compose.project={PROJECT}"
        listed = json.loads(
            podman("ps", "-a", "--filter", f"label={label}", "--format", "json").stdout or "[]"
        )
        return {c["Labels"]["com.docker.compose.service"]: c for c in listed}

    def left_over(self) -> list[str]:
        label = f"label=io.podman.compose.project={PROJECT}"
        found = podman("ps", "-a", "-q", "--filter", label).stdout.split()
        found += podman("volume", "ls", "-q", "--filter", label).stdout.split()
        found += [
            n
            for n in podman("network", "ls", "--format", "{{.Name}}").stdout.split()
            if n.startswith(PROJECT)
        ]
        return found


@pytest.fixture(scope="module")
def stack(images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = {service: _free_port() for service in PUBLISHED}
    moved = tmp_path_factory.mktemp("compose") / "ports.yml"
    moved.write_text(
        "services:\n"
        "  ingest:\n"
        f'    ports: !override ["127.0.0.1:{ports["ingest"]}:8000"]\n'
        "    environment:\n"
        f"      RESULTS_BASE_URL: http://127.0.0.1:{ports['api']}\n"
        "  api:\n"
        f'    ports: !override ["127.0.0.1:{ports["api"]}:8001"]\n'
        "  prometheus:\n"
        f'    ports: !override ["127.0.0.1:{ports["prometheus"]}:9090"]\n'
    )
    s = Stack([*COMPOSE_FILES, str(moved)], ports)
    if s.left_over():
        s.compose("down", "-v", timeout=300)
    try:
        yield s
    finally:
        s.compose("down", "-v", timeout=300)


def test_up_brings_the_stack_to_healthy_the_demo_runs_and_down_leaves_nothing(
    stack: Stack, faces_dir: Path
) -> None:
    up = stack.compose("up", "-d")
    assert up.returncode == 0, up.stderr[-3000:]
    running = stack.containers()
    assert set(running) == SERVICES, f"up started {sorted(running)}"
    names = [str(c["Names"][0]) for c in running.values()]  # type: ignore[index]

    # Every healthcheck compose declares, executed in its container until it passes
    # (podman 4.3 without systemd runs none by itself).
    with_check = [n for n in names if not n.endswith("migrate_1")]
    for name in with_check:
        until(f"{name} healthy", partial(healthcheck_ok, name), 240, every=2, logs_of=names)
    migrate = stack.containers()["migrate"]
    assert (migrate["State"], migrate["ExitCode"]) == ("exited", 0), migrate

    demo = subprocess.run(
        [
            str(ROOT / "facestream"),
            "demo",
            "--json",
            "--api",
            stack.url("api"),
            "--ingest",
            stack.url("ingest"),
        ],
        env={**podman_env(), "FACESTREAM_API_KEY": SECRETS["ADMIN_API_KEY"]},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    lines = [json.loads(line) for line in demo.stdout.splitlines() if line.startswith("{")]
    assert lines, demo.stdout
    assert all(line["fate"] == "ok" for line in lines), [x for x in lines if x["fate"] != "ok"]
    images = [line for line in lines if "status" in line]
    assert images, "the demo submitted no image"
    assert all(image["status"] == "processed" for image in images), images
    named = {person for image in images for person in image["people"]}
    assert {"obama", "biden", "kit harington", "rose leslie", "alex lacamoire"} <= named, named

    # Prometheus (the stand-in, deploy/prometheus as mounted by compose) scrapes every
    # service by its compose name, and has the alert rules.
    def all_up() -> bool:
        targets = httpx.get(f"{stack.url('prometheus')}/api/v1/targets", timeout=10).json()["data"][
            "activeTargets"
        ]
        jobs = {t["labels"]["job"] for t in targets if t["health"] == "up"}
        return jobs >= {"ingest", "api", "stream", "recognizer", "notify", "prometheus"}

    until("Prometheus scrapes every service", all_up, 120, every=2)
    rules = httpx.get(f"{stack.url('prometheus')}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert rules, "no alert rules loaded"

    down = stack.compose("down", "-v", timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]
    assert stack.left_over() == []
