"""Dead-letter replay against the real broker and database: deadline, expired letters,
one replay at a time, and no committed offset for a replay the broker did not acknowledge.

The replay group's committed offsets are shared by every test of the session, so each
test first drains what earlier tests left and then looks only for its own letters.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app
from api.dead_letters import LOCK_KEY, Replay, replay_dead_letters
from api.settings import ApiSettings
from common.kafka import watermarks
from schemas import codec, topics
from schemas.events import FailureReason, ImageDeadLettered, ImageSubmitted, RecognitionRequested
from schemas.topics import MAX_MESSAGE_BYTES
from tests.platform import ADMIN_KEY

pytestmark = pytest.mark.integration
async_test = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def conf(kafka_bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": kafka_bootstrap}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(kafka_bootstrap: str, database_url: str) -> AsyncIterator[FastAPI]:
    settings = ApiSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=SecretStr(database_url),
        admin_api_key=SecretStr(ADMIN_KEY),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):  # creates the topics
        yield app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api", headers={"X-API-Key": ADMIN_KEY}
    ) as c:
        yield c


@pytest.fixture
def drained(app: FastAPI, conf: dict[str, Any]) -> None:
    """Every letter earlier tests left is replayed: the group is at the end of the topic."""
    replay_dead_letters(conf, limit=100_000, timeout=10, deadline_s=60)


def _letter(size: int = 64) -> tuple[str, bytes]:
    """A dead letter carrying a request for a new image of ``size`` bytes: (image id, value)."""
    image_id = str(uuid.uuid4())
    content = uuid.uuid4().bytes * (size // 16)
    image = ImageSubmitted(
        image_id=image_id,
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        filename="parked.jpg",
        image_b64=base64.b64encode(content).decode(),
        submitted_at=datetime.now(UTC),
    )
    letter = ImageDeadLettered(
        reason=FailureReason.CORRUPT_IMAGE,
        detail="test letter",
        topic=topics.SUBMITTED,
        request=RecognitionRequested(image=image),
    )
    return image_id, codec.encode_data(letter, source="test")


def _park(conf: dict[str, Any], value: bytes, partition: int = 0) -> int:
    """Put ``value`` on the dead-letter topic; returns its offset."""
    offsets: list[int] = []
    producer = Producer(conf)
    producer.produce(
        topics.DEAD_LETTER,
        value=value,
        partition=partition,
        on_delivery=lambda err, msg: offsets.append(msg.offset() or 0) if err is None else None,
    )
    assert producer.flush(10) == 0
    assert offsets, "the dead letter was not acknowledged"
    return offsets[0]


def _republished(conf: dict[str, Any], start: dict[int, int], image_id: str, timeout: float = 15) -> int:
    """How many runs of ``image_id`` appeared on images.submitted after ``start``."""
    ends = _submitted_ends(conf)  # before assigning: an assigned consumer answers these slowly
    consumer = Consumer({**conf, "group.id": f"test-dlq-{uuid.uuid4()}", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topics.SUBMITTED, p, o) for p, o in start.items()])
        positions = dict(start)
        found = 0
        deadline = time.monotonic() + timeout
        while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            positions[msg.partition() or 0] = (msg.offset() or 0) + 1
            found += msg.key() == image_id.encode()
        return found
    finally:
        consumer.close()


def _submitted_ends(conf: dict[str, Any]) -> dict[int, int]:
    consumer = Consumer({**conf, "group.id": f"test-dlq-{uuid.uuid4()}"})
    try:
        parts = consumer.list_topics(topics.SUBMITTED, timeout=10).topics[topics.SUBMITTED].partitions
        return {p: watermarks(consumer, TopicPartition(topics.SUBMITTED, p), 10)[1] for p in parts}
    finally:
        consumer.close()


def _in_thread(fn: Any, within: float) -> Replay:
    """Runs ``fn`` in a daemon thread; fails the test if it has not returned ``within`` s
    (the old replay never returned: the thread is left to the process's end)."""
    out: list[Replay] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"the replay did not return within {within} s"
    if errors:
        raise errors[0]
    return out[0]


@pytest.fixture
def submitted_limit(conf: dict[str, Any]) -> Iterator[Callable[[], None]]:
    """images.submitted accepts only small messages (a broker that refuses the
    republished image) until the callable given to the test restores its own limit."""
    admin = AdminClient(conf)

    def set_limit(value: int) -> None:
        entry = ConfigEntry("max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(ConfigResource.Type.TOPIC, topics.SUBMITTED, incremental_configs=[entry])
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(timeout=10)

    set_limit(2_000)
    yield lambda: set_limit(MAX_MESSAGE_BYTES)
    set_limit(MAX_MESSAGE_BYTES)


# --------------------------------------------------------------------------- tests


def test_letters_expired_by_retention_do_not_stall_the_replay(conf: dict[str, Any], drained: None) -> None:
    """Every letter left in a partition expired: the old replay polled for ever, waiting
    for offsets that no longer exist."""
    image_id, value = _letter()
    _park(conf, value, partition=1)
    admin = AdminClient(conf)
    for future in admin.delete_records([TopicPartition(topics.DEAD_LETTER, 1, OFFSET_END)]).values():
        future.result(timeout=10)  # as retention would: the low watermark passes the letter
    start = _submitted_ends(conf)

    result = _in_thread(lambda: replay_dead_letters(conf, limit=100, timeout=10, deadline_s=60), within=30)

    # Letters other tests' images keep producing may be replayed too (the platform runs
    # alongside): what counts is that the call returned, and that the expired one was not.
    assert result.replayed >= 0
    assert _republished(conf, start, image_id, timeout=5) == 0


def test_a_replay_stops_at_its_deadline_and_the_next_call_continues(
    conf: dict[str, Any], drained: None
) -> None:
    image_id, value = _letter()
    _park(conf, value, partition=2)
    start = _submitted_ends(conf)

    began = time.monotonic()
    assert replay_dead_letters(conf, limit=100, timeout=10, deadline_s=0) == Replay(replayed=0, skipped=0)
    assert time.monotonic() - began < 10

    assert replay_dead_letters(conf, limit=100, timeout=10, deadline_s=60).replayed >= 1
    assert _republished(conf, start, image_id) == 1


def test_a_replay_the_broker_does_not_acknowledge_commits_nothing(
    conf: dict[str, Any], drained: None, submitted_limit: Callable[[], None]
) -> None:
    """The broker refuses the republished image (too large for the topic now): the old
    replay counted it, committed the letter's offset, and the letter was lost."""
    image_id, value = _letter(size=4_000)
    _park(conf, value, partition=3)
    start = _submitted_ends(conf)

    with pytest.raises(KafkaException):
        replay_dead_letters(conf, limit=100, timeout=10, deadline_s=60)
    assert _republished(conf, start, image_id, timeout=5) == 0

    submitted_limit()  # the broker takes it again: the letter is still there to replay
    assert replay_dead_letters(conf, limit=100, timeout=10, deadline_s=60).replayed >= 1
    assert _republished(conf, start, image_id) == 1


@async_test
async def test_a_second_replay_while_one_runs_is_409(client: httpx.AsyncClient, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)  # a replay running
        busy = await client.post("/v1/admin/dead-letters/replay")
        assert busy.status_code == 409
        assert busy.json() == {"detail": "a dead-letter replay is already running"}
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        free = await client.post("/v1/admin/dead-letters/replay")
        assert free.status_code == 202, free.text
    finally:
        await conn.close()


@async_test
async def test_two_concurrent_replays_replay_each_letter_once(
    client: httpx.AsyncClient, conf: dict[str, Any], drained: None
) -> None:
    image_ids = []
    for partition in range(4):
        image_id, value = _letter()
        _park(conf, value, partition=partition)
        image_ids.append(image_id)
    start = await asyncio.to_thread(_submitted_ends, conf)

    answers = await asyncio.gather(*(client.post("/v1/admin/dead-letters/replay") for _ in range(2)))

    assert sorted(a.status_code for a in answers) in ([202, 202], [202, 409])
    # at least ours (letters the running platform adds meanwhile may be replayed too)
    assert sum(a.json().get("replayed", 0) for a in answers) >= 4
    for image_id in image_ids:
        assert await asyncio.to_thread(_republished, conf, start, image_id) == 1
