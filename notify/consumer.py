"""The Kafka side: reads images.results in notify's own consumer group and writes the
deliveries each result makes into PostgreSQL.

Contract: a message's offset is stored for commit only once its deliveries are written
(``INSERT ... ON CONFLICT DO NOTHING`` on ids derived from webhook, image, run, event and
face), so a crash commits nothing unwritten and a redelivered result writes nothing
twice: at least once, without duplicates. While the database is down the consumer waits
and tries the same message again; it never skips one. Messages that are not results
(unknown event types, poison) are passed over: the stream worker dead-letters those.
A new group starts at the topic's end: a webhook gets what is recognized after notify
first runs, not a week of history.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from confluent_kafka import Consumer, KafkaError, Message

from common.db import DATABASE_UNAVAILABLE
from notify import metrics
from notify.deliveries import Delivery, Webhook, plan
from notify.settings import NotifySettings
from schemas import codec
from schemas.errors import SchemaError
from schemas.events import FacesRecognized, ImageFailed
from schemas.topics import RESULTS

log = logging.getLogger(__name__)

#: Writing a result's deliveries failed for a reason that passes: wait and try again.
_RETRIED: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)


def consumer_config(settings: NotifySettings) -> dict[str, Any]:
    return settings.librdkafka(
        **{
            "group.id": settings.notify_group_id,
            "client.id": "facestream-notify",
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


async def deliveries_for(pool: asyncpg.Pool, result: FacesRecognized | ImageFailed) -> list[Delivery]:
    """What :func:`notify.deliveries.plan` makes of ``result``, with the read model's
    camera, names and erasures."""
    hooks = await webhooks(pool)
    if not hooks:
        return []
    camera = await pool.fetchval("SELECT camera FROM images WHERE id = $1::uuid", result.image_id)
    people = (
        sorted({f.person_id for f in result.faces if f.person_id})
        if isinstance(result, FacesRecognized)
        else []
    )
    names: dict[str, str] = {}
    erased: set[str] = set()
    if people:
        rows = await pool.fetch("SELECT id, name FROM people WHERE id = ANY($1::uuid[])", people)
        names = {str(r["id"]): r["name"] for r in rows}
        rows = await pool.fetch("SELECT id FROM erased_people WHERE id = ANY($1::uuid[])", people)
        erased = {str(r["id"]) for r in rows}
    return plan(result, hooks, camera=camera, names=names, erased=erased)


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


class ResultsConsumer:
    def __init__(self, pool: asyncpg.Pool, settings: NotifySettings) -> None:
        self.pool = pool
        self.settings = settings
        self.consumer = Consumer(consumer_config(settings))
        self.assigned = False

    def _on_assign(self, _consumer: Consumer, partitions: list[Any]) -> None:
        self.assigned = True

    async def run(self, stopping: asyncio.Event) -> None:
        """Read, plan, store, store the offset, until ``stopping``; then commit and leave."""
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

    async def handle(self, msg: Message, stopping: asyncio.Event) -> None:
        try:
            env = codec.decode(msg.value())
        except SchemaError as exc:
            log.info("passing over a message on images.results (%s)", exc)
            metrics.RESULTS.labels("skipped").inc()
            self.consumer.store_offsets(message=msg)
            return
        if not isinstance(env.data, FacesRecognized | ImageFailed):
            metrics.RESULTS.labels("skipped").inc()
            self.consumer.store_offsets(message=msg)
            return
        delay = 0.5
        while True:
            try:
                await store(self.pool, await deliveries_for(self.pool, env.data))
                break
            except _RETRIED as exc:
                if stopping.is_set():
                    return  # not stored: the group reads it again
                log.warning("could not write the deliveries of %s (%s); trying again", env.data.image_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        metrics.RESULTS.labels("planned").inc()
        self.consumer.store_offsets(message=msg)
