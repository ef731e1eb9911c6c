"""One recognizer process: :func:`process_request` around :func:`recognizer.core.recognize`,
served over a pipe to the pool's dispatcher (:mod:`recognizer.dispatch`, which owns the
Kafka consumer and producer and the delivery contract).

Outcomes are keyed by image id and are deterministic for the same image, run and
gallery, so a redone image produces the same result (the projector upserts).

Three kinds of request: an image to recognize (``ImageSubmitted``, or
``RecognitionRequested`` for a retry); a ``RematchRequested``: the stored encodings
of an image's faces, matched again against the gallery without the image (review named
one of them); and a ``FaceScanRequested`` on ``faces.scan``: a photo the API wants a
face of (enrollment, verification, detection), answered on ``faces.scanned``
(:func:`process_scan`). A re-match waits until this process's gallery has applied the gallery
topic as far as the request says (:func:`answer`), so the enrollment behind it is in.

The gallery is read from the compacted ``gallery`` topic from offset 0 (so a new replica
needs nothing but the broker) and then tailed between images.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import time
from binascii import a2b_base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from common.kafka import watermarks
from recognizer import metrics
from recognizer.calibration import RuleSource
from recognizer.core import DetectionConfig, Recognition, recognize
from recognizer.errors import ImageRejected
from recognizer.gallery import Gallery, Match
from recognizer.scan import answer_scan
from recognizer.settings import RecognizerSettings
from schemas import codec, topics
from schemas import encoding as enc
from schemas import events as ev
from schemas.codec import UnknownEvent
from schemas.envelope import Envelope
from schemas.errors import SchemaError

log = logging.getLogger(__name__)
SOURCE = "recognizer"
#: How long a re-match waits for this process's gallery to reach the version it asks for
#: before it matches with the gallery it has (the result says which: ``gallery_version``).
#: Well inside the pod's 90 s termination grace period (deploy/k8s/base/recognizer.yaml),
#: so a SIGTERM during the wait still ends with the re-match answered.
GALLERY_CATCH_UP_S = 30.0


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

    def catch_up(self, version: int, timeout: float = GALLERY_CATCH_UP_S) -> bool:
        """Read the gallery topic until the gallery has applied it up to ``version`` (its
        ``Gallery.version``), or ``timeout`` seconds have passed. Returns whether it got there.

        The events are applied as they come, so it stops soon after ``version``, not at
        the end of the topic. A version the topic never reaches (a request from another
        cluster, a gallery recreated since) costs the whole timeout.
        """
        deadline = time.monotonic() + timeout
        applied = 0
        while self.gallery.version < version:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for msg in self._consumer.consume(1000, min(left, 0.5)):
                self._apply(msg)
                applied += 1
        if applied:
            self._report()
        return self.gallery.version >= version

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


def serve(conn: Connection, ready: Callable[[], object], settings: RecognizerSettings, name: str) -> None:
    """One recognizer process: load the gallery, then answer every request the pool sends.

    Protocol over ``conn`` (a pipe to :class:`recognizer.dispatch.Dispatcher`): it
    receives ``(topic, partition, offset, value)`` and answers ``(topic, payload, label)``
    (:class:`Processed` without its ``result``); ``None`` asks it to stop. The gallery is
    kept in step with its topic between requests. SIGTERM and SIGINT are left to the
    pool's supervisor, which stops its workers once their current image is answered; a
    closed pipe (the supervisor is gone) stops the process too.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gallery = Gallery(ann_threshold=settings.gallery_ann_threshold)
    feed = GalleryFeed(settings.librdkafka(), gallery)
    rules, cfg = settings.rules(), settings.detection()
    feed.load()
    log.info("%s: gallery loaded (%d faces, version %d)", name, len(gallery), gallery.version)
    metrics.observe_rule(rules.rule(gallery))  # the rule is on /metrics before the first image
    ready()
    try:
        while True:
            feed.apply_pending()
            if not conn.poll(0.2):
                continue
            item = conn.recv()
            if item is None:
                return
            topic, partition, offset, value = item
            out = answer(value, (topic, partition, offset), feed, rules, cfg, name)
            observe(out)
            conn.send((out.topic, out.payload, out.label))
    except (EOFError, BrokenPipeError):
        return  # the supervisor is gone: nobody to answer
    finally:
        feed.close()


class _Feed(Protocol):
    """What :func:`answer` needs of a :class:`GalleryFeed`."""

    gallery: Gallery

    def catch_up(self, version: int, timeout: float) -> bool: ...


def answer(
    value: bytes,
    origin: tuple[str, int, int],
    feed: _Feed,
    rules: RuleSource,
    cfg: DetectionConfig,
    worker: str,
) -> Processed:
    """:func:`process_request` with the rule ``rules`` gives for the gallery now, and for a
    re-match that needs a newer gallery: read the gallery topic up to the version it asks
    for (at most :data:`GALLERY_CATCH_UP_S`), then match. After a timeout it matches with
    the gallery it has, and says so in the log; the result's ``gallery_version`` records
    what it matched against. Never returns "behind". A message of ``faces.scan`` goes to
    :func:`process_scan`."""
    if origin[0] == topics.SCAN:
        return process_scan(value, worker)
    rule = rules.rule(feed.gallery)
    metrics.observe_rule(rule)
    out = process_request(value, origin, feed.gallery, rule, cfg, worker)
    if out.wait_for_gallery is None:
        return out
    if not feed.catch_up(out.wait_for_gallery, GALLERY_CATCH_UP_S):
        log.warning(
            "%s: re-match at %s@%d:%d wants gallery version %d; still at %d after %.0fs: matching anyway",
            worker,
            *origin,
            out.wait_for_gallery,
            feed.gallery.version,
            GALLERY_CATCH_UP_S,
        )
    return process_request(
        value, origin, feed.gallery, rules.rule(feed.gallery), cfg, worker, stale_gallery_ok=True
    )


def observe(out: Processed) -> None:
    """The metrics of one processed request."""
    if out.scan_kind is not None:
        metrics.SCANS.labels(out.scan_kind, out.label).inc()
        if out.seconds is not None:
            metrics.SCAN_SECONDS.labels(out.scan_kind).observe(out.seconds)
        return
    metrics.IMAGES.labels(out.label).inc()
    if out.result is not None:
        metrics.FACES_PER_IMAGE.observe(len(out.result.faces))
        for stage, ms in out.result.timings_ms.items():
            metrics.STAGE_SECONDS.labels(stage).observe(ms / 1000)
        for m in out.result.matches:
            if m.distance is not None:
                metrics.MATCH_DISTANCE.observe(m.distance)


def _request(env: Envelope[Any]) -> ev.RecognitionRequested:
    """A first attempt (ImageSubmitted) or a retry (RecognitionRequested), as a request."""
    if isinstance(env.data, ev.ImageSubmitted):
        return ev.RecognitionRequested(image=env.data, attempt=1)
    if isinstance(env.data, ev.RecognitionRequested):
        return env.data
    raise SchemaError(f"expected an image to recognize, got {env.type}")


def _dead_letter(
    reason: ev.FailureReason, detail: str, value: bytes, origin: tuple[str, int, int], label: str
) -> Processed:
    dead = ev.ImageDeadLettered(
        reason=reason,
        detail=detail,
        topic=origin[0],
        partition=origin[1],
        offset=origin[2],
        raw=value[:65536].decode("utf-8", "replace"),
    )
    return Processed(topics.DEAD_LETTER, codec.encode_data(dead, source=SOURCE), label)


@dataclass(frozen=True)
class Processed:
    """What one request message turns into: the event to publish, and where (``topic``
    None: nothing to publish, the message is passed over).

    ``wait_for_gallery`` (label "behind", nothing to publish): a re-match needs a gallery
    that has applied the gallery topic up to this version; :func:`answer` catches up and
    asks again. ``result`` is the recognition of an image (None for a re-match).
    ``scan_kind`` (a scan request: its kind, or "invalid") and ``seconds`` (the scan's
    time) are for the scan metrics."""

    topic: str | None
    payload: bytes
    label: str  # the outcome, or "failed" / "error" / "skipped" / "behind", for the metrics
    result: Recognition | None = None
    wait_for_gallery: int | None = None
    scan_kind: str | None = None
    seconds: float | None = None


def process_scan(value: bytes, worker: str) -> Processed:
    """Answer one ``faces.scan`` message: a ``FaceScanFinished`` for ``faces.scanned``
    (:func:`recognizer.scan.answer_scan`), or nothing for a request past its ``expires_at``
    (the API gave up on it) and for a message that is not a valid request (it names nobody
    to answer; logged and passed over, like an event type this code does not know).
    The reply goes out under the request's key, its request id (the dispatcher keys every
    outcome by its message's key)."""
    try:
        env, request = codec.decode_as(value, ev.FaceScanRequested)
    except SchemaError as exc:
        log.warning(
            "%s: passing over a message on %s that is not a scan request: %s", worker, topics.SCAN, exc
        )
        return Processed(None, b"", "skipped", scan_kind="invalid")
    answered = answer_scan(request, worker)
    if answered.reply is None:
        log.info("%s: scan %s expired before it was read; not scanned", worker, request.request_id)
        return Processed(None, b"", answered.outcome, scan_kind=request.kind.value)
    payload = codec.encode_data(answered.reply, source=SOURCE, trace_id=env.trace_id)
    return Processed(
        topics.SCANNED, payload, answered.outcome, scan_kind=request.kind.value, seconds=answered.seconds
    )


def process_request(
    value: bytes,
    origin: tuple[str, int, int],
    gallery: Gallery,
    rule: ev.MatchRule,
    cfg: DetectionConfig,
    worker: str,
    *,
    stale_gallery_ok: bool = False,
) -> Processed:
    """Turn one ``images.submitted`` or ``images.recognize`` message into its outcome
    event; no I/O.

    ``origin`` is the message's (topic, partition, offset), quoted by a dead letter.
    FacesRecognized goes to ``images.results``; RecognitionFailed (retryable or not) to
    ``images.failures``. A message that is not a valid request is dead-lettered when it
    came on ``images.recognize``; on ``images.submitted`` the stream worker dead-letters
    it, so it is only passed over here, like an event type or version this code does not
    know (a newer producer's: that is how a recognizer older than ``RematchRequested``
    treats one).

    A ``RematchRequested`` (on ``images.recognize``) is matched without the image; see
    :func:`_rematch`. If ``gallery`` is older than the version it asks for, the answer is
    "behind" (``wait_for_gallery``) unless ``stale_gallery_ok``.
    """
    try:
        env = codec.decode(value)
        if isinstance(env.data, ev.RematchRequested) and origin[0] != topics.SUBMITTED:
            return _rematch(env, env.data, value, origin, gallery, rule, worker, stale_gallery_ok)
        request = _request(env)
    except SchemaError as exc:
        if isinstance(exc, UnknownEvent) or origin[0] == topics.SUBMITTED:
            return Processed(None, b"", "skipped")
        return _dead_letter(ev.FailureReason.INVALID_EVENT, str(exc), value, origin, "failed")
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
        # strict: the same refusals as b64decode(validate=True), about 2.5x faster on big photos
        data = a2b_base64(image.image_b64, strict_mode=True)
        result = recognize(data, gallery, rule, cfg)
    except ImageRejected as exc:
        return fail(exc.reason, exc.detail, retryable=False)
    except (ValueError, TypeError) as exc:  # invalid base64 (binascii.Error is a ValueError)
        return fail(ev.FailureReason.CORRUPT_IMAGE, f"bad image_b64: {exc}", retryable=False)
    except Exception as exc:
        log.exception("recognition of %s failed", image.image_id)
        return fail(ev.FailureReason.INTERNAL_ERROR, repr(exc)[:500], retryable=True)
    # No person_name: a result names people by id only, so that erasing a person (the
    # gallery and the read model) leaves no name behind in images.results.
    faces = [
        ev.FaceMatch(
            index=i,
            box=f.box,
            person_id=m.person_id,
            distance=m.distance,
            second_distance=m.second_distance,
            encoding=enc.floats(f.encoding),
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


def _rematch(
    env: Envelope[Any],
    request: ev.RematchRequested,
    value: bytes,
    origin: tuple[str, int, int],
    gallery: Gallery,
    rule: ev.MatchRule,
    worker: str,
    stale_gallery_ok: bool,
) -> Processed:
    """The faces of ``request`` matched again: a FacesRecognized of the request's run, with
    the same faces (index, box, encoding) in index order; a face without an encoding stays
    unknown (no distances). The outcome follows the rule of :func:`recognize`. The image's
    stored result is left alone if matching fails: the request is dead-lettered (it has no
    image to retry with), never turned into a RecognitionFailed that would fail the image.
    """
    if gallery.version < request.gallery_version and not stale_gallery_ok:
        return Processed(None, b"", "behind", wait_for_gallery=request.gallery_version)
    faces = sorted(request.faces, key=lambda f: f.index)
    probes = [f for f in faces if f.encoding is not None]
    try:
        t0 = time.perf_counter()
        found = gallery.match(np.array([f.encoding for f in probes]).reshape(-1, 128), rule)
        match_ms = (time.perf_counter() - t0) * 1000
    except Exception as exc:
        log.exception("re-match of %s failed", request.image_id)
        return _dead_letter(
            ev.FailureReason.INTERNAL_ERROR, f"re-match failed: {exc!r}"[:500], value, origin, "error"
        )
    matches: dict[int, Match] = {f.index: m for f, m in zip(probes, found, strict=True)}
    out_faces = []
    for f in faces:
        m = matches.get(f.index)
        out_faces.append(
            ev.FaceMatch(
                index=f.index,
                box=f.box,
                person_id=None if m is None else m.person_id,
                distance=None if m is None else m.distance,
                second_distance=None if m is None else m.second_distance,
                encoding=f.encoding,
            )
        )
    if not out_faces:
        outcome = ev.Outcome.NO_FACE
    elif any(f.person_id is not None for f in out_faces):
        outcome = ev.Outcome.IDENTIFIED
    else:
        outcome = ev.Outcome.UNKNOWN_FACES
    out = ev.FacesRecognized(
        image_id=request.image_id,
        run=request.run,
        attempt=1,
        outcome=outcome,
        faces=out_faces,
        width=request.width,
        height=request.height,
        model=request.model,
        rule=rule,
        gallery_version=gallery.version,
        gallery_size=len(gallery),
        timings_ms={"match": round(match_ms, 2)},
        worker=worker,
        submitted_at=request.submitted_at,
        recognized_at=datetime.now(UTC),
    )
    payload = codec.encode_data(out, source=SOURCE, trace_id=env.trace_id)
    return Processed(topics.RESULTS, payload, outcome.value)
