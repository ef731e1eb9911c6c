"""The one way facestream publishes: an acknowledged send behind a circuit breaker.

Every producer of the platform (ingest, the results API, the stream worker) publishes
through :class:`Publisher`. ``publish`` returns only once the broker has acknowledged the
message (all in-sync replicas, idempotent producer) and tells where it landed; it raises
:class:`~common.errors.BrokerUnavailable` otherwise, so "broker down" has one name.

The breaker turns a dead broker into an immediate refusal (with a ``retry_after``)
instead of every caller waiting out the delivery timeout. The recognizer processes do
not use this class: they are synchronous and store offsets from delivery callbacks
(:mod:`recognizer.worker`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from pydantic import BaseModel

from common.circuit import CircuitBreaker
from common.errors import BrokerUnavailable
from common.kafka import AsyncProducer
from schemas import codec


@dataclass(frozen=True)
class Delivered:
    """Where the broker stored a message."""

    topic: str
    partition: int
    offset: int


class Publisher:
    """An :class:`AsyncProducer` and the circuit breaker around the broker it talks to."""

    def __init__(self, producer: AsyncProducer, *, source: str, failure_threshold: int = 3) -> None:
        self.producer = producer
        self.source = source
        self.breaker = CircuitBreaker(
            "kafka", failure_threshold=failure_threshold, base_delay=1.0, max_delay=30.0
        )

    @classmethod
    def connect(cls, conf: dict[str, Any], *, source: str, delivery_timeout_ms: int = 30_000) -> Publisher:
        return cls(AsyncProducer({**conf, "delivery.timeout.ms": delivery_timeout_ms}), source=source)

    async def publish(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None,
        *,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        partition: int | None = None,
    ) -> Delivered:
        """Send one message and wait for its acknowledgement; see the module docstring."""
        if not self.breaker.allow():
            retry = max(1, math.ceil(self.breaker.retry_in()))
            raise BrokerUnavailable(f"the event broker is unavailable; retry in {retry} s", retry)
        try:
            where = await self.producer.send(topic, value, key=key, headers=headers, partition=partition)
        except KafkaException as exc:
            self.breaker.record_failure()
            raise BrokerUnavailable(
                f"the event broker did not acknowledge a message on {topic!r}: {exc}"
            ) from None
        self.breaker.record_success()
        return Delivered(topic, *where)

    async def publish_event(
        self, topic: str, key: str | bytes | None, event: BaseModel, *, trace_id: str | None = None
    ) -> Delivered:
        """Encode ``event`` in its envelope (see :mod:`schemas.codec`) and publish it."""
        return await self.publish(topic, codec.encode_data(event, source=self.source, trace_id=trace_id), key)

    def ready(self, timeout: float = 2.0) -> bool:
        return self.producer.ready(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.producer.close(timeout)
