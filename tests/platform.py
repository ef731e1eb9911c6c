"""Runs the whole platform (every service, as its own process) for integration/e2e tests.

The services are started exactly as ``make up`` starts them (``python -m <service>``),
on test ports, against the session's broker and database. Each service that uses the
database logs in as a user of its own, a member of its group role (common/migrations/
0001_roles.sql), so every test through the platform exercises the grants.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from common.kafka import watermarks
from common.migrate import SERVICE_ROLES, provision_logins, with_credentials
from schemas import topics

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".run" / "test" / "logs"
PORT_OFFSET = int(os.environ.get("FACESTREAM_TEST_PORT_OFFSET", "0"))
#: The bootstrap admin key the test platform is started with (tests send it as X-API-Key).
ADMIN_KEY = "fsk-test-admin-key-not-secret"


@dataclass
class Platform:
    ingest_url: str
    api_url: str
    stream_url: str
    recognizer_url: str
    env: dict[str, str]
    #: service (module) -> what its environment adds to ``env`` (its own DATABASE_URL);
    #: a second replica (``start("ingest-b", module="ingest")``) gets its module's
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, BinaryIO] = field(default_factory=dict)
    started_with: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=lambda: {"X-API-Key": ADMIN_KEY})
    log_dir: Path = LOGS
    notify_url: str = ""

    def start(
        self,
        name: str,
        *args: str,
        ready_url: str | None,
        module: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Run ``python -m <module or name>`` as ``name``; wait for ``ready_url`` unless None."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if ready_url is not None:
            self.started_with[name] = (args, ready_url)
        log = self.logs[name] = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", module or name, *args],
            cwd=ROOT,
            env={**self.env, **self.service_env.get(module or name, {}), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if ready_url is not None:
            wait_ready(name, ready_url, self.procs[name])

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
        finally:
            self.logs.pop(name).close()

    def restart(self, name: str, sig: int = signal.SIGTERM) -> int:
        """Stop ``name`` with ``sig`` and start it again; returns its exit code."""
        code = self.stop(name, sig)
        args, ready_url = self.started_with[name]
        self.start(name, *args, ready_url=ready_url)
        return code

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def wait_ready(name: str, url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {LOGS / (name + '.log')}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{name} not ready at {url} within {timeout}s; see {LOGS / (name + '.log')}")


def until(what: str, check: Callable[[], bool], timeout: float = 120, every: float = 0.2) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(every)


def _offsets_consumer(kafka: str, group: str | None = None) -> Consumer:
    """A consumer that never joins a group: it reads offsets (of ``group``, if named)."""
    return Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": group or f"facestream-test-offsets-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )


def topic_end(kafka: str, topic: str) -> int:
    """The sum of ``topic``'s end offsets: how many messages it has ever been given."""
    consumer = _offsets_consumer(kafka)
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(watermarks(consumer, TopicPartition(topic, p))[1] for p in parts)
    finally:
        consumer.close()


def wait_committed(kafka: str, group: str, past: dict[tuple[str, int], int], timeout: float = 120) -> None:
    """Wait until consumer group ``group`` has committed past each ``(topic, partition)``
    offset in ``past``: it has consumed and finished those messages."""
    consumer = _offsets_consumer(kafka, group)
    try:
        wanted = [TopicPartition(t, p) for t, p in past]

        def committed() -> bool:
            got = consumer.committed(wanted, timeout=10)
            return all(tp.offset > past[(tp.topic, tp.partition)] for tp in got)

        until(f"{group} commits past {sorted(past.items())}", committed, timeout, every=0.5)
    finally:
        consumer.close()


@dataclass
class Delivered:
    """A message read back by :func:`messages`."""

    partition: int
    offset: int
    value: bytes


def messages(kafka: str, topic: str, ids: Collection[str]) -> list[Delivered]:
    """Every message keyed by one of ``ids`` on ``topic``, read to the topic's end."""
    wanted = set(ids)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"facestream-test-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    found: list[Delivered] = []
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: watermarks(consumer, TopicPartition(topic, p)) for p in parts}
        unread = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in unread])
        deadline = time.monotonic() + 120
        while unread:
            assert time.monotonic() < deadline, f"{topic} not read to its end"
            msg = consumer.poll(1)
            if msg is None:
                continue
            partition, offset, err = msg.partition() or 0, msg.offset() or 0, msg.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                if offset >= ends[partition][1]:
                    unread.discard(partition)
                continue
            if offset + 1 >= ends[partition][1]:
                unread.discard(partition)
            if (msg.key() or b"").decode() in wanted:
                found.append(Delivered(partition, offset, msg.value() or b""))
    finally:
        consumer.close()
    return found


def wait_gallery_applied(platform: Platform, timeout: float = 60) -> None:
    """Wait until every recognizer worker of the platform has applied the gallery topic up
    to its present end."""
    kafka, workers = platform.env["KAFKA_BOOTSTRAP_SERVERS"], int(platform.env.get("WORKERS", "1"))
    wait_recognizers_applied(kafka, platform.recognizer_url, workers, timeout)


def wait_recognizers_applied(kafka: str, recognizer_url: str, workers: int, timeout: float = 60) -> None:
    """Wait until the ``workers`` recognizer workers behind ``recognizer_url`` have applied the
    gallery topic up to its present end (the ``facestream_recognizer_gallery_version`` each
    worker exports)."""
    consumer = _offsets_consumer(kafka)
    try:
        end = watermarks(consumer, TopicPartition(topics.GALLERY, 0))[1]
    finally:
        consumer.close()

    def applied() -> bool:
        text = httpx.get(f"{recognizer_url}/metrics", timeout=10).text
        versions = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("facestream_recognizer_gallery_version{")
        ]
        return len(versions) >= workers and all(v >= end for v in versions)

    until(f"every recognizer applies the gallery up to offset {end}", applied, timeout)


#: Each service's login user in the test database (password = user name; test only).
ROLE_USERS = {service: f"facestream_test_{service}" for service in SERVICE_ROLES}


def role_urls(database_url: str) -> dict[str, str]:
    """service -> a DATABASE_URL of its own login user, in its group role (created or
    updated here, with the schema owner's ``database_url``)."""
    urls = {s: with_credentials(database_url, user, user) for s, user in ROLE_USERS.items()}
    provision_logins(database_url, urls)
    return urls


#: Ports of ingest, api, stream and recognizer when the tests run them.
TEST_PORTS = (18000 + PORT_OFFSET, 18001 + PORT_OFFSET, 16066 + PORT_OFFSET, 19101 + PORT_OFFSET)
#: notify's (webhooks) ops port.
NOTIFY_TEST_PORT = 16070 + PORT_OFFSET


def start_platform(
    kafka: str,
    database_url: str,
    images_root: Path,
    workers: int = 2,
    ports: tuple[int, int, int, int] = TEST_PORTS,
    env: dict[str, str] | None = None,
    log_dir: Path = LOGS,
    as_roles: bool = os.environ.get("FACESTREAM_TEST_AS_OWNER") != "1",
    notify_port: int = NOTIFY_TEST_PORT,
    mqtt_url: str | None = None,
) -> Platform:
    """Start stream, recognizer, ingest, api and notify (in that order) and wait until each
    is ready.

    ``database_url`` is the schema owner's; with ``as_roles`` (the default; not with
    FACESTREAM_TEST_AS_OWNER=1) each service logs in as its own role's user
    (:func:`role_urls`), as deployments run them. ``mqtt_url``: notify publishes there too
    (MQTT_URL).
    """
    ingest, api, stream, recognizer = ports
    full_env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "DATABASE_URL": database_url,
        "IMAGES_ROOT": str(images_root),
        "INGEST_PORT": str(ingest),
        "API_PORT": str(api),
        "API_HOST": "127.0.0.1",
        "RESULTS_BASE_URL": f"http://127.0.0.1:{api}",  # ingest's result_url points here
        "STREAM_WEB_PORT": str(stream),
        "METRICS_PORT": str(recognizer),
        "WORKERS": str(workers),
        "RETRY_BASE_DELAY_S": "0.2",
        "ADMIN_API_KEY": ADMIN_KEY,
        "NOTIFY_PORT": str(notify_port),
        # Webhook retries within a test's patience (production: 5 s, doubling).
        "WEBHOOK_RETRY_BASE_S": "0.2",
        "WEBHOOK_RETRY_MAX_S": "2",
        "WEBHOOK_TIMEOUT_S": "5",
        # MQTT reconnects within a test's patience (production: up to 30 s apart).
        "MQTT_RECONNECT_MAX_S": "1",
        "MQTT_TIMEOUT_S": "3",
        **({"MQTT_URL": mqtt_url} if mqtt_url else {}),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    p = Platform(
        ingest_url=f"http://127.0.0.1:{ingest}",
        api_url=f"http://127.0.0.1:{api}",
        stream_url=f"http://127.0.0.1:{stream}",
        recognizer_url=f"http://127.0.0.1:{recognizer}",
        env=full_env,
        service_env={s: {"DATABASE_URL": u} for s, u in role_urls(database_url).items()} if as_roles else {},
        log_dir=log_dir,
        notify_url=f"http://127.0.0.1:{notify_port}",
    )
    try:
        p.start("stream", ready_url=f"{p.stream_url}/readyz")
        p.start("recognizer", ready_url=f"{p.recognizer_url}/readyz")
        p.start("ingest", ready_url=f"{p.ingest_url}/readyz")
        p.start("api", ready_url=f"{p.api_url}/readyz")
        p.start("notify", ready_url=f"{p.notify_url}/readyz")
    except Exception:
        p.stop_all()
        raise
    return p
