"""Replaying dead letters after a fix (synchronous Kafka client: run it in a thread).

Every ``ImageDeadLettered`` that carries its recognition request becomes a new run of
that image on ``images.submitted`` (so it shows as pending again and goes through the
whole pipeline); parked messages without a request (unparseable events) cannot be
replayed and are only counted. The consumer group ``facestream-dead-letter-replay``
commits what was replayed, so the next call starts where this one stopped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from common.kafka import producer_config, watermarks
from schemas import codec, topics
from schemas.errors import SchemaError
from schemas.events import ImageDeadLettered, RecognitionRequested

GROUP = "facestream-dead-letter-replay"


@dataclass(frozen=True)
class Replay:
    replayed: int
    skipped: int


def replay_dead_letters(conf: dict[str, Any], limit: int, timeout: float = 30.0) -> Replay:
    """Replay up to ``limit`` dead letters parked before now. Raises KafkaException when
    the broker does not answer; what was replayed before that is committed."""
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
    replayed = skipped = 0
    try:
        meta = consumer.list_topics(topics.DEAD_LETTER, timeout=timeout).topics[topics.DEAD_LETTER]
        ends = {
            p: watermarks(consumer, TopicPartition(topics.DEAD_LETTER, p), timeout)[1]
            for p in meta.partitions
        }
        consumer.assign([TopicPartition(topics.DEAD_LETTER, p) for p in ends])
        committed = consumer.committed([TopicPartition(topics.DEAD_LETTER, p) for p in ends], timeout=timeout)
        positions = {tp.partition: max(tp.offset, 0) for tp in committed}
        pending = {p for p, end in ends.items() if positions[p] < end}
        done: list[TopicPartition] = []
        while pending and replayed + skipped < limit:
            msg = consumer.poll(1.0)
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
            else:
                again = request.image.model_copy(update={"run": request.image.run + 1})
                producer.produce(
                    topics.SUBMITTED,
                    key=again.image_id,
                    value=codec.encode_data(again, source="api-dead-letter-replay"),
                )
                replayed += 1
            done.append(TopicPartition(topics.DEAD_LETTER, part, offset + 1))
            if offset + 1 >= ends[part]:
                pending.discard(part)
        if producer.flush(timeout) != 0:
            raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "replayed images not acknowledged"))
        if done:
            consumer.commit(offsets=done, asynchronous=False)
    finally:
        consumer.close()
    return Replay(replayed=replayed, skipped=skipped)


def _request_of(raw: bytes | None) -> RecognitionRequested | None:
    try:
        data = codec.decode(raw).data
    except SchemaError:
        return None
    return data.request if isinstance(data, ImageDeadLettered) else None
