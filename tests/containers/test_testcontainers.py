"""The suite's testcontainers path (tests/conftest.py, path 2), for real: a pytest session
pointed at podman's Docker-API socket gets its broker and database from testcontainers,
started from the local stand-ins for docker-compose.yml's images, and runs the results
API's integration tests on them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.conftest import PORT_OFFSET
from tests.containers.podman import KAFKA_IMAGE, POSTGRES_IMAGE, ROOT, podman, podman_env, script

# The first test builds the images (about 4 minutes on a machine that has none yet).
pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]

#: The results API's tests: the broker, the database and a recognizer's scans, 76 cases.
MODULE = "tests/integration/test_api.py"


@pytest.fixture(scope="module")
def docker_host(images: None) -> Iterator[str]:
    """podman's Docker-API socket (scripts/podman.sh socket), stopped afterwards."""
    yield script("socket", "start")
    script("socket", "stop")


def test_a_session_gets_its_broker_and_database_from_testcontainers(docker_host: str) -> None:
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = podman_env(
        DOCKER_HOST=docker_host,
        # Ryuk (the reaper) is an image of its own that no registry here serves; the
        # fixtures stop their containers themselves.
        TESTCONTAINERS_RYUK_DISABLED="true",
        # This machine is itself a container (/.dockerenv): testcontainers would look for
        # a shared network, as Docker-in-Docker needs. The published ports are on this host.
        TESTCONTAINERS_CONNECTION_MODE="docker_host",
        FACESTREAM_KAFKA_IMAGE=KAFKA_IMAGE,
        FACESTREAM_POSTGRES_IMAGE=POSTGRES_IMAGE,
        # Ports of its own for what it still starts natively (none here: mosquitto, the platform).
        FACESTREAM_TEST_PORT_OFFSET=str(PORT_OFFSET + 300),
    )
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "FACESTREAM_KEEP_SERVICES"):
        env.pop(name, None)
    session = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", MODULE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert session.returncode == 0, session.stdout[-4000:] + session.stderr[-2000:]
    assert " passed" in session.stdout.splitlines()[-1], session.stdout[-2000:]
    # The broker and database came from the stand-in images, and are gone again.
    created = podman(
        "events", "--since", since, "--until", "1s", "--filter", "event=create", "--format", "{{.Image}}"
    )
    assert {KAFKA_IMAGE, POSTGRES_IMAGE} <= set(created.stdout.split()), created.stdout
    assert podman("ps", "-a", "-q", "--filter", f"ancestor={KAFKA_IMAGE}").stdout.strip() == ""
    assert podman("ps", "-a", "-q", "--filter", f"ancestor={POSTGRES_IMAGE}").stdout.strip() == ""
