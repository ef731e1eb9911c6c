"""SASL/TLS to the broker, configured through settings only.

A second real broker is started with a SASL_SSL listener (TLS with a certificate from a
test CA, SASL/PLAIN with one user). The services are started against it with nothing but
environment variables (as a Kubernetes Secret would supply them): ingest publishes an
upload, the stream worker joins its consumer group and dispatches it, and a client with
the wrong password is refused.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from common.settings import ServiceSettings
from schemas import codec, topics
from schemas.events import ImageDeadLettered
from tests.conftest import PORT_OFFSET, ROOT, TEST_RUN_DIR
from tests.platform import ADMIN_KEY, Platform

pytestmark = pytest.mark.integration

PLAIN_PORT = 19292 + PORT_OFFSET
SASL_PORT = 19294 + PORT_OFFSET
USER, PASSWORD = "facestream", "s3cret-from-a-secret"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(tls: Path) -> None:
    """A test CA, and a broker certificate for 127.0.0.1 signed by it (PEM keystore)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=facestream test CA", cwd=tls)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
             "-subj", "/CN=127.0.0.1", cwd=tls)  # fmt: skip
    (tls / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.pem", "-days", "2", "-extfile", "san.ext", cwd=tls)  # fmt: skip
    (tls / "keystore.pem").write_text((tls / "broker.pem").read_text() + (tls / "broker.key").read_text())


@pytest.fixture(scope="module")
def secure_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start the SASL_SSL broker; yields the client settings as environment variables."""
    tls = tmp_path_factory.mktemp("tls")
    _certificates(tls)
    script_env = {
        **os.environ,
        "PYTHON": sys.executable,
        "FACESTREAM_RUN_DIR": str(TEST_RUN_DIR / "secure"),
        "KAFKA_PORT": str(PLAIN_PORT),
        "KAFKA_CONTROLLER_PORT": str(PLAIN_PORT + 1),
        "KAFKA_SASL_SSL_PORT": str(SASL_PORT),
        "KAFKA_TLS_KEYSTORE": str(tls / "keystore.pem"),
        "KAFKA_SASL_USERNAME": USER,
        "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_HEAP": "384m",
    }
    subprocess.run(["rm", "-rf", str(TEST_RUN_DIR / "secure")], check=True)
    subprocess.run(["bash", str(ROOT / "scripts/kafka.sh"), "start"], env=script_env, check=True)
    try:
        yield {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{SASL_PORT}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": USER,
            "KAFKA_SASL_PASSWORD": PASSWORD,
            "KAFKA_SSL_CA_LOCATION": str(tls / "ca.pem"),
        }
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/kafka.sh"), "stop"], env=script_env, check=False)


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return ServiceSettings()


def test_wrong_password_or_no_tls_is_refused(
    secure_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = _settings({**secure_env, "KAFKA_SASL_PASSWORD": "guess"}, monkeypatch)
    with pytest.raises(KafkaException):
        AdminClient(wrong.librdkafka()).list_topics(timeout=10)
    plaintext = _settings({**secure_env, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, monkeypatch)
    with pytest.raises(KafkaException):
        AdminClient(plaintext.librdkafka()).list_topics(timeout=10)


def _stored_bytes(database_url: str, image_id: str, within_s: float = 60) -> int | None:
    """The size of the image's stored bytes, once the projector has written them."""

    async def size() -> int | None:
        conn = await asyncpg.connect(database_url)
        try:
            found = await conn.fetchval(
                "SELECT octet_length(content) FROM image_blobs WHERE image_id = $1", image_id
            )
            return None if found is None else int(found)
        finally:
            await conn.close()

    deadline = time.monotonic() + within_s
    while True:
        found = asyncio.run(size())
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_services_work_over_sasl_ssl_from_settings_alone(
    secure_env: dict[str, str], database_url: str, faces_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(secure_env, monkeypatch)
    ingest_port, stream_port = 18100 + PORT_OFFSET, 16166 + PORT_OFFSET
    platform = Platform(
        ingest_url=f"http://127.0.0.1:{ingest_port}",
        api_url="",
        stream_url=f"http://127.0.0.1:{stream_port}",
        recognizer_url="",
        env={
            **os.environ,
            **secure_env,
            "DATABASE_URL": database_url,
            "ADMIN_API_KEY": ADMIN_KEY,
            "INGEST_PORT": str(ingest_port),
            "STREAM_WEB_PORT": str(stream_port),
            "STREAM_APP_ID": f"facestream-stream-sasl-{uuid.uuid4().hex[:6]}",
        },
    )
    try:
        # Both create the topics on the secure broker, over SASL_SSL.
        platform.start("ingest", ready_url=f"{platform.ingest_url}/readyz")
        platform.start("stream", ready_url=f"{platform.stream_url}/readyz")
        photo = faces_dir / "sample/examples/obama.jpg"
        r = httpx.post(
            f"{platform.ingest_url}/v1/images",
            headers=platform.headers,
            files={"files": (photo.name, photo.read_bytes(), "image/jpeg")},
            timeout=60,
        )
        assert r.status_code == 202, r.text
        image_id = r.json()["data"][0]["id"]
        # The stream worker (Faust/aiokafka over SASL_SSL) reads the event and stores the
        # image's bytes (only its projector writes them; ingest writes the row itself).
        stored = _stored_bytes(database_url, image_id)
        assert stored == photo.stat().st_size, "the stream worker did not read the image over SASL_SSL"
        # ... and publishes over SASL_SSL too (its one publisher): garbage is dead-lettered.
        producer = Producer(settings.librdkafka())
        producer.produce(topics.SUBMITTED, key=b"sasl-poison", value=b"not an event")
        assert producer.flush(30) == 0
        consumer = Consumer(
            settings.librdkafka(**{"group.id": f"sasl-test-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
        )
        consumer.subscribe([topics.DEAD_LETTER])
        found = None
        deadline = time.monotonic() + 60
        while found is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            letter = codec.decode_as(msg.value(), ImageDeadLettered)[1]
            if letter.raw == "not an event":
                found = letter
        consumer.close()
        assert found is not None, "the stream worker did not dead-letter over SASL_SSL"
    finally:
        platform.stop_all()
