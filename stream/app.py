"""The stream topology (Faust): dispatch, retries, dead letters and the projector.

::

    images.submitted --dispatch--> images.recognize --(recognizers)--> images.results
                                          ^                    \\
                                          |                     `--> images.failures
                                    images.retry <--failures--'            |
                                                      `--> images.dead-letter + ImageFailed
                                                                           -> images.results
    images.submitted, images.results, gallery --projector--> PostgreSQL

Delivery: every agent awaits the broker's acknowledgement of what it publishes (or the
database's commit) before moving on, and Faust commits a source offset only after the
agent has finished with that event, so a crash redoes work rather than losing it.
Redone work is harmless: outputs are keyed by image id and the projector upserts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import asyncpg
import faust
from faust import web as faust_web
from pydantic import BaseModel

from common import erasure
from common.circuit import CircuitBreaker
from common.db import DATABASE_UNAVAILABLE, create_pool
from schemas import codec, topics
from schemas import events as ev
from schemas.codec import UnknownEvent
from schemas.envelope import Envelope
from schemas.errors import SchemaError
from stream import metrics, projector
from stream.retry import GiveUp, decide
from stream.settings import StreamSettings

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
SOURCE = "stream"
#: Seconds between two reads of the consumer lag (a few admin requests to the broker).
LAG_INTERVAL_S = 15.0


class Database:
    """A lazily opened pool behind a circuit breaker; its users wait while PostgreSQL is down.

    ``run`` never gives up on an unavailable database: after a failure the circuit opens
    and the agent calling it pauses (no calls, no retries burnt) until a probe after a
    growing delay finds the database back. Nothing is dead-lettered because a dependency
    was down.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self.breaker = CircuitBreaker("postgres", failure_threshold=1, base_delay=0.2, max_delay=15.0)
        self.available = False

    async def run(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        while True:
            if not self.breaker.allow():
                await asyncio.sleep(self.breaker.retry_in())
                continue
            try:
                pool = await self._get()
                async with pool.acquire(timeout=10) as conn:
                    result = await fn(conn)
            except DATABASE_UNAVAILABLE as exc:
                self.available = False
                self.breaker.record_failure()
                metrics.PROJECTOR_DB_ERRORS.inc()
                log.warning("database unavailable (%s); next try in %.1fs", exc, self.breaker.retry_in())
                continue
            self.available = True
            self.breaker.record_success()
            return result

    async def _get(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(self._dsn, min_size=1, max_size=8)
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


def create_app(settings: StreamSettings) -> faust.App:
    """Build the Faust app and its agents. Nothing connects until the worker starts."""
    app = faust.App(
        settings.stream_app_id,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        web_host=settings.stream_web_host,
        web_port=settings.stream_web_port,
        web_in_thread=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=16 * 1024 * 1024,
        consumer_max_fetch_size=16 * 1024 * 1024,
        broker_commit_interval=1.0,
        topic_allow_declare=False,  # topics are created by common.kafka.ensure_topics
        topic_disable_leader=True,
        # On shutdown do not wait for events still queued for an agent: Faust can wait
        # forever for an event fanned out to two agents on one topic. Their offsets are
        # not committed, so they are redone after the restart (effects are idempotent).
        stream_wait_empty=False,
    )
    db = Database(settings.database_url.get_secret_value())
    crashed: set[str] = set()

    def watched(fun: AgentFun) -> AgentFun:
        return note_crashes(fun, crashed)

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    submitted, recognize, failures, retry, results, dead, gallery = (
        raw_topic(n)
        for n in (
            topics.SUBMITTED,
            topics.RECOGNIZE,
            topics.FAILURES,
            topics.RETRY,
            topics.RESULTS,
            topics.DEAD_LETTER,
            topics.GALLERY,
        )
    )

    async def publish(topic: faust.TopicT, key: bytes | str | None, value: bytes) -> None:
        """Send now and wait for the broker's acknowledgement."""
        k = key.encode() if isinstance(key, str) else key
        fut = await topic.send(key=k, value=value, force=True)
        await fut

    async def dead_letter(
        reason: ev.FailureReason,
        detail: str,
        event: faust.EventT[bytes] | None,
        request: ev.RecognitionRequested | None = None,
        trace_id: str | None = None,
    ) -> None:
        msg = event.message if event is not None else None
        raw = event.value if event is not None else None
        parked = ev.ImageDeadLettered(
            reason=reason,
            detail=detail[:2000],
            topic=msg.topic if msg else "",
            partition=msg.partition if msg else None,
            offset=msg.offset if msg else None,
            request=request,
            raw=None if request is not None or raw is None else bytes(raw)[:65536].decode("utf-8", "replace"),
        )
        key = request.image.image_id if request else (event.key if event is not None else None)
        await publish(dead, key, codec.encode_data(parked, source=SOURCE, trace_id=trace_id))
        metrics.DEAD_LETTERS.labels(reason.value).inc()

    async def parse(event: faust.EventT[bytes], model: type[M]) -> tuple[Envelope[Any], M] | None:
        """Decode ``event`` as ``model``; None for an event to pass over.

        An unknown type or version is skipped (a newer producer's event: not ours to
        judge); anything else invalid is dead-lettered with the reason (poison).
        """
        try:
            return codec.decode_as(event.value, model)
        except UnknownEvent as exc:
            metrics.SKIPPED.labels(event.message.topic).inc()
            log.info("skipping unknown event on %s: %s", event.message.topic, exc)
        except SchemaError as exc:
            await dead_letter(ev.FailureReason.INVALID_EVENT, str(exc), event)
        return None

    @app.agent(submitted)
    @watched
    async def dispatch(stream: faust.StreamT[bytes]) -> None:
        """Validate each submitted image and hand it to the recognizers."""
        async for event in stream.events():
            if (parsed := await parse(event, ev.ImageSubmitted)) is None:
                continue
            env, image = parsed
            request = ev.RecognitionRequested(image=image, attempt=1)
            await publish(
                recognize, image.image_id, codec.encode_data(request, source=SOURCE, trace_id=env.trace_id)
            )
            metrics.DISPATCHED.labels("new" if image.run == 0 else "rerun").inc()

    @app.agent(failures)
    @watched
    async def handle_failures(stream: faust.StreamT[bytes]) -> None:
        """Retry transient failures with backoff; finish the rest as failed + dead-lettered."""
        async for event in stream.events():
            if (failed := await parse(event, ev.RecognitionFailed)) is None:
                continue
            env, failure = failed
            now = datetime.now(UTC)
            decision = decide(
                failure,
                now,
                settings.retry_max_attempts,
                settings.retry_base_delay_s,
                settings.retry_max_delay_s,
            )
            if isinstance(decision, GiveUp) or failure.request is None:
                reason = failure.reason
                if failure.retryable:
                    reason = ev.FailureReason.RETRIES_EXHAUSTED
                detail = failure.detail if not failure.retryable else f"{failure.detail} ({decision})"
                await dead_letter(reason, detail, event, failure.request, env.trace_id)
                final = ev.ImageFailed(
                    image_id=failure.image_id,
                    run=failure.run,
                    attempts=failure.attempt,
                    reason=reason,
                    detail=detail,
                    failed_at=now,
                )
                await publish(
                    results, failure.image_id, codec.encode_data(final, source=SOURCE, trace_id=env.trace_id)
                )
                continue
            again = failure.request.model_copy(
                update={
                    "attempt": decision.attempt,
                    "not_before": decision.not_before,
                    "last_error": failure.detail,
                }
            )
            await publish(
                retry, failure.image_id, codec.encode_data(again, source=SOURCE, trace_id=env.trace_id)
            )
            metrics.RETRIES.inc()

    @app.agent(retry)
    @watched
    async def delayed_retry(stream: faust.StreamT[bytes]) -> None:
        """Hold each retry until its ``not_before``, then send it back to the recognizers."""
        async for event in stream.events():
            if (parsed_request := await parse(event, ev.RecognitionRequested)) is None:
                continue
            env, request = parsed_request
            if request.not_before is not None:
                wait = (request.not_before - datetime.now(UTC)).total_seconds()
                if wait > 0:
                    await asyncio.sleep(wait)
            await publish(
                recognize,
                request.image.image_id,
                codec.encode_data(request, source=SOURCE, trace_id=env.trace_id),
            )
            metrics.DISPATCHED.labels("retry").inc()

    async def project(event: faust.EventT[bytes], fn: Callable[[Any], Awaitable[Any]], etype: str) -> None:
        start = asyncio.get_running_loop().time()
        try:
            await db.run(fn)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            # The event is valid JSON but cannot be stored (say, an id that is no UUID):
            # park it with the reason instead of blocking the partition.
            await dead_letter(ev.FailureReason.INVALID_EVENT, f"not storable: {exc}", event)
            return
        metrics.PROJECTOR_WRITE_SECONDS.observe(asyncio.get_running_loop().time() - start)
        metrics.PROJECTED.labels(etype).inc()

    @app.agent(submitted)
    @watched
    async def project_submitted(stream: faust.StreamT[bytes]) -> None:
        """Every submitted image becomes a pending row (with its bytes, for re-runs)."""
        async for event in stream.events():
            try:
                env, image = codec.decode_as(event.value, ev.ImageSubmitted)
            except SchemaError:
                continue  # dispatch dead-letters it (or skips an unknown type)
            await project(
                event,
                partial(
                    projector.image_submitted,
                    e=image,
                    trace_id=env.trace_id,
                    keep_bytes=settings.keep_image_bytes,
                ),
                "image_submitted",
            )

    @app.agent(results)
    @watched
    async def project_results(stream: faust.StreamT[bytes]) -> None:
        """Final statuses and faces."""
        async for event in stream.events():
            try:
                env = codec.decode(event.value)
            except UnknownEvent:
                metrics.SKIPPED.labels(topics.RESULTS).inc()
                continue
            except SchemaError as exc:
                await dead_letter(ev.FailureReason.INVALID_EVENT, str(exc), event)
                continue
            data = env.data
            now = datetime.now(UTC)
            if isinstance(data, ev.FacesRecognized):
                await project(
                    event, partial(projector.faces_recognized, e=data, finished_at=now), "faces_recognized"
                )
                status = "processed" if data.outcome == ev.Outcome.IDENTIFIED else "unresolved"
                started = data.submitted_at
            elif isinstance(data, ev.ImageFailed):
                await project(event, partial(projector.image_failed, e=data), "image_failed")
                status, started = "failed", None
            else:
                metrics.SKIPPED.labels(topics.RESULTS).inc()
                continue
            metrics.IMAGES_FINISHED.labels(status).inc()
            if started is not None:
                metrics.END_TO_END_SECONDS.observe(max(0.0, (datetime.now(UTC) - started).total_seconds()))

    @app.agent(gallery)
    @watched
    async def project_gallery(stream: faust.StreamT[bytes]) -> None:
        """People and their enrolled faces (tombstones erase them)."""
        async for event in stream.events():
            key = (event.key or b"").decode("utf-8", "replace")
            if event.value is None:
                await project(event, partial(projector.gallery_tombstone, key=key), "gallery_tombstone")
                continue
            try:
                data = codec.decode(event.value).data
            except SchemaError:
                metrics.SKIPPED.labels(topics.GALLERY).inc()
                continue
            if isinstance(data, ev.PersonEnrolled):
                await project(event, partial(projector.person_enrolled, e=data), "person_enrolled")
            elif isinstance(data, ev.FaceEnrolled):
                await project(event, partial(projector.face_enrolled, e=data), "face_enrolled")

    @app.page("/healthz")
    async def healthz(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
        # Liveness: an agent that stopped on an unexpected error never resumes by itself
        # (its last event stays unacknowledged and commits stall), so a restart is due.
        if crashed:
            return self.json({"status": "agent crashed", "agents": sorted(crashed)}, status=503)
        return self.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
        consumer = app.consumer
        assigned = bool(consumer.assignment()) if consumer is not None else False
        ok = app.rebalancing is False and assigned and db.available and not crashed
        checks = {"assigned": assigned, "database": db.available, "agents": not crashed}
        return self.json(
            {"ready": ok, "checks": checks},
            status=200 if ok else 503,
        )

    @app.page("/metrics")
    async def prometheus(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.timer(interval=3600.0)  # type: ignore[untyped-decorator]
    async def expire_image_bytes() -> None:
        """Enforce the retention of stored image bytes (re-runs need them, nothing else)."""
        dropped = await db.run(
            partial(erasure.expire_image_bytes, retention_days=settings.image_bytes_retention_days)
        )
        if dropped:
            log.info("dropped the stored bytes of %d images past their retention", dropped)

    lag = metrics.ConsumerLagExporter(
        settings.librdkafka(),
        {settings.stream_app_id: metrics.STREAM_INPUTS, settings.recognizer_group_id: (topics.RECOGNIZE,)},
        watched=[t.name for t in topics.TOPICS],
    )

    @app.timer(interval=LAG_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def export_consumer_lag() -> None:
        """Consumer lag per group and partition (metrics.ConsumerLagExporter), off the loop."""
        await asyncio.to_thread(lag.update)

    @app.task  # type: ignore[untyped-decorator]
    async def open_database() -> None:
        """Connect early so readiness reflects the database before the first event."""
        await db.run(lambda c: c.fetchval("SELECT 1"))

    return app


AgentFun = Callable[[faust.StreamT[bytes]], Coroutine[Any, Any, None]]


def note_crashes(fun: AgentFun, crashed: set[str]) -> AgentFun:
    """Wrap an agent so that an unexpected error adds its name to ``crashed`` (and is re-raised).

    Faust keeps the worker running when an agent raises; the worker's /healthz then
    fails, so it is restarted and redoes the events it had not committed.
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
