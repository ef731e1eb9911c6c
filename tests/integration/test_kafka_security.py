"""SASL/TLS to the broker, configured through settings only, and least privilege on it.

A second real broker is started with a SASL_SSL listener (TLS with a certificate from a
test CA, SASL/PLAIN with one administrator, SCRAM-SHA-512 for the rest) and ACLs on
(KRaft's StandardAuthorizer, nothing allowed without an ACL). The services are started
against it with nothing but environment variables (as a Kubernetes Secret would supply
them): ingest publishes an upload, the stream worker joins its consumer group and
dispatches it, and a client with the wrong password is refused.

Then each service gets its own SCRAM user with the ACLs of schemas/access.py, applied by
``common.kafka_access.apply_acls``: each can do its job under its own user (ingest
publishes, a recognizer pool recognizes, the stream worker projects and dead-letters,
the API replays dead letters), and nothing more: the recognizer cannot write the
gallery, ingest cannot read it, and no service can create a topic.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from api.dead_letters import replay_dead_letters
from api.scans import ScanClient, ScanReplies, replica_id
from common.kafka import ensure_topics, producer_config
from common.kafka_access import Applied, apply_acls, binding
from common.publisher import Publisher
from common.settings import ServiceSettings
from schemas import access, codec, topics
from schemas.access import Acl, Operation, Pattern, Resource
from schemas.events import ImageDeadLettered, ScanProbe
from tests.conftest import PORT_OFFSET, ROOT, TEST_RUN_DIR
from tests.platform import ADMIN_KEY, Platform, wait_ready

pytestmark = pytest.mark.integration

# x50-x52: no port of another session's offset (a multiple of 100) lands here; 19292 was
# the main broker's port (19092) of the session 200 above.
PLAIN_PORT = 19250 + PORT_OFFSET  # and the controller on the next port
SASL_PORT = 19252 + PORT_OFFSET
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
        "KAFKA_AUTHORIZER": "1",  # USER is a super user; everyone else needs ACLs
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


# --------------------------------------------------------------- least privilege


def _until(what: str, done: Callable[[], bool], within_s: float = 60) -> None:
    """Poll ``done`` until it holds; fail naming ``what`` after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {within_s}s")
        time.sleep(0.2)


def _logs_in(env: dict[str, str]) -> bool:
    try:
        AdminClient(_conf(env)).list_topics(timeout=5)
        return True
    except KafkaException:
        return False


@pytest.fixture(scope="module")
def principals(secure_env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each principal of schemas/access.py as a SCRAM user with its ACLs applied, and the
    topics created by the admin principal; service name -> its client environment."""
    admin = AdminClient(_conf(secure_env))
    users = {p.service: (p.user, f"{p.user}-password") for p in access.PRINCIPALS}
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(u, info, pw.encode()) for u, pw in users.values()
    ]
    for fut in admin.alter_user_scram_credentials(upserts).values():
        fut.result(timeout=30)
    apply_acls(admin)
    # ACLs reach the broker's authorizer through the metadata log: once they are all
    # there, applying them again changes nothing.
    _until("the ACLs did not reach the broker", lambda: apply_acls(admin) == Applied(0, 0))
    envs = {
        service: {
            **secure_env,
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": password,
        }
        for service, (user, password) in users.items()
    }
    for service, env in envs.items():  # SCRAM credentials reach the broker asynchronously
        _until(f"{service} could not log in", partial(_logs_in, env))
    ensure_topics(_conf(envs["admin"]))
    return envs


def _conf(env: dict[str, str], **extra: str) -> dict[str, Any]:
    """A client's configuration from service environment variables, as the services read them."""
    return ServiceSettings.model_validate({k.lower(): v for k, v in env.items()}).librdkafka(**extra)


def _write_error(env: dict[str, str], topic: str) -> int | None:
    """Produce a tombstone to ``topic`` as the services do (idempotent, acks=all): the
    error code it is refused with, or None once the broker acknowledged it."""
    producer = Producer(producer_config(_conf(env), **{"delivery.timeout.ms": 20_000}))
    reports: list[KafkaError | None] = []
    producer.produce(
        topic, key=f"person:{uuid.uuid4()}", value=None, on_delivery=lambda e, _m: reports.append(e)
    )
    producer.flush(30)
    assert reports, f"no delivery report for {topic}"
    return None if reports[0] is None else int(reports[0].code())


def _read_error(env: dict[str, str], topic: str) -> int | None:
    """Read ``topic``'s first partition from the start, assigned (as the gallery reader
    does): TOPIC_AUTHORIZATION_FAILED if the fetch is refused, None once its end is
    reached. (Other errors, such as a group this user may not use, are passed over: the
    group only matters for commits, which this reader never makes.)"""
    consumer = Consumer(
        _conf(
            env,
            **{
                "group.id": access.GALLERY_READER_GROUP,
                "enable.auto.commit": "false",  # as the gallery reader: no commit at close
                "enable.partition.eof": "true",
            },
        )
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    others: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg: Message | None = consumer.poll(0.5)
            err = None if msg is None else msg.error()
            if err is None:
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                return None
            if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                return int(err.code())
            others.append(str(err))
        pytest.fail(f"reading {topic}: neither its end nor a refusal within 30s ({others})")
    finally:
        consumer.close()


def test_only_the_api_and_the_stream_may_write_the_gallery(principals: dict[str, dict[str, str]]) -> None:
    refused = KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _write_error(principals["recognizer"], topics.GALLERY) == refused
    assert _write_error(principals["ingest"], topics.GALLERY) == refused
    assert _write_error(principals["api"], topics.GALLERY) is None  # enrollment, erasure
    assert _write_error(principals["stream"], topics.GALLERY) is None  # an erasure's purge


def test_only_the_readers_of_the_gallery_may_read_it(principals: dict[str, dict[str, str]]) -> None:
    assert _read_error(principals["ingest"], topics.GALLERY) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _read_error(principals["api"], topics.GALLERY) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _read_error(principals["recognizer"], topics.GALLERY) is None
    assert _read_error(principals["stream"], topics.GALLERY) is None


def test_only_the_admin_creates_topics_and_only_facestream_ones(
    principals: dict[str, dict[str, str]],
) -> None:
    def create_error(service: str, name: str) -> int:
        admin = AdminClient(_conf(principals[service]))  # kept: its futures die with it
        futures = admin.create_topics([NewTopic(name, 1)], request_timeout=30)
        with pytest.raises(KafkaException) as refused:
            futures[name].result(timeout=30)
        return int(refused.value.args[0].code())

    probe = f"acl-probe-{uuid.uuid4().hex[:8]}"
    for service in ("ingest", "stream", "recognizer", "api", "admin"):
        assert create_error(service, probe) == KafkaError.TOPIC_AUTHORIZATION_FAILED, service
    # The admin could (the fixture's ensure_topics ran as it): the topic exists only as such.
    assert create_error("admin", topics.GALLERY) == KafkaError.TOPIC_ALREADY_EXISTS
    assert create_error("ingest", topics.GALLERY) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_apply_makes_the_acls_exactly_those_of_schemas_access(
    principals: dict[str, dict[str, str]], secure_env: dict[str, str]
) -> None:
    admin = AdminClient(_conf(secure_env))
    assert apply_acls(admin) == Applied(created=0, deleted=0)  # idempotent
    stray = binding(access.RECOGNIZER, Acl(Resource.TOPIC, topics.GALLERY, Pattern.LITERAL, Operation.WRITE))
    for fut in admin.create_acls([stray]).values():
        fut.result(timeout=30)
    _until(
        "a granted write was not allowed",
        lambda: _write_error(principals["recognizer"], topics.GALLERY) is None,
    )
    assert apply_acls(admin) == Applied(created=0, deleted=1)  # the stray grant is revoked
    _until(
        "a revoked write was still allowed",
        lambda: (
            _write_error(principals["recognizer"], topics.GALLERY) == KafkaError.TOPIC_AUTHORIZATION_FAILED
        ),
    )


async def _status(database_url: str, image_id: str) -> str | None:
    conn = await asyncpg.connect(database_url)
    try:
        found = await conn.fetchval("SELECT status FROM images WHERE id = $1", uuid.UUID(image_id))
        return None if found is None else str(found)
    finally:
        await conn.close()


def test_each_service_does_its_job_under_its_own_user(
    principals: dict[str, dict[str, str]],
    database_url: str,
    faces_dir: Path,
    tmp_path: Path,
) -> None:
    ingest_port, stream_port, recognizer_port = 18110 + PORT_OFFSET, 16176 + PORT_OFFSET, 19111 + PORT_OFFSET
    platform = Platform(
        ingest_url=f"http://127.0.0.1:{ingest_port}",
        api_url="",
        stream_url=f"http://127.0.0.1:{stream_port}",
        recognizer_url=f"http://127.0.0.1:{recognizer_port}",
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "ADMIN_API_KEY": ADMIN_KEY,
            "INGEST_PORT": str(ingest_port),
            "STREAM_WEB_PORT": str(stream_port),
            "STREAM_APP_ID": f"facestream-stream-acl-{uuid.uuid4().hex[:6]}",
            "F_DATADIR": str(tmp_path / "faust"),
            "METRICS_PORT": str(recognizer_port),
            "WORKERS": "1",
            "PYTHONUNBUFFERED": "1",
        },
    )
    try:
        # All three at once (each checks the topics at start-up, as its own user).
        urls = {
            "stream": platform.stream_url,
            "recognizer": platform.recognizer_url,
            "ingest": platform.ingest_url,
        }
        for name in urls:
            platform.start(name, ready_url=None, env=principals[name])
        for name, url in urls.items():
            wait_ready(name, f"{url}/readyz", platform.procs[name])
        image_id = _upload(platform, faces_dir / "sample/examples/obama.jpg")
        # ingest published it, the recognizer read it and published its result, the stream
        # worker read that result and projected it: each as its own user.
        _until(
            "the image was not recognized and projected",
            lambda: asyncio.run(_status(database_url, image_id)) in {"processed", "unresolved"},
            within_s=120,
        )
        # A photo the API asks to scan (faces.scan, as the api user) is answered by the
        # recognizer (faces.scanned, as its user) and read back by the API's reply reader.
        photo = (faces_dir / "sample/examples/obama.jpg").read_bytes()
        found = asyncio.run(_probe_as_api(_conf(principals["api"]), photo))
        assert isinstance(found, ScanProbe)
        # Garbage published as ingest is dead-lettered by the stream worker, and the API's
        # replay (its consumer group, a read of the dead letters) passes over it.
        producer = Producer(_conf(principals["ingest"]))
        producer.produce(topics.SUBMITTED, key=b"acl-poison", value=b"not an event")
        assert producer.flush(30) == 0
        skipped = 0

        def replayed_garbage() -> bool:
            nonlocal skipped
            skipped += replay_dead_letters(_conf(principals["api"]), limit=100, deadline_s=5).skipped
            return skipped > 0

        _until("the API never read a dead letter", replayed_garbage)
    finally:
        platform.stop_all()


async def _probe_as_api(conf: dict[str, Any], photo: bytes) -> object:
    replies = ScanReplies(conf, replica_id())
    await asyncio.to_thread(replies.start)
    publisher = Publisher.connect(conf, source="api")
    try:
        return await ScanClient(publisher, replies, timeout_s=60).probe(photo)
    finally:
        replies.close()
        publisher.close()


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
        image_id = _upload(platform, faces_dir / "sample/examples/obama.jpg")
        # The stream worker (Faust/aiokafka over SASL_SSL) reads the event and stores the
        # image's bytes (only its projector writes them; ingest writes the row itself).
        stored = _stored_bytes(database_url, image_id)
        assert stored == (faces_dir / "sample/examples/obama.jpg").stat().st_size, (
            "the stream worker did not read the image over SASL_SSL"
        )
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


def _upload(platform: Platform, photo: Path) -> str:
    """Submit ``photo`` through ingest; its image id."""
    r = httpx.post(
        f"{platform.ingest_url}/v1/images",
        headers=platform.headers,
        files={"files": (photo.name, photo.read_bytes(), "image/jpeg")},
        timeout=60,
    )
    assert r.status_code == 202, r.text
    image_id: str = r.json()["data"][0]["id"]
    return image_id
