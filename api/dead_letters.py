"""Replaying dead letters after a fix (synchronous Kafka client: run it in a thread).

Every ``ImageDeadLettered`` that carries its recognition request becomes a new run of
that image on ``images.submitted`` (so it shows as pending again and goes through the
whole pipeline). Parked messages without a request (unparseable events) cannot be
replayed and are only counted; so are letters of images erased since (``is_erased``):
replaying them would put an erased image back on the broker. The consumer group
``facestream-dead-letter-replay`` commits what was replayed, and only once the broker
acknowledged every republished image, so the next call starts where this one stopped
and no letter is lost. One replay runs at a time (:func:`replay_lock`, a PostgreSQL
advisory lock shared by every API replica): two at once would republish the same letters.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from common.errors import FacestreamError
from common.kafka import producer_config, watermarks
from schemas import codec, topics
from schemas.errors import SchemaError
from schemas.events import ImageDeadLettered, RecognitionRequested

GROUP = "facestream-dead-letter-replay"
#: The advisory lock key (``pg_try_advisory_lock``) held while a replay runs.
LOCK_KEY = 0x66730001


class ReplayInProgress(FacestreamError):
    """Another replay holds the lock; this one did nothing."""


@asynccontextmanager
async def replay_lock(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Hold the replay lock for the block; raises :class:`ReplayInProgress` at once if
    another replay holds it. The lock is a session lock on one pooled connection, so it
    is released when the block ends or, if this process dies, when the connection drops."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            raise ReplayInProgress("a dead-letter replay is already running")
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


@dataclass(frozen=True)
class Replay:
    replayed: int
    skipped: int
    erased: int = 0


def never_erased(_image_id: str) -> bool:
    return False


def replay_dead_letters(
    conf: dict[str, Any],
    limit: int,
    timeout: float = 30.0,
    deadline_s: float = 60.0,
    is_erased: Callable[[str], bool] = never_erased,
) -> Replay:
    """Replay up to ``limit`` dead letters parked before now, for at most ``deadline_s``
    seconds of reading (then it stops early; the next call continues). A letter whose image
    ``is_erased`` is passed over (counted in ``erased``), never republished.

    Letters already deleted by retention are passed over (reading starts at each
    partition's oldest letter still kept). Raises KafkaException when the broker does not
    answer or does not acknowledge every republished image: the dead-letter offsets are
    then not committed, so every letter of this call is replayed again by the next one.
    """
    stop_at = time.monotonic() + deadline_s
    consumer = Consumer(
        {
            **conf,
            "group.id": GROUP,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "client.id": f"dlq-replay-{uuid.uuid4()}",
        }
    )
    producer = Producer(producer_config(conf))
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    replayed = skipped = erased = 0
    try:
        meta = consumer.list_topics(topics.DEAD_LETTER, timeout=timeout).topics[topics.DEAD_LETTER]
        marks = {
            p: watermarks(consumer, TopicPartition(topics.DEAD_LETTER, p), timeout) for p in meta.partitions
        }
        ends = {p: high for p, (_low, high) in marks.items()}
        committed = consumer.committed([TopicPartition(topics.DEAD_LETTER, p) for p in ends], timeout=timeout)
        # Letters below the low watermark expired: start at the oldest one kept.
        positions = {tp.partition: max(tp.offset, marks[tp.partition][0]) for tp in committed}
        pending = {p for p, end in ends.items() if positions[p] < end}
        consumer.assign([TopicPartition(topics.DEAD_LETTER, p, positions[p]) for p in pending])
        done: list[TopicPartition] = []
        while pending and replayed + skipped + erased < limit and time.monotonic() < stop_at:
            msg = consumer.poll(max(0.0, min(1.0, stop_at - time.monotonic())))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(err)
                continue
            part, offset = msg.partition() or 0, msg.offset() or 0
            if offset >= ends[part]:
                pending.discard(part)
                continue
            request = _request_of(msg.value())
            if request is None:
                skipped += 1
            elif is_erased(request.image.image_id):
                erased += 1
            else:
                again = request.image.model_copy(update={"run": request.image.run + 1})
                producer.produce(
                    topics.SUBMITTED,
                    key=again.image_id,
                    value=codec.encode_data(again, source="api-dead-letter-replay"),
                    on_delivery=delivered,
                )
                replayed += 1
            done.append(TopicPartition(topics.DEAD_LETTER, part, offset + 1))
            if offset + 1 >= ends[part]:
                pending.discard(part)
        if producer.flush(timeout) != 0:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "replayed images not acknowledged"))
        if failures:  # flush() counts failed deliveries as done: each report says how it ended
            raise KafkaException(failures[0])
        if done:
            consumer.commit(offsets=done, asynchronous=False)
    finally:
        consumer.close()
    return Replay(replayed=replayed, skipped=skipped, erased=erased)


def _request_of(raw: bytes | None) -> RecognitionRequested | None:
    try:
        data = codec.decode(raw).data
    except SchemaError:
        return None
    return data.request if isinstance(data, ImageDeadLettered) else None
