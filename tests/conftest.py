"""Session fixtures: the real infrastructure the integration and e2e tests talk to.

Where do the broker and database come from, in this order:
1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` in the environment: used as they are;
2. a Docker engine that answers (``DOCKER_HOST``: podman's Docker-API socket works, see
   ``scripts/podman.sh socket``): testcontainers starts Kafka / PostgreSQL from the images
   ``FACESTREAM_KAFKA_IMAGE`` (apache/kafka:4.1.1) and ``FACESTREAM_POSTGRES_IMAGE``
   (postgres:15.10-bookworm), those of docker-compose.yml; tests/containers runs this path
   with the local stand-ins;
3. otherwise ``scripts/kafka.sh`` and ``scripts/postgres.sh`` start them natively on
   test ports (19092, 15432), and stop them at the end of the session
   (``FACESTREAM_KEEP_SERVICES=1`` keeps them for the next run; a service that was
   already running is left running).

The MQTT broker (for notify's MQTT_URL) is Debian's mosquitto, always started here on
11883 + the offset, with a password file (so logging in is exercised), and stopped at the
end (:class:`Mosquitto`).

Either way the schema migrations are applied once, when the session first needs the
database (``python -m common.migrate`` does the same for ``make up``); the services
never run DDL.
"""

from __future__ import annotations

import gc
import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
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
MQTT_PORT = 11883 + PORT_OFFSET
# outside the checkout: the postgres user must reach it
PG_DIR = Path(f"/tmp/facestream-test-pg-{PG_PORT}")


#: The images testcontainers starts (path 2 above): docker-compose.yml's by default.
KAFKA_IMAGE = os.environ.get("FACESTREAM_KAFKA_IMAGE", "apache/kafka:4.1.1")
POSTGRES_IMAGE = os.environ.get("FACESTREAM_POSTGRES_IMAGE", "postgres:15.10-bookworm")


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
        yield from _kafka_container(KAFKA_IMAGE)
        return
    env = {"KAFKA_PORT": str(KAFKA_PORT), "KAFKA_CONTROLLER_PORT": str(KAFKA_PORT + 1)}
    started = _start("kafka.sh", env, TEST_RUN_DIR / f"kafka-{KAFKA_PORT}", KAFKA_PORT)
    yield f"127.0.0.1:{KAFKA_PORT}"
    if started and not _keep():
        _script("kafka.sh", "stop", env)


def _kafka_container(image: str, timeout: float = 120) -> Iterator[str]:
    """A KRaft broker from ``image`` (apache/kafka or a stand-in configured the same way,
    by KAFKA_* variables), set up as docker-compose.yml sets it up; yields its address.

    The host port is chosen first and published as the same number, so the broker can
    advertise the address clients reach it at."""
    from confluent_kafka.admin import AdminClient
    from testcontainers.core.container import DockerContainer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = {
        "CLUSTER_ID": "ZGnhTUbLTYW8Llipj3WI-Q",
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://localhost:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_MESSAGE_MAX_BYTES": "16777216",
        "KAFKA_HEAP_OPTS": "-Xms256m -Xmx512m",
    }
    container = DockerContainer(image).with_bind_ports(9092, port)
    for name, value in settings.items():
        container.with_env(name, value)
    with container:
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        deadline = time.monotonic() + timeout
        while True:
            try:
                admin.list_topics(timeout=3)
                break
            except Exception:  # noqa: BLE001 - KafkaException until the broker answers
                if time.monotonic() > deadline:
                    pytest.fail(f"the broker from {image} did not answer within {timeout:.0f} s")
        yield f"127.0.0.1:{port}"


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
        from testcontainers.community.postgres import PostgresContainer

        owner = "facestream"  # the schema owner, as in the native cluster and compose
        pg = PostgresContainer(POSTGRES_IMAGE, username=owner, password=owner, dbname=owner, driver=None)
        with pg:
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


@dataclass
class Mosquitto:
    """A real MQTT broker (Debian's mosquitto) on 127.0.0.1:``port``; anonymous clients are
    refused, ``user``/``password`` log in. Retained messages and persistent sessions are
    saved in ``directory`` when it stops, and restored when it starts again."""

    port: int
    directory: Path
    user: str = "facestream"
    password: str = "mqtt-test-password"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url(self, password: str | None = None) -> str:
        return f"mqtt://{self.user}:{password or self.password}@127.0.0.1:{self.port}"

    def configure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        passwords = self.directory / "passwd"
        subprocess.run(
            ["mosquitto_passwd", "-b", "-c", str(passwords), self.user, self.password],
            check=True,
            capture_output=True,
        )
        (self.directory / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            # As root it would switch to the user "mosquitto", who cannot read our files.
            f"user {getpass.getuser()}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    def start(self, timeout: float = 30) -> None:
        assert self.proc is None, "mosquitto already runs"
        if _port_open(self.port):
            pytest.fail(f"port {self.port} is taken: set FACESTREAM_TEST_PORT_OFFSET to move the test ports")
        log = (self.directory / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(
            [_mosquitto(), "-c", str(self.directory / "mosquitto.conf")], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mosquitto did not start; see {self.directory / 'mosquitto.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop it (SIGTERM: it saves its state) and wait until it has."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None


def _mosquitto() -> str:
    """The broker's executable (Debian puts it in /usr/sbin, off a user's PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if found is None:
        pytest.fail("mosquitto is not installed (scripts/install.sh installs Debian's package)")
    return found


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    _mosquitto()
    directory = TEST_RUN_DIR / f"mosquitto-{MQTT_PORT}"
    shutil.rmtree(directory, ignore_errors=True)
    broker = Mosquitto(MQTT_PORT, directory)
    broker.configure()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def platform(
    kafka_bootstrap: str, database_url: str, faces_dir: Path, mosquitto: Mosquitto
) -> Iterator[Platform]:
    """Every service running as its own process, as `make up` runs them; notify publishes
    to the test's mosquitto too."""
    p = start_platform(kafka_bootstrap, database_url, faces_dir, mqtt_url=mosquitto.url())
    yield p
    p.stop_all()
