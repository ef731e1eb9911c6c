"""Asking the recognizers to find a face in a photo, and waiting for the answer.

The API does not run dlib: a photo to enroll, verify or detect is published as a
``FaceScanRequested`` on ``faces.scan`` (read by the recognizers' consumer group, so
scans scale with the recognizer pool), and the recognizer that takes it publishes a
``FaceScanFinished`` on ``faces.scanned`` (see :mod:`recognizer.scan`).

:class:`ScanReplies` is this process's one reader of ``faces.scanned``: a thread that
reads every partition from where it ended when the reader started (no consumer group: each
replica reads every answer, and keeps only those addressed to it, ``reply_to`` =
:attr:`ScanReplies.replica`). :class:`ScanClient` publishes a request through the
:class:`~common.publisher.Publisher` and waits for its answer.

Failure contract of every ``ScanClient`` call:

- the broker does not acknowledge the request: :class:`~common.errors.BrokerUnavailable`
  (503, as any publish);
- no answer within ``timeout_s``: :class:`ScanUnanswered` (503, naming the cause). The
  request carries that deadline as ``expires_at``: a recognizer that reads it later
  skips it instead of scanning for nobody;
- the photo killed two recognizer processes: :class:`PhotoCrashedWorker` (the routes
  answer 422);
- the scan raised in the recognizer, or the answer is of another kind than the request:
  :class:`ScanFailed` (a fault: 500).

A request is never retried here: a scan has no effect, so the caller may simply ask again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from base64 import b64encode
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from common.errors import FacestreamError
from common.kafka import watermarks
from common.publisher import Publisher
from schemas import codec, topics
from schemas import events as ev
from schemas.access import SCAN_REPLY_GROUP
from schemas.errors import SchemaError

log = logging.getLogger(__name__)

#: ``face`` of :meth:`ScanClient.enroll` and :meth:`ScanClient.probe`: the largest face.
LARGEST = "largest"
FaceChoice = int | str | None

EnrollResult = ev.ScanFaceFound | ev.ScanSeveralFaces | ev.ScanNoFace | ev.ScanRejected
ProbeResult = ev.ScanProbe | ev.ScanSeveralFaces | ev.ScanNoFace | ev.ScanRejected
DetectResult = ev.ScanDetection | ev.ScanRejected


class ScanError(FacestreamError):
    """Base of the scan client's errors."""


class ScanUnanswered(ScanError):
    """No recognizer answered the scan in time (none running, or all of them busy)."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PhotoCrashedWorker(ScanError):
    """The photo killed the recognizer process scanning it twice: it is not tried again."""


class ScanFailed(ScanError):
    """The scan raised in the recognizer, or answered something the request did not ask for."""


def replica_id() -> str:
    """An id of this process, unique across restarts: where the answers to its scans go."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ScanReplies:
    """Reads ``faces.scanned`` in a thread and hands each answer addressed to
    :attr:`replica` to the coroutine waiting for it (see the module docstring).

    An answer nobody waits for (its caller timed out, or another replica's) is dropped.
    :meth:`ready` is False until every partition is assigned, and once the thread has
    stopped or has not polled for ``stale_after_s``.
    """

    def __init__(self, conf: dict[str, Any], replica: str, stale_after_s: float = 10.0) -> None:
        self.replica = replica
        self._stale_after_s = stale_after_s
        self._consumer = Consumer(
            {
                **conf,
                # assign() only, never commits: a group id only because a consumer needs one.
                "group.id": SCAN_REPLY_GROUP,
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                # Long polls: the broker answers as soon as an answer arrives; an idle
                # API costs it one fetch per 0.5 s.
                "fetch.wait.max.ms": 500,
                "fetch.message.max.bytes": topics.MAX_MESSAGE_BYTES,
            }
        )
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[ev.ScanOutcome]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._assigned = False
        self._polled_at = 0.0
        self._thread = threading.Thread(target=self._run, name="scan-replies", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        """Assign every partition of ``faces.scanned`` at its present end, then start reading.
        Raises ``KafkaException`` if the broker does not answer within ``timeout`` (the
        API's start-up then fails, as it does for an unreachable broker)."""
        meta = self._consumer.list_topics(topics.SCANNED, timeout=timeout)
        partitions = sorted(meta.topics[topics.SCANNED].partitions)
        # Concrete offsets, not OFFSET_END (resolved lazily): an answer to a request
        # published after start() returns lies past them, so none can be missed.
        ends = [
            TopicPartition(
                topics.SCANNED, p, watermarks(self._consumer, TopicPartition(topics.SCANNED, p), timeout)[1]
            )
            for p in partitions
        ]
        self._consumer.assign(ends)
        self._assigned = True
        self._polled_at = time.monotonic()
        self._thread.start()

    def expect(self, request_id: str) -> asyncio.Future[ev.ScanOutcome]:
        """A future that gets the outcome of ``request_id``'s answer; call before publishing
        the request, and :meth:`forget` it after."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ev.ScanOutcome] = loop.create_future()
        with self._lock:
            self._waiting[request_id] = (loop, fut)
        return fut

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)

    def ready(self) -> bool:
        return (
            self._assigned
            and self._thread.is_alive()
            and time.monotonic() - self._polled_at < self._stale_after_s
        )

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = self._consumer.consume(100, 0.2)
            self._polled_at = time.monotonic()
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("scan replies: %s", err)
                    continue
                self.deliver(msg.value())

    def deliver(self, value: bytes | None) -> bool:
        """Hand one ``faces.scanned`` message to its waiter; False if it is not an answer
        this replica waits for (another replica's, a timed-out one, not an answer)."""
        try:
            _, reply = codec.decode_as(value, ev.FaceScanFinished)
        except SchemaError as exc:
            log.warning("scan replies: passing over a message that is not an answer: %s", exc)
            return False
        if reply.reply_to != self.replica:
            return False
        with self._lock:
            waiter = self._waiting.pop(reply.request_id, None)
        if waiter is None:
            log.info("scan %s answered after its caller stopped waiting", reply.request_id)
            return False
        loop, fut = waiter
        loop.call_soon_threadsafe(_resolve, fut, reply.outcome)
        return True


def _resolve(fut: asyncio.Future[ev.ScanOutcome], outcome: ev.ScanOutcome) -> None:
    if not fut.done():
        fut.set_result(outcome)


class ScanClient:
    """Scans photos through the recognizers; see the module docstring for the errors."""

    def __init__(self, publisher: Publisher, replies: ScanReplies, timeout_s: float) -> None:
        self.publisher = publisher
        self.replies = replies
        self.timeout_s = timeout_s

    async def enroll(
        self, data: bytes, num_jitters: int = 1, face: FaceChoice = None, check_quality: bool = True
    ) -> EnrollResult:
        """The face to enroll (``face``: an index, :data:`LARGEST` or None), encoded from
        ``num_jitters`` jittered copies, with a crop and its quality notes; with
        ``check_quality`` a poor template is rejected (:func:`recognizer.scan.scan_photo`)."""
        outcome = await self._ask(
            ev.ScanKind.ENROLL, data, num_jitters=num_jitters, face=face, check_quality=check_quality
        )
        if isinstance(outcome, ev.ScanFaceFound | ev.ScanSeveralFaces | ev.ScanNoFace | ev.ScanRejected):
            return outcome
        raise _unexpected(outcome)

    async def probe(self, data: bytes, face: FaceChoice = None) -> ProbeResult:
        """The face to verify (:func:`recognizer.scan.probe_photo`)."""
        outcome = await self._ask(ev.ScanKind.PROBE, data, face=face)
        if isinstance(outcome, ev.ScanProbe | ev.ScanSeveralFaces | ev.ScanNoFace | ev.ScanRejected):
            return outcome
        raise _unexpected(outcome)

    async def detect(self, data: bytes, encodings: bool = False) -> DetectResult:
        """Every face and its landmarks (:func:`recognizer.scan.detect_photo`)."""
        outcome = await self._ask(ev.ScanKind.DETECT, data, encodings=encodings)
        if isinstance(outcome, ev.ScanDetection | ev.ScanRejected):
            return outcome
        raise _unexpected(outcome)

    async def _ask(self, kind: ev.ScanKind, data: bytes, **options: Any) -> ev.ScanOutcome:
        request_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        deadline = time.monotonic() + self.timeout_s
        request = ev.FaceScanRequested(
            request_id=request_id,
            kind=kind,
            image_b64=b64encode(data).decode("ascii"),
            reply_to=self.replies.replica,
            requested_at=now,
            expires_at=now + timedelta(seconds=self.timeout_s),
            **options,
        )
        answer = self.replies.expect(request_id)
        try:
            await self.publisher.publish_event(topics.SCAN, request_id, request)
            return await asyncio.wait_for(answer, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise ScanUnanswered(
                f"no recognizer answered the scan within {self.timeout_s:g} s (SCAN_TIMEOUT_S): "
                "are the recognizers running?"
            ) from None
        finally:
            self.replies.forget(request_id)


def _unexpected(outcome: ev.ScanOutcome) -> ScanError:
    """The error for an answer the caller cannot use: a crashed or failed scan, or an
    outcome of another kind of scan."""
    if isinstance(outcome, ev.ScanCrashed):
        return PhotoCrashedWorker(outcome.detail)
    if isinstance(outcome, ev.ScanFailed):
        return ScanFailed(outcome.detail)
    return ScanFailed(f"the recognizer answered {outcome.result!r}, which this kind of scan never is")
