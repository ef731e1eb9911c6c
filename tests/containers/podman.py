"""podman from the tests: images built by scripts/podman.sh, containers run as compose and
the Kustomize manifests run them, healthchecks and probes executed.

These tests need podman, runc and debootstrap (scripts/podman.sh setup installs them as
root, as scripts/install.sh installs the rest) and run in a pytest session of their own
(``make containers``, part of ``make test``): no natively started platform shares their
broker and database.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.platform import TEST_PORTS
from tests.platform import until as platform_until

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "deploy" / "local" / "containers.conf"
COMPOSE_FILES = ("docker-compose.yml", "deploy/local/compose.yml")
PODMAN_COMPOSE = str(Path(sys.executable).with_name("podman-compose"))
#: The project image and the stand-ins scripts/podman.sh builds.
IMAGE = "localhost/facestream:latest"
KAFKA_IMAGE = "localhost/facestream-kafka:4.1.1"
POSTGRES_IMAGE = "localhost/facestream-postgres:15"


#: service -> (the setting naming its port, that port in compose and the manifests, the test port)
PORTS = {
    "ingest": ("INGEST_PORT", 8000, TEST_PORTS[0]),
    "api": ("API_PORT", 8001, TEST_PORTS[1]),
    "stream": ("STREAM_WEB_PORT", 6066, TEST_PORTS[2]),
    "recognizer": ("METRICS_PORT", 9101, TEST_PORTS[3]),
}
#: The secrets compose interpolates (docker-compose.yml refuses to start without them).
SECRETS = {
    name: secrets.token_urlsafe(32)
    for name in (
        "ADMIN_API_KEY",
        "POSTGRES_PASSWORD",
        "INGEST_DB_PASSWORD",
        "API_DB_PASSWORD",
        "STREAM_DB_PASSWORD",
        "NOTIFY_DB_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    )
}


def compose_config(files: tuple[str, ...] = COMPOSE_FILES[:1]) -> dict[str, Any]:
    """The compose model as podman-compose resolves it (anchors merged, variables set)."""
    done = subprocess.run(
        [PODMAN_COMPOSE, *(a for f in files for a in ("-f", f)), "config"],
        cwd=ROOT,
        env=podman_env(**SECRETS),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def service_env(
    service: str, definition: dict[str, Any], kafka: str, database_urls: dict[str, str]
) -> dict[str, str]:
    """A compose service's environment with this machine's addresses: the broker, the
    service's own database URL, its test port (and the API's, for ingest's result URLs)."""
    port_setting, _, port = PORTS[service]
    env = {k: str(v) for k, v in definition["environment"].items()}
    env |= {"KAFKA_BOOTSTRAP_SERVERS": kafka, port_setting: str(port)}
    if "DATABASE_URL" in env:
        env["DATABASE_URL"] = database_urls[service]
    if "RESULTS_BASE_URL" in env:
        env["RESULTS_BASE_URL"] = f"http://127.0.0.1:{PORTS['api'][2]}"
    return env


def podman_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), **extra}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def script(*args: str, timeout: float = 1800) -> str:
    """``bash scripts/podman.sh ARGS``; its stdout."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "podman.sh"), *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/podman.sh {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def compose_run_options(service: dict[str, Any]) -> list[str]:
    """``podman run`` options for a compose service's hardening (as ``podman-compose
    config`` resolves it): read-only root, its tmpfs, dropped capabilities, security options."""
    options = ["--read-only"] if service.get("read_only") else []
    options += [a for path in service.get("tmpfs", []) for a in ("--tmpfs", path)]
    options += [a for cap in service.get("cap_drop", []) for a in ("--cap-drop", cap)]
    options += [a for opt in service.get("security_opt", []) for a in ("--security-opt", opt)]
    return options


def exec_ok(container: str, command: Sequence[str], timeout: float = 30) -> bool:
    """Whether ``command`` exits 0 inside ``container`` (a healthcheck or an exec probe)."""
    return podman("exec", container, *command, check=False, timeout=timeout).returncode == 0


def healthcheck_ok(container: str) -> bool:
    """Run the container's own healthcheck (the one compose declared) once; podman 4.3
    without systemd runs none by itself."""
    return podman("healthcheck", "run", container, check=False, timeout=60).returncode == 0


def logs(container: str, lines: int = 30) -> str:
    done = podman("logs", "--tail", str(lines), container, check=False)
    return f"--- {container}:\n{done.stdout}{done.stderr}"


def until(
    what: str, check: Callable[[], bool], timeout: float, every: float = 1.0, logs_of: Sequence[str] = ()
) -> None:
    """:func:`tests.platform.until`, failing with the last log lines of ``logs_of``."""
    try:
        platform_until(what, check, timeout, every)
    except AssertionError as failed:
        pytest.fail(f"{failed}\n" + "\n".join(logs(c) for c in logs_of))
