"""The stream worker's composition root: Faust wiring around :mod:`stream.handlers`.

::

    ingest --> images.submitted --(recognizers)--> images.results ----------.
                     |                 |                                    |
                     |                 `--> images.failures --on_failure--+--> retries (table)
                     |                                   |                |      | when due
                     |                                   `--> dead letter |      v
                     |                                        + ImageFailed   images.recognize
                     |                                                    |   (recognizers)
                     `--on_submitted-->  PostgreSQL  <--on_result---------'
                         gallery --on_gallery--^

Each agent turns a message into a plan with a pure handler and carries it out through
:func:`stream.delivery.settle`, which commits nothing whose effect is not durable (see
:mod:`stream.delivery`). Timers send due retries, re-dispatch images pending too long
(:mod:`stream.reconciler`), drop expired image bytes and export consumer lag.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
from faust import web as faust_web

from common import erasure
from common.errors import BrokerUnavailable
from common.publisher import Publisher
from schemas import codec, topics
from stream import gallery_purge, handlers, metrics, reconciler, retries
from stream.database import Database
from stream.delivery import Executor, incoming, settle
from stream.effects import Incoming, Plan
from stream.settings import StreamSettings

log = logging.getLogger(__name__)
SOURCE = "stream"
#: Seconds between two reads of the consumer lag (a few admin requests to the broker).
LAG_INTERVAL_S = 15.0

AgentFun = Callable[[faust.StreamT[bytes]], Coroutine[Any, Any, None]]
Handler = Callable[[Incoming], Plan]


@dataclass
class Worker:
    """What the agents, timers and pages share."""

    settings: StreamSettings
    db: Database
    publisher: Publisher
    executor: Executor
    lag: metrics.ConsumerLagExporter
    crashed: set[str]


def create_app(settings: StreamSettings) -> faust.App:
    """Build the Faust app: agents, timers and pages. Nothing connects until it starts."""
    app = faust.App(settings.stream_app_id, **faust_settings(settings))
    db = Database(settings.database_url.get_secret_value())
    publisher = Publisher.connect(settings.librdkafka(), source=SOURCE, delivery_timeout_ms=15_000)
    lag = metrics.ConsumerLagExporter(
        settings.librdkafka(),
        {
            settings.stream_app_id: metrics.STREAM_INPUTS,
            settings.recognizer_group_id: topics.RECOGNIZER_INPUTS,
        },
        watched=[t.name for t in topics.TOPICS],
    )
    w = Worker(
        settings,
        db,
        publisher,
        Executor(db, publisher, max_attempts=settings.handler_max_attempts),
        lag,
        set(),
    )
    policy = handlers.RetryPolicy(
        settings.retry_max_attempts, settings.retry_base_delay_s, settings.retry_max_delay_s
    )
    consume(
        app,
        w,
        topics.SUBMITTED,
        "project_submitted",
        partial(handlers.on_submitted, keep_bytes=settings.keep_image_bytes),
    )
    consume(
        app,
        w,
        topics.FAILURES,
        "handle_failures",
        lambda m: handlers.on_failure(m, datetime.now(UTC), policy),
    )
    consume(app, w, topics.RETRY, "legacy_retries", handlers.on_legacy_retry)
    consume(app, w, topics.RESULTS, "project_results", lambda m: handlers.on_result(m, datetime.now(UTC)))
    consume(app, w, topics.GALLERY, "project_gallery", handlers.on_gallery)
    add_timers(app, w)
    add_pages(app, w)

    return app


def faust_settings(settings: StreamSettings) -> dict[str, Any]:
    return {
        "broker": [f"kafka://{h.strip()}" for h in settings.kafka_bootstrap_servers.split(",")],
        "broker_credentials": broker_credentials(settings),
        "store": "memory://",
        "web_host": settings.stream_web_host,
        "web_port": settings.stream_web_port,
        "web_in_thread": False,
        "consumer_auto_offset_reset": "earliest",
        "consumer_max_fetch_size": 16 * 1024 * 1024,
        "broker_commit_interval": 1.0,
        "topic_allow_declare": False,  # topics are created by common.kafka.ensure_topics
        "topic_disable_leader": True,
        # Shutdown does not wait for queued events: their offsets are not committed, so
        # they are redone after the restart. The event in progress gets drain_s to finish
        # (stream.delivery.settle) and is otherwise left uncommitted too.
        "stream_wait_empty": False,
    }


def consume(app: faust.App, w: Worker, topic: str, name: str, handler: Handler) -> None:
    """An agent that carries out ``handler``'s plan for every message of ``topic``."""
    channel = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    async def agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            msg = incoming(event)
            await settle(event, partial(w.executor.handle, handler, msg), w.settings.stream_drain_s)

    agent.__name__ = agent.__qualname__ = name
    app.agent(channel, name=name)(note_crashes(agent, w.crashed))


def add_timers(app: faust.App, w: Worker) -> None:
    s = w.settings

    @app.timer(interval=s.retry_poll_s)  # type: ignore[untyped-decorator]
    async def send_due_retries() -> None:
        """Send the retries that are due to the recognizers (stream.retries)."""
        await guarded("send_due_retries", w.db.run(partial(retries.release_due, send=partial(send_retry, w))))

    @app.timer(interval=s.retry_poll_s)  # type: ignore[untyped-decorator]
    async def purge_gallery_keys() -> None:
        """Tombstone gallery keys that outlived an erasure (stream.gallery_purge)."""
        release = partial(gallery_purge.release, send=partial(send_tombstone, w))
        await guarded("purge_gallery_keys", w.db.run(release))

    @app.timer(interval=s.reconcile_interval_s)  # type: ignore[untyped-decorator]
    async def reconcile() -> None:
        """Re-dispatch images pending too long (stream.reconciler)."""
        await guarded("reconcile", reconcile_once(w))

    @app.timer(interval=3600.0)  # type: ignore[untyped-decorator]
    async def expire_image_bytes() -> None:
        """Enforce the retention of stored image bytes (re-runs need them, nothing else)."""
        expire = partial(erasure.expire_image_bytes, retention_days=s.image_bytes_retention_days)
        await guarded("expire_image_bytes", w.db.run(expire))

    @app.timer(interval=LAG_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def export_consumer_lag() -> None:
        """Consumer lag per group and partition (metrics.ConsumerLagExporter), off the loop."""
        await asyncio.to_thread(w.lag.update)

    @app.task  # type: ignore[untyped-decorator]
    async def open_database() -> None:
        """Connect early so readiness reflects the database before the first event."""
        await w.db.run(lambda c: c.fetchval("SELECT 1"))


async def guarded(name: str, work: Coroutine[Any, Any, object]) -> None:
    """Run a timer's work; whatever stops it (a broker that does not answer) postpones it
    to the next tick."""
    try:
        await work
    except BrokerUnavailable as exc:
        log.warning("%s postponed: %s", name, exc)
    except Exception:  # a timer must tick again: log, count, carry on
        metrics.HANDLER_ERRORS.labels(name).inc()
        log.exception("%s failed; trying again at the next tick", name)


async def send_retry(w: Worker, image_id: str, request: bytes) -> None:
    await w.publisher.publish(topics.RECOGNIZE, request, image_id)
    metrics.DISPATCHED.labels("retry").inc()


async def send_tombstone(w: Worker, key: str) -> None:
    await w.publisher.publish(topics.GALLERY, None, key)
    metrics.GALLERY_KEYS_PURGED.inc()


async def reconcile_once(w: Worker) -> None:
    """One pass of the reconciler; see :mod:`stream.reconciler`."""
    s = w.settings
    now = datetime.now(UTC)
    metrics.PENDING_OLDEST.set(await w.db.run(partial(reconciler.oldest_pending_age_s, now=now)))
    metrics.RETRIES_WAITING.set(await w.db.run(retries.waiting))
    committed = {
        p: offset
        for (group, topic, p), offset in w.lag.committed.items()
        if group == s.recognizer_group_id and topic == topics.SUBMITTED
    }
    if not committed:
        return  # no fresh commit offsets (broker down, or none read yet): decide nothing
    rows = await w.db.run(partial(reconciler.candidates, older_than_s=s.reconcile_after_s, limit=100))
    for row in rows:
        if not reconciler.past_the_recognizers(row, committed):
            continue
        image = reconciler.resubmission(row)
        value = codec.encode_data(image, source=SOURCE, trace_id=row["trace_id"])
        await w.publisher.publish(topics.SUBMITTED, value, image.image_id)
        await w.db.run(partial(reconciler.mark_redispatched, image_id=image.image_id))
        metrics.REDISPATCHED.inc()
        metrics.DISPATCHED.labels("reconciled").inc()
        log.warning(
            "image %s was pending for over %.0fs; re-dispatched it", image.image_id, s.reconcile_after_s
        )


def add_pages(app: faust.App, w: Worker) -> None:
    @app.page("/healthz")
    async def healthz(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
        # Liveness: an agent that stopped on an unexpected error never resumes by itself
        # (its last event stays unacknowledged and commits stall), so a restart is due.
        if w.crashed:
            return self.json({"status": "agent crashed", "agents": sorted(w.crashed)}, status=503)
        return self.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
        consumer = app.consumer
        assigned = bool(consumer.assignment()) if consumer is not None else False
        ok = app.rebalancing is False and assigned and w.db.available and not w.crashed
        checks = {"assigned": assigned, "database": w.db.available, "agents": not w.crashed}
        return self.json({"ready": ok, "checks": checks}, status=200 if ok else 503)

    @app.page("/metrics")
    async def prometheus(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


def note_crashes(fun: AgentFun, crashed: set[str]) -> AgentFun:
    """Wrap an agent so that an unexpected error adds its name to ``crashed`` (and is re-raised).

    Handlers never raise for a failure they know (stream.delivery); one that escapes is a
    bug. Its event was left uncommitted; the worker's /healthz now fails, so it is
    restarted and redoes that event.
    """

    @functools.wraps(fun)
    async def agent(stream: faust.StreamT[bytes]) -> None:
        try:
            await fun(stream)
        except asyncio.CancelledError:
            raise
        except Exception:
            crashed.add(fun.__name__)
            metrics.AGENT_CRASHES.labels(fun.__name__).inc()
            log.exception("agent %s stopped on an unexpected error; the worker is unhealthy", fun.__name__)
            raise

    return agent


def broker_credentials(settings: StreamSettings) -> Any:
    """Faust's broker credentials from the same settings the librdkafka clients use."""
    protocol = settings.kafka_security_protocol
    context = (
        ssl.create_default_context(cafile=settings.kafka_ssl_ca_location)
        if protocol in ("SSL", "SASL_SSL")
        else None
    )
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
