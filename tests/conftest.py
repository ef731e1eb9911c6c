"""Session fixtures: the real infrastructure the integration and e2e tests talk to.

Where do the broker and database come from, in this order:
1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` in the environment: used as they are;
2. a Docker engine that answers: testcontainers starts Kafka / PostgreSQL;
3. otherwise ``scripts/kafka.sh`` and ``scripts/postgres.sh`` start them natively on
   test ports (19092, 15432), and stop them at the end of the session
   (``FACESTREAM_KEEP_SERVICES=1`` keeps them for the next run; a service that was
   already running is left running).

Either way the schema migrations are applied once, when the session first needs the
database (``python -m common.migrate`` does the same for ``make up``); the services
never run DDL.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.migrate import apply_migrations
from tests.platform import Platform, start_platform

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("FACESTREAM_FACES", ROOT.parent / "shared" / "datasets" / "faces"))
TEST_RUN_DIR = ROOT / ".run" / "test"
#: FACESTREAM_TEST_PORT_OFFSET shifts every test port, so two test sessions (two
#: checkouts) can run side by side without sharing a broker or database.
PORT_OFFSET = int(os.environ.get("FACESTREAM_TEST_PORT_OFFSET", "0"))
KAFKA_PORT = 19092 + PORT_OFFSET
PG_PORT = 15432 + PORT_OFFSET
# outside the checkout: the postgres user must reach it
PG_DIR = Path(f"/tmp/facestream-test-pg-{PG_PORT}")


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        pass
    # docker-py leaves the socket of a failed connection unclosed; reclaim it here, quietly,
    # rather than let its ResourceWarning fail whichever test runs next (filterwarnings=error).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return False


def _script(name: str, action: str, env: dict[str, str]) -> bool:
    """Run scripts/<name> <action>; returns whether it succeeded (``start`` must)."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / name), action],
        check=action == "start",
        env={**os.environ, "PYTHON": sys.executable, "FACESTREAM_RUN_DIR": str(TEST_RUN_DIR), **env},
        capture_output=action == "status",
    )
    return done.returncode == 0


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _start(name: str, env: dict[str, str], state: Path, port: int) -> bool:
    """Start a service unless it already runs; returns whether this session started it
    (and so must stop it): concurrent test sessions share one broker and database.

    A service this session starts begins empty (``state`` is wiped first): tests that
    enroll people must not meet the people of an earlier session in the gallery.
    """
    if _port_open(port):  # running: this checkout's (kept) or another session's
        return False
    shutil.rmtree(state, ignore_errors=True)
    _script(name, "start", env)
    return True


def _keep() -> bool:
    return os.environ.get("FACESTREAM_KEEP_SERVICES") == "1"


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not (FACES / "lfw-dev").is_dir():
        pytest.fail(f"the shared face photos are missing at {FACES} (set FACESTREAM_FACES)")
    return FACES


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    env = {"KAFKA_PORT": str(KAFKA_PORT), "KAFKA_CONTROLLER_PORT": str(KAFKA_PORT + 1)}
    started = _start("kafka.sh", env, TEST_RUN_DIR / f"kafka-{KAFKA_PORT}", KAFKA_PORT)
    yield f"127.0.0.1:{KAFKA_PORT}"
    if started and not _keep():
        _script("kafka.sh", "stop", env)


def _migrated(url: str) -> str:
    """``url``, once its database has every migration (the schema owner's URL)."""
    apply_migrations(url)
    return url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The schema owner's URL; the platform's services log in as their own roles."""
    if os.environ.get("DATABASE_URL"):
        yield _migrated(os.environ["DATABASE_URL"])
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as pg:
            yield _migrated(pg.get_connection_url())
        return
    env = {"PG_PORT": str(PG_PORT), "PG_FSYNC": "off", "PG_DIR": str(PG_DIR)}
    started = _start("postgres.sh", env, PG_DIR, PG_PORT)
    if not started and (PG_DIR / "data").is_dir():
        # A kept cluster, maybe made before the owner needed CREATEROLE (for the services'
        # roles): `start` is idempotent on a running cluster and grants it.
        _script("postgres.sh", "start", env)
    yield _migrated(f"postgresql://facestream:facestream@127.0.0.1:{PG_PORT}/facestream")
    if started and not _keep():
        _script("postgres.sh", "stop", env)


@pytest.fixture(scope="session")
def platform(kafka_bootstrap: str, database_url: str, faces_dir: Path) -> Iterator[Platform]:
    """Every service running as its own process, as `make up` runs them."""
    p = start_platform(kafka_bootstrap, database_url, faces_dir)
    yield p
    p.stop_all()
