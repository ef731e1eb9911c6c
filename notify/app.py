"""notify's composition root: :func:`create_app` wires the settings, the database pool,
the results consumer and the sender, behind an ops-only HTTP app (``/healthz``,
``/readyz``, ``/metrics``).

Nothing connects at import time. The lifespan checks the schema (common.db.require_schema),
creates the topics if missing, then runs two tasks: :class:`notify.consumer.ResultsConsumer`
(images.results -> webhook_deliveries) and :class:`notify.sender.Sender` (due deliveries
-> HTTP). On SIGTERM uvicorn ends the lifespan: both stop, the consumer commits what it
stored, and requests in flight get NOTIFY_DRAIN_S to finish (inside a pod's 30 s grace
period); anything cut short is sent again after its lease (at least once).
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
from notify.consumer import ResultsConsumer
from notify.sender import Resolver, Sender, resolve
from notify.settings import NotifySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    """What one running app holds; made and closed by its lifespan."""

    pool: asyncpg.Pool
    consumer: ResultsConsumer
    sender: Sender
    tasks: list[asyncio.Task[None]]


def create_app(settings: NotifySettings, resolver: Resolver = resolve) -> FastAPI:
    """Build the app; ``resolver`` (host, port -> addresses) is DNS unless a test swaps it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await asyncio.to_thread(ensure_topics, settings.librdkafka())
            pool = await create_pool(settings.database_url.get_secret_value(), max_size=10)
            stack.push_async_callback(pool.close)
            stopping = asyncio.Event()
            consumer = ResultsConsumer(pool, settings)
            sender = Sender(pool, settings, resolver)
            tasks = [
                asyncio.create_task(consumer.run(stopping), name="notify-consumer"),
                asyncio.create_task(sender.run(stopping), name="notify-sender"),
            ]

            async def stop() -> None:
                stopping.set()
                await asyncio.gather(*tasks, return_exceptions=True)

            stack.push_async_callback(stop)
            app.state.running = Running(pool, consumer, sender, tasks)
            log.info("notify ready on %s:%s", settings.notify_host, settings.notify_port)
            yield

    async def readiness() -> dict[str, bool]:
        running: Running = app.state.running
        return {
            "database": await database_answers(running.pool),
            "consumer": running.consumer.assigned and not running.tasks[0].done(),
            "sender": not running.tasks[1].done(),
        }

    # httpx logs every request at INFO: the deliveries' own log lines say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = FastAPI(title="facestream notify", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(ops_router(readiness))
    instrument(app, "notify")
    return app
