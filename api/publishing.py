"""Publishing events from request handlers: wait for the broker's acknowledgement."""

from __future__ import annotations

from confluent_kafka import KafkaException
from pydantic import BaseModel

from common.kafka import AsyncProducer
from schemas.codec import TYPE_OF, encode_data

SOURCE = "api"


class BrokerUnavailable(Exception):
    """An event was not acknowledged by the broker; the app answers 503 with this message."""


async def publish(producer: AsyncProducer, topic: str, key: str, event: BaseModel) -> None:
    """Send ``event`` keyed ``key`` and return once the broker has acknowledged it.

    Raises :class:`BrokerUnavailable` when it was not acknowledged within the producer's
    ``delivery.timeout.ms`` (broker down or unreachable). Callers publish inside their
    database transaction, so the failure rolls their write back and a retry is safe.
    """
    try:
        await producer.send(topic, encode_data(event, source=SOURCE), key=key)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"the event broker did not acknowledge {TYPE_OF[type(event)]} on {topic!r} ({exc}); retry later"
        ) from exc
