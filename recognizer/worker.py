"""One recognizer process: the Kafka adapter around :func:`recognizer.core.recognize`.

Delivery contract (at-least-once, idempotent effects):
- A request's offset is stored for commit only after its outcome, and the outcome of
  every earlier request of its partition, has been acknowledged by the broker, so a
  process killed mid-image commits nothing for it and the image is redone by whichever
  process gets its partition next. (The acknowledgement is not waited for: the next
  image is recognized meanwhile.)
- Outcomes are keyed by image id and are deterministic for the same image, run and
  gallery, so a redone image produces the same result (the projector upserts).
- A failed delivery is fatal for the process: it exits without committing and the
  supervisor starts a fresh one.

The gallery is read from the compacted ``gallery`` topic from offset 0 (so a new replica
needs nothing but the broker) and then tailed between images.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from base64 import b64decode
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from common.kafka import producer_config, watermarks
from recognizer import metrics
from recognizer.core import DetectionConfig, Recognition, recognize
from recognizer.errors import ImageRejected
from recognizer.gallery import Gallery
from recognizer.settings import RecognizerSettings
from schemas import codec, topics
from schemas import events as ev
from schemas.codec import UnknownEvent
from schemas.envelope import Envelope
from schemas.errors import SchemaError

log = logging.getLogger(__name__)
SOURCE = "recognizer"


class FatalDeliveryError(RuntimeError):
    """An outcome could not be delivered: the process stops without committing."""


def _release_free_memory() -> None:
    """Hand the heap memory freed after loading (fetch buffers, decoded records) back to
    the system, so that a replica's resident memory is its gallery's (glibc only)."""
    with contextlib.suppress(OSError, AttributeError):  # another C library keeps what it keeps
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class GalleryFeed:
    """Keeps a :class:`Gallery` in step with the compacted gallery topic."""

    def __init__(self, conf: dict[str, Any], gallery: Gallery) -> None:
        self.gallery = gallery
        self._consumer = Consumer(
            {
                **conf,
                "group.id": "facestream-gallery-reader",  # never commits; assign() only
                "enable.auto.commit": False,
                # Long polls: the broker answers as soon as an event arrives, and an idle
                # gallery costs it one fetch per 0.5 s instead of one per few ms.
                "fetch.wait.max.ms": 500,
                # Loading reads the whole topic (about 3 KB per face): a bounded prefetch
                # (the memory is the gallery's), refilled as soon as it has room: by
                # default a full queue pauses fetching for 1 s, which made a 200k-face
                # load 6x slower (58 s, not 10 s).
                "fetch.max.bytes": 8 * 1024 * 1024,
                "max.partition.fetch.bytes": 4 * 1024 * 1024,
                "queued.max.messages.kbytes": 16 * 1024,
                "fetch.queue.backoff.ms": 10,
            }
        )
        self._tp = TopicPartition(topics.GALLERY, 0, OFFSET_BEGINNING)
        self._consumer.assign([self._tp])

    def load(self, timeout: float = 120.0) -> None:
        """Apply every gallery event up to the current end of the topic, then build the
        gallery's search index (so the first image does not wait for it)."""
        deadline = time.monotonic() + timeout
        _, high = watermarks(self._consumer, TopicPartition(topics.GALLERY, 0), timeout)
        while self.gallery.version < high:
            if time.monotonic() > deadline:
                raise TimeoutError(f"gallery not loaded within {timeout}s ({self.gallery.version}/{high})")
            # In batches: one call per message costs more than decoding a small one.
            for msg in self._consumer.consume(1000, 0.5):
                self._apply(msg)
        self.gallery.prepare()
        _release_free_memory()
        self._report()

    def apply_pending(self, budget: int = 10_000) -> int:
        """Apply gallery events already fetched, without waiting. Returns how many."""
        applied = 0
        while applied < budget:
            msg = self._consumer.poll(0)
            if msg is None:
                break
            self._apply(msg)
            applied += 1
        if applied:
            self._report()
        return applied

    def _apply(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("gallery read error: %s", err)
            return
        self.gallery.version = (msg.offset() or 0) + 1
        value = msg.value()
        # Most records: checked without building the models (loading 1M faces is mostly this).
        fast = codec.gallery_event(value)
        if isinstance(fast, codec.GalleryFace):
            self.gallery.add_face(fast.person_id, fast.face_id, fast.encoding)
            return
        if isinstance(fast, codec.GalleryPerson):
            self.gallery.set_person(fast.person_id, fast.name)
            return
        key = (msg.key() or b"").decode("utf-8", "replace")
        if value is None:  # tombstone: erase the person or the face
            kind, _, rest = key.partition(":")
            if kind == "person":
                self.gallery.remove_person(rest)
            elif kind == "face":
                self.gallery.remove_face(rest.partition(":")[2])
            return
        try:
            env = codec.decode(value)
        except SchemaError as exc:
            log.warning("skipping gallery record %s@%d: %s", key, msg.offset(), exc)
            return
        data = env.data
        if isinstance(data, ev.PersonEnrolled):
            self.gallery.set_person(data.person_id, data.name)
        elif isinstance(data, ev.FaceEnrolled):
            self.gallery.add_face(data.person_id, data.face_id, data.encoding)

    def _report(self) -> None:
        metrics.GALLERY_SIZE.set(len(self.gallery))
        metrics.GALLERY_VERSION.set(self.gallery.version)

    def close(self) -> None:
        self._consumer.close()


class Worker:
    """Consumes ``images.submitted`` (first attempts) and ``images.recognize`` (retries)
    in the recognizer group; publishes outcomes."""

    def __init__(self, settings: RecognizerSettings, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.rule = settings.rule()
        self.cfg: DetectionConfig = settings.detection()
        conf = settings.librdkafka()
        self.gallery = Gallery(ann_threshold=settings.gallery_ann_threshold)
        self.feed = GalleryFeed(conf, self.gallery)
        self.consumer = Consumer(
            {
                **conf,
                "group.id": settings.recognizer_group_id,
                "client.id": self.name,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,  # stored only once the outcome is acknowledged
                "auto.commit.interval.ms": 1000,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 300_000,
                # Long polls (the default): a new request is delivered at once anyway,
                # while short ones made the idle broker spend a quarter of a core
                # answering empty fetches (measured: 27 % with 2 workers at 20 ms).
                "fetch.wait.max.ms": 500,
                # One image at a time per process: a small prefetch keeps the others
                # available to the rest of the group.
                "queued.max.messages.kbytes": 16_384,
                "fetch.message.max.bytes": 16 * 1024 * 1024,
            }
        )
        self.producer = Producer(producer_config(conf, **{"linger.ms": 0}))
        self._stopping = False
        self._fatal: str | None = None
        #: per (topic, partition): [offset, acknowledged] of outcomes not yet stored, in order
        self._in_flight: dict[tuple[str, int], deque[list[Any]]] = {}

    def stop(self, *_: object) -> None:
        self._stopping = True

    def run(self, on_ready: Callable[[], object] | None = None) -> None:
        """Load the gallery, then process requests until :meth:`stop` (or SIGTERM).

        ``on_ready`` is called once the gallery is loaded and the subscription made.
        """
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.feed.load()
        log.info(
            "%s: gallery loaded (%d faces, version %d)", self.name, len(self.gallery), self.gallery.version
        )
        self.consumer.subscribe(list(topics.RECOGNIZER_INPUTS))
        if on_ready is not None:
            on_ready()
        try:
            while not self._stopping:
                self.feed.apply_pending()
                msg = self.consumer.poll(0.2)
                if msg is None:
                    self.producer.poll(0)
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consume error: %s", err)
                    continue
                self.handle(msg)
                if self._fatal:
                    raise FatalDeliveryError(self._fatal)
        finally:
            # Deliver what is in flight, then commit what was acknowledged: a SIGTERM
            # finishes the current image and hands the rest back to the group.
            self.producer.flush(30)
            self.consumer.close()
            self.feed.close()

    def handle(self, msg: Message) -> None:
        """Process one request message and publish its outcome (see module docstring)."""
        origin = (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        out = process_request(msg.value() or b"", origin, self.gallery, self.rule, self.cfg, self.name)
        if out.topic is None:
            self._pass_over(msg)
        else:
            self._publish(out.topic, msg.key(), out.payload, msg)
        metrics.IMAGES.labels(out.label).inc()
        if out.result is not None:
            metrics.FACES_PER_IMAGE.observe(len(out.result.faces))
            for stage, ms in out.result.timings_ms.items():
                metrics.STAGE_SECONDS.labels(stage).observe(ms / 1000)
            for m in out.result.matches:
                if m.distance is not None:
                    metrics.MATCH_DISTANCE.observe(m.distance)

    def _publish(self, topic: str, key: bytes | None, value: bytes, source_msg: Message) -> None:
        """Produce the outcome of ``source_msg`` without waiting for the acknowledgement.

        The next image is recognized while the broker acknowledges this one (waiting
        would idle the core for a round trip per image). Offsets are stored in order per
        partition: a request's offset only once its outcome *and every earlier one of its
        partition* are acknowledged, so nothing unacknowledged is ever committed.
        """
        tp = (source_msg.topic() or "", source_msg.partition() or 0)
        entry = [source_msg.offset() or 0, False]  # [offset, acknowledged]
        self._in_flight.setdefault(tp, deque()).append(entry)

        def on_delivery(err: KafkaError | None, _m: Message) -> None:
            if err is not None:
                self._fatal = f"delivery to {topic} failed: {err}"
                return
            entry[1] = True
            self._store_acknowledged(tp)

        self.producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        self.producer.poll(0)  # serve acknowledgements that have arrived

    def _pass_over(self, source_msg: Message) -> None:
        """Nothing to publish for ``source_msg``: its offset is stored once every earlier
        outcome of its partition is acknowledged, like any other."""
        tp = (source_msg.topic() or "", source_msg.partition() or 0)
        self._in_flight.setdefault(tp, deque()).append([source_msg.offset() or 0, True])
        self._store_acknowledged(tp)

    def _store_acknowledged(self, tp: tuple[str, int]) -> None:
        pending = self._in_flight[tp]
        last = None
        while pending and pending[0][1]:
            last = pending.popleft()[0]
        if last is None:
            return
        try:
            self.consumer.store_offsets(offsets=[TopicPartition(tp[0], tp[1], int(last) + 1)])
        except KafkaException as exc:  # partition revoked meanwhile: its new owner redoes it
            log.info("offset not stored for %s: %s", tp, exc)


def _request(value: bytes) -> tuple[Envelope[Any], ev.RecognitionRequested]:
    """A first attempt (ImageSubmitted) or a retry (RecognitionRequested), as a request."""
    env = codec.decode(value)
    if isinstance(env.data, ev.ImageSubmitted):
        return env, ev.RecognitionRequested(image=env.data, attempt=1)
    if isinstance(env.data, ev.RecognitionRequested):
        return env, env.data
    raise SchemaError(f"expected an image to recognize, got {env.type}")


@dataclass(frozen=True)
class Processed:
    """What one request message turns into: the event to publish, and where (``topic``
    None: nothing to publish, the message is passed over)."""

    topic: str | None
    payload: bytes
    label: str  # the outcome, or "failed" / "error", for the metrics
    result: Recognition | None = None


def process_request(
    value: bytes,
    origin: tuple[str, int, int],
    gallery: Gallery,
    rule: ev.MatchRule,
    cfg: DetectionConfig,
    worker: str,
) -> Processed:
    """Turn one ``images.submitted`` or ``images.recognize`` message into its outcome
    event; no I/O.

    ``origin`` is the message's (topic, partition, offset), quoted by a dead letter.
    FacesRecognized goes to ``images.results``; RecognitionFailed (retryable or not) to
    ``images.failures``. A message that is not a valid request is dead-lettered when it
    came on ``images.recognize``; on ``images.submitted`` the stream worker dead-letters
    it, so it is only passed over here, like an event type or version this code does not
    know (a newer producer's).
    """
    try:
        env, request = _request(value)
    except SchemaError as exc:
        if isinstance(exc, UnknownEvent) or origin[0] == topics.SUBMITTED:
            return Processed(None, b"", "skipped")
        dead = ev.ImageDeadLettered(
            reason=ev.FailureReason.INVALID_EVENT,
            detail=str(exc),
            topic=origin[0],
            partition=origin[1],
            offset=origin[2],
            raw=value[:65536].decode("utf-8", "replace"),
        )
        return Processed(topics.DEAD_LETTER, codec.encode_data(dead, source=SOURCE), "failed")
    image = request.image

    def fail(reason: ev.FailureReason, detail: str, retryable: bool) -> Processed:
        failed = ev.RecognitionFailed(
            image_id=image.image_id,
            run=image.run,
            attempt=request.attempt,
            reason=reason,
            detail=detail,
            retryable=retryable,
            worker=worker,
            request=request,
        )
        payload = codec.encode_data(failed, source=SOURCE, trace_id=env.trace_id)
        return Processed(topics.FAILURES, payload, "error" if retryable else "failed")

    try:
        data = b64decode(image.image_b64, validate=True)
        result = recognize(data, gallery, rule, cfg)
    except ImageRejected as exc:
        return fail(exc.reason, exc.detail, retryable=False)
    except (ValueError, TypeError) as exc:  # invalid base64
        return fail(ev.FailureReason.CORRUPT_IMAGE, f"bad image_b64: {exc}", retryable=False)
    except Exception as exc:
        log.exception("recognition of %s failed", image.image_id)
        return fail(ev.FailureReason.INTERNAL_ERROR, repr(exc)[:500], retryable=True)
    faces = [
        ev.FaceMatch(
            index=i,
            box=f.box,
            person_id=m.person_id,
            person_name=m.person_name,
            distance=m.distance,
            second_distance=m.second_distance,
        )
        for i, (f, m) in enumerate(zip(result.faces, result.matches, strict=True))
    ]
    out = ev.FacesRecognized(
        image_id=image.image_id,
        run=image.run,
        attempt=request.attempt,
        outcome=result.outcome,
        faces=faces,
        width=result.width,
        height=result.height,
        model=cfg.model_info(),
        rule=rule,
        gallery_version=gallery.version,
        gallery_size=len(gallery),
        timings_ms={k: round(v, 2) for k, v in result.timings_ms.items()},
        worker=worker,
        submitted_at=image.submitted_at,
        recognized_at=datetime.now(UTC),
    )
    payload = codec.encode_data(out, source=SOURCE, trace_id=env.trace_id)
    return Processed(topics.RESULTS, payload, result.outcome.value, result)
