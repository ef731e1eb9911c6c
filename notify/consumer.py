"""The Kafka side of notify: reads images.results in a consumer group of its own and hands
each result to a handler (webhooks: :func:`write_deliveries`; MQTT:
notify.mqtt_consumer), one at a time, in order.

Contract: a message's offset is stored for commit only once its handler returned (the
webhook handler writes its deliveries with ``INSERT ... ON CONFLICT DO NOTHING`` on ids
derived from webhook, image, run, event and face; the MQTT handler has every PUBACK), so
a crash commits nothing unhandled: at least once. While the handler fails for a reason
that passes (the database or the MQTT broker is down) the consumer waits and tries the
same message again; it never skips one. Messages that are not results (unknown event
types, poison) are passed over: the stream worker dead-letters those. A new group starts
at the topic's end: a receiver gets what is recognized after notify first runs, not a
week of history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from prometheus_client import Counter

from common.db import DATABASE_UNAVAILABLE
from notify import metrics
from notify.deliveries import Delivery, Webhook, plan
from notify.readmodel import context_of
from notify.settings import NotifySettings
from schemas import codec
from schemas.errors import SchemaError
from schemas.events import FacesRecognized, ImageFailed
from schemas.topics import RESULTS

log = logging.getLogger(__name__)

#: Reading the read model or writing deliveries failed for a reason that passes: wait and
#: try again.
DATABASE_RETRIED: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)

Result = FacesRecognized | ImageFailed
#: Does what a result calls for; returns the ``kind`` it is counted as once done.
Handler = Callable[[Result], Awaitable[str]]


def consumer_config(settings: NotifySettings, group_id: str, client_id: str) -> dict[str, Any]:
    return settings.librdkafka(
        **{
            "group.id": group_id,
            "client.id": client_id,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,  # stored once the deliveries are written
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "latest",
        }
    )


async def webhooks(conn: asyncpg.Pool | asyncpg.Connection) -> list[Webhook]:
    rows = await conn.fetch("SELECT id, url, events, cameras, people, secret FROM webhooks")
    return [
        Webhook(
            id=str(r["id"]),
            url=r["url"],
            events=frozenset(r["events"]),
            cameras=frozenset(r["cameras"]),
            people=frozenset(str(p) for p in r["people"]),
            secret=r["secret"],
        )
        for r in rows
    ]


async def deliveries_for(pool: asyncpg.Pool, result: Result) -> list[Delivery]:
    """What :func:`notify.deliveries.plan` makes of ``result``, with the read model's
    camera, names and erasures."""
    hooks = await webhooks(pool)
    if not hooks:
        return []
    ctx = await context_of(pool, result)
    return plan(result, hooks, camera=ctx.camera, names=ctx.names, erased=ctx.erased)


async def store(pool: asyncpg.Pool, deliveries: list[Delivery]) -> None:
    """Write the deliveries; one already written (a redelivered result) is left as it is."""
    if not deliveries:
        return
    await pool.executemany(
        """
        INSERT INTO webhook_deliveries (id, webhook_id, event, image_id, run, face_index, body)
        SELECT $1::uuid, $2::uuid, $3, $4::uuid, $5, $6, $7
        WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $2::uuid)
        ON CONFLICT (id) DO NOTHING
        """,
        [(d.id, d.webhook_id, d.event.value, d.image_id, d.run, d.face_index, d.body) for d in deliveries],
    )
    for d in deliveries:
        metrics.CREATED.labels(d.event.value).inc()


def write_deliveries(pool: asyncpg.Pool) -> Handler:
    """The webhook handler: writes the deliveries a result makes (the sender sends them)."""

    async def handle(result: Result) -> str:
        await store(pool, await deliveries_for(pool, result))
        return "planned"

    return handle


class ResultsConsumer:
    """One consumer group on images.results feeding one handler (see the module's contract).

    ``retried``: the handler's errors that pass (wait and try the same message again,
    backing off up to ``max_delay_s``); any other error ends :meth:`run`. ``results``
    counts messages by kind (the handler's, or ``skipped``).
    """

    def __init__(
        self,
        settings: NotifySettings,
        handler: Handler,
        *,
        group_id: str,
        client_id: str,
        retried: tuple[type[BaseException], ...] = DATABASE_RETRIED,
        results: Counter = metrics.RESULTS,
        max_delay_s: float = 30.0,
    ) -> None:
        self.handler = handler
        self.retried = retried
        self.results = results
        self.max_delay_s = max_delay_s
        self.consumer = Consumer(consumer_config(settings, group_id, client_id))
        self.assigned = False

    def _on_assign(self, _consumer: Consumer, partitions: list[Any]) -> None:
        self.assigned = True

    async def run(self, stopping: asyncio.Event) -> None:
        """Read, handle, store the offset, until ``stopping``; then commit and leave."""
        self.consumer.subscribe([RESULTS], on_assign=self._on_assign)
        try:
            while not stopping.is_set():
                msg = await asyncio.to_thread(self.consumer.poll, 0.5)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("images.results: %s", err)
                    continue
                await self.handle(msg, stopping)
        finally:
            await asyncio.to_thread(self.consumer.close)  # commits what is stored

    def _done(self, msg: Message) -> None:
        """Store ``msg``'s offset for the next commit."""
        try:
            self.consumer.store_offsets(message=msg)
        except KafkaException as exc:
            # Its partition went to another member while the handler waited (past
            # max.poll.interval.ms): the group reads the message again (at least once).
            log.warning("images.results [%s] at %s not stored (%s)", msg.partition(), msg.offset(), exc)

    async def handle(self, msg: Message, stopping: asyncio.Event) -> None:
        try:
            env = codec.decode(msg.value())
        except SchemaError as exc:
            log.info("passing over a message on images.results (%s)", exc)
            self.results.labels("skipped").inc()
            self._done(msg)
            return
        if not isinstance(env.data, FacesRecognized | ImageFailed):
            self.results.labels("skipped").inc()
            self._done(msg)
            return
        delay = 0.5
        while True:
            try:
                kind = await self.handler(env.data)
                break
            except self.retried as exc:
                log.warning("could not handle the result of %s (%s); trying again", env.data.image_id, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                if stopping.is_set():
                    return  # not stored: the group reads it again
                delay = min(delay * 2, self.max_delay_s)
        self.results.labels(kind).inc()
        self._done(msg)
