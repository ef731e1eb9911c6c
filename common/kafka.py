"""Kafka plumbing on confluent-kafka: topic creation and an asyncio-friendly producer."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from common.errors import BrokerUnavailable
from schemas.topics import TOPICS, Topic

log = logging.getLogger(__name__)


def ensure_topics(conf: dict[str, Any], topics: Iterable[Topic] = TOPICS, timeout: float = 30.0) -> None:
    """Create any missing topic with its partitions and config; an existing topic with
    fewer partitions than declared is grown to the declared count (never shrunk), and
    its declared config (retention above all) is set where the broker's differs.

    Raises :class:`BrokerUnavailable` if the broker does not answer within ``timeout``.
    """
    admin = AdminClient(conf)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerUnavailable(str(exc)) from exc
    topics = list(topics)
    _grow_partitions(admin, [t for t in topics if t.name in existing], timeout)
    _align_configs(admin, [t for t in topics if t.name in existing], timeout)
    missing = [t for t in topics if t.name not in existing]
    if not missing:
        return
    futures = admin.create_topics(
        [
            NewTopic(t.name, num_partitions=t.partitions, replication_factor=-1, config=t.config)
            for t in missing
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout)
            log.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    _wait_for_leaders(admin, [t.name for t in missing], timeout)


def _grow_partitions(admin: AdminClient, declared: list[Topic], timeout: float) -> None:
    """Add partitions to topics created with fewer (an upgrade raised the count).

    New partitions only receive new messages; keys move to other partitions from then on,
    which facestream tolerates: every consumer orders an image's events by its ``run``.
    """
    meta = admin.list_topics(timeout=timeout).topics
    grow = [
        NewPartitions(t.name, t.partitions)
        for t in declared
        if t.name in meta and meta[t.name].partitions and len(meta[t.name].partitions) < t.partitions
    ]
    if not grow:
        return
    for name, fut in admin.create_partitions(grow, request_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
            log.info("grew topic %s to its declared partitions", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.INVALID_PARTITIONS:  # another service did it first
                raise
    _wait_for_leaders(admin, [p.topic for p in grow], timeout)


def _align_configs(admin: AdminClient, declared: list[Topic], timeout: float) -> None:
    """Set each declared config entry an existing topic has with another value.

    A topic created by an older release keeps its config: without this, shortening a
    retention (the dead letters' from 30 days to 7) would never reach a running cluster.
    Only declared keys are touched; anything else an operator set stays. A principal not
    allowed to read or change topic configs (least privilege: an operator applies them)
    logs a warning and goes on.
    """
    if not declared:
        return
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t.name) for t in declared]
    try:
        current = {
            res.name: fut.result(timeout=timeout) for res, fut in admin.describe_configs(resources).items()
        }
    except KafkaException as exc:
        log.warning("could not read the topics' configs (%s); leaving them as they are", exc)
        return
    changes = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            t.name,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in drift.items()
            ],
        )
        for t in declared
        if (drift := config_drift(t.config, {k: e.value for k, e in current.get(t.name, {}).items()}))
    ]
    if not changes:
        return
    for res, fut in admin.incremental_alter_configs(changes).items():
        try:
            fut.result(timeout=timeout)
            log.info("set the declared config of topic %s", res.name)
        except KafkaException as exc:
            log.warning("could not set the declared config of topic %s (%s)", res.name, exc)


def config_drift(declared: Mapping[str, str], actual: Mapping[str, str | None]) -> dict[str, str]:
    """The declared entries whose value the broker does not have."""
    return {k: v for k, v in declared.items() if actual.get(k) != v}


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Return once every partition of ``names`` has a leader: a topic that was just created
    answers NOT_LEADER_FOR_PARTITION until its leaders are elected and known."""
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=timeout).topics
        pending = [
            n
            for n in names
            if n not in meta
            or meta[n].error is not None
            or not meta[n].partitions
            or any(p.leader < 0 for p in meta[n].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"no leader for the partitions of {pending} within {timeout}s")
        time.sleep(0.1)


_RETRIABLE_METADATA = frozenset(
    {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART}
)


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """(low, high) offsets of ``tp``, retrying while a just-created partition has no leader yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=max(0.1, deadline - time.monotonic()))
            return int(low), int(high)
        except KafkaException as exc:
            if exc.args[0].code() not in _RETRIABLE_METADATA or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def producer_config(conf: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Safe producer defaults: every write acknowledged by all replicas, no duplicates from retries."""
    return {
        **conf,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "compression.type": "none",  # image bytes are already compressed (JPEG, PNG, WebP)
        "message.max.bytes": 16 * 1024 * 1024,
        **extra,
    }


class AsyncProducer:
    """A confluent-kafka producer whose ``send`` is awaitable until the broker acknowledges.

    ``send`` raises :class:`KafkaException` when the message could not be delivered
    (after librdkafka's own retries, bounded by ``delivery.timeout.ms``); the caller
    decides what that means (an HTTP 503, a retry).
    """

    def __init__(self, conf: dict[str, Any]) -> None:
        self._producer = Producer(producer_config(conf))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        partition: int | None = None,
    ) -> tuple[int, int]:
        """Returns the (partition, offset) the broker stored the message at."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, int]] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                loop.call_soon_threadsafe(_set_exc, fut, KafkaException(err))
            else:
                loop.call_soon_threadsafe(_set_result, fut, (msg.partition(), msg.offset()))

        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=on_delivery, **extra
                )
                break
            except BufferError:  # local queue full: let deliveries drain
                await asyncio.sleep(0.05)
        return await fut

    def ready(self, timeout: float = 2.0) -> bool:
        """True when the broker answers a metadata request now."""
        try:
            self._producer.list_topics(timeout=timeout)
            return True
        except KafkaException:
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop."""
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=2)


def _set_result(fut: asyncio.Future[tuple[int, int]], where: tuple[int, int]) -> None:
    if not fut.done():
        fut.set_result(where)


def _set_exc(fut: asyncio.Future[tuple[int, int]], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
