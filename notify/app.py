"""notify's composition root: :func:`create_app` wires the settings, the database pool,
the results consumers, the sender and the MQTT link, behind an ops-only HTTP app
(``/healthz``, ``/readyz``, ``/metrics``).

Nothing connects at import time. The lifespan checks the schema (common.db.require_schema),
creates the topics if missing, then runs two tasks: a :class:`notify.consumer.ResultsConsumer`
(images.results -> webhook_deliveries) and :class:`notify.sender.Sender` (due deliveries
-> HTTP). With ``MQTT_URL`` two more: a second ResultsConsumer in a group of its own
(``MQTT_GROUP_ID``: webhooks and MQTT never wait for each other) feeding
:class:`notify.mqtt_consumer.MqttPublisher`, and its :class:`notify.mqtt_link.MqttLink`.
On SIGTERM uvicorn ends the lifespan: all stop, the consumers commit what they stored,
and requests in flight get NOTIFY_DRAIN_S to finish (inside a pod's 30 s grace period);
anything cut short is sent again after its lease, or read again (at least once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI

from common.db import create_pool, database_answers
from common.http import instrument, ops_router
from common.kafka import ensure_topics
from notify import metrics
from notify.consumer import ResultsConsumer, write_deliveries
from notify.mqtt_consumer import RETRIED as MQTT_RETRIED
from notify.mqtt_consumer import MqttPublisher
from notify.sender import Resolver, Sender, resolve
from notify.settings import NotifySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    """What one running app holds; made and closed by its lifespan."""

    pool: asyncpg.Pool
    consumer: ResultsConsumer
    sender: Sender
    tasks: dict[str, asyncio.Task[None]]
    mqtt: MqttPublisher | None = None
    mqtt_consumer: ResultsConsumer | None = None


def create_app(settings: NotifySettings, resolver: Resolver = resolve) -> FastAPI:
    """Build the app; ``resolver`` (host, port -> addresses) is DNS unless a test swaps it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await asyncio.to_thread(ensure_topics, settings.librdkafka())
            pool = await create_pool(settings.database_url.get_secret_value(), max_size=10)
            stack.push_async_callback(pool.close)
            stopping = asyncio.Event()
            consumer = ResultsConsumer(
                settings,
                write_deliveries(pool),
                group_id=settings.notify_group_id,
                client_id="facestream-notify",
            )
            sender = Sender(pool, settings, resolver)
            tasks = {
                "consumer": asyncio.create_task(consumer.run(stopping), name="notify-consumer"),
                "sender": asyncio.create_task(sender.run(stopping), name="notify-sender"),
            }
            mqtt, mqtt_consumer = None, None
            if settings.mqtt_url is not None:
                mqtt = MqttPublisher(pool, settings)
                await mqtt.load_cameras()
                mqtt_consumer = ResultsConsumer(
                    settings,
                    mqtt.handle,
                    group_id=settings.mqtt_group_id,
                    client_id="facestream-notify-mqtt",
                    retried=MQTT_RETRIED,
                    results=metrics.MQTT_RESULTS,
                    max_delay_s=settings.mqtt_reconnect_max_s,
                )
                tasks["mqtt_link"] = asyncio.create_task(mqtt.link.run(stopping), name="notify-mqtt-link")
                tasks["mqtt_consumer"] = asyncio.create_task(
                    mqtt_consumer.run(stopping), name="notify-mqtt-consumer"
                )

            async def stop() -> None:
                stopping.set()
                await asyncio.gather(*tasks.values(), return_exceptions=True)

            stack.push_async_callback(stop)
            app.state.running = Running(pool, consumer, sender, tasks, mqtt, mqtt_consumer)
            log.info("notify ready on %s:%s", settings.notify_host, settings.notify_port)
            yield

    async def readiness() -> dict[str, bool]:
        running: Running = app.state.running
        checks = {
            "database": await database_answers(running.pool),
            "consumer": running.consumer.assigned and not running.tasks["consumer"].done(),
            "sender": not running.tasks["sender"].done(),
        }
        if running.mqtt is not None and running.mqtt_consumer is not None:
            checks["mqtt"] = (
                running.mqtt.link.connected.is_set()
                and running.mqtt_consumer.assigned
                and not any(running.tasks[t].done() for t in ("mqtt_link", "mqtt_consumer"))
            )
        return checks

    # httpx logs every request at INFO: the deliveries' own log lines say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = FastAPI(title="facestream notify", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(ops_router(readiness))
    instrument(app, "notify")
    return app
