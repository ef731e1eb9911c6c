"""The pool's one Kafka consumer, and the local queue from which idle workers take images.

Why one consumer per pool, not one per worker process: a consumer group gives each
partition to one consumer, so with a consumer per process an image waits behind the
images of its own partitions while another process idles (keyed partitions fill
unevenly; at 90 % load that made p95 three times p50). Here the pool fetches into a
bounded local queue (``prefetch`` images) and each worker takes the next image as soon
as it is free: within a pool, no image waits while a worker idles.

Delivery contract (at-least-once, idempotent effects):
- An image's offset is stored for commit only once its outcome, and the outcome of every
  earlier image of its partition, has been acknowledged by the broker; a pool killed at
  any point commits nothing unfinished, and the group redoes it.
- A worker process that dies mid-image (killed, out of memory) has its image handed to
  another worker. An image that has killed ``max_crashes`` workers is failed for good:
  RecognitionFailed (not retryable, ``internal_error``) goes to ``images.failures``, so
  the stream worker fails the image and dead-letters it with its request; one poison
  image cannot stall its partition.
- A failed delivery stops the pool without committing (the supervisor exits non-zero;
  the orchestrator restarts it).
- SIGTERM: no new image is taken; the images in the workers' hands are finished,
  published and committed; the queued ones are left to the group.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from common.kafka import producer_config
from recognizer.scan import finished
from recognizer.settings import RecognizerSettings
from schemas import codec, topics
from schemas import events as ev
from schemas.errors import SchemaError

log = logging.getLogger(__name__)
SOURCE = "recognizer"


class FatalDeliveryError(RuntimeError):
    """An outcome could not be delivered: the pool stops without committing."""


@dataclass
class Job:
    """One fetched message on its way through a worker."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    crashes: int = 0
    #: [offset, done] in :class:`Offsets` (set when fetched)
    entry: list[Any] = field(default_factory=lambda: [0, False])


class JobQueue:
    """A bounded FIFO of fetched jobs; a job given back after a crash goes to the front."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self.closed = False

    def put(self, job: Job) -> bool:
        """Wait for room; False if the queue was closed meanwhile."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._jobs) < self.capacity or self.closed)
            if self.closed:
                return False
            self._jobs.append(job)
            self._cond.notify_all()
            return True

    def give_back(self, job: Job) -> None:
        with self._cond:
            self._jobs.appendleft(job)
            self._cond.notify_all()

    def get(self, timeout: float) -> Job | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._jobs or self.closed, timeout) or self.closed:
                return None
            job = self._jobs.popleft()
            self._cond.notify_all()
            return job

    def drop(self, partitions: set[tuple[str, int]]) -> None:
        """Forget the jobs of revoked partitions: their new owner redoes them."""
        with self._cond:
            self._jobs = deque(j for j in self._jobs if (j.topic, j.partition) not in partitions)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._jobs)


class Offsets:
    """Per partition, the fetched offsets in order and whether each is done (thread-safe).

    :meth:`ready` gives, per partition, the offset below which everything is done and
    not yet handed out: the consumer's thread stores them (a librdkafka consumer is used
    from one thread only; storing from another one was seen to block).
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], deque[list[Any]]] = {}
        self._ready: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def fetched(self, job: Job) -> list[Any]:
        entry = [job.offset, False]
        with self._lock:
            self._pending.setdefault((job.topic, job.partition), deque()).append(entry)
        return entry

    def done(self, job: Job, entry: list[Any]) -> None:
        tp = (job.topic, job.partition)
        with self._lock:
            entry[1] = True
            pending = self._pending.get(tp)
            while pending and pending[0][1]:
                self._ready[tp] = int(pending.popleft()[0]) + 1

    def ready(self) -> list[TopicPartition]:
        """The offsets to store now (each partition's next offset to read), once each."""
        with self._lock:
            ready, self._ready = self._ready, {}
        return [TopicPartition(t, p, o) for (t, p), o in ready.items()]

    def forget(self, partitions: set[tuple[str, int]]) -> None:
        with self._lock:
            for tp in partitions:
                self._pending.pop(tp, None)
                self._ready.pop(tp, None)


class Dispatcher:
    """The pool's consumer, producer, local queue and offsets; see the module docstring.

    ``fetch`` runs in a thread of its own; each worker process is served by a thread
    running ``serve_worker``; the supervisor calls ``poll`` often (delivery reports).
    """

    def __init__(
        self, settings: RecognizerSettings, name: str, *, prefetch: int, max_crashes: int = 2
    ) -> None:
        conf = settings.librdkafka()
        self.name = name
        self.max_crashes = max_crashes
        self.consumer = Consumer(
            {
                **conf,
                "group.id": settings.recognizer_group_id,
                "client.id": name,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,  # stored only once the outcome is acknowledged
                "auto.commit.interval.ms": 1000,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 300_000,
                # Long polls: a new image is delivered at once anyway, and an idle broker
                # is not kept busy answering empty fetches.
                "fetch.wait.max.ms": 500,
                # Fetched images wait in librdkafka's queue until the local queue has room:
                # keep that small too, so that a pool does not sit on work others could do.
                "queued.max.messages.kbytes": 16_384,
                "fetch.message.max.bytes": 16 * 1024 * 1024,
            }
        )
        self.producer = Producer(producer_config(conf, **{"linger.ms": 0}))
        self.queue = JobQueue(prefetch)
        self.offsets = Offsets()
        self.stopping = threading.Event()
        self.fatal: str | None = None

    # ------------------------------------------------------------------ fetching

    def fetch(self) -> None:
        """Fill the local queue until :meth:`stop` (runs in its own thread)."""
        self.consumer.subscribe(
            list(topics.RECOGNIZER_INPUTS), on_revoke=self._revoked, on_lost=self._revoked
        )
        while not self.stopping.is_set():
            self.store_offsets()
            msg = self.consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err)
                continue
            job = Job(
                msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value() or b""
            )
            job.entry = self.offsets.fetched(job)
            if not self.queue.put(job):
                return

    def store_offsets(self) -> None:
        """Store the offsets of acknowledged outcomes (on the consumer's thread)."""
        if ready := self.offsets.ready():
            try:
                self.consumer.store_offsets(offsets=ready)
            except KafkaException as exc:  # partition revoked meanwhile: its new owner redoes it
                log.info("offsets not stored (%s): %s", ready, exc)

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self.queue.drop(gone)
        self.offsets.forget(gone)

    # ------------------------------------------------------------------ workers

    def serve_worker(self, conn: Connection) -> bool:
        """Hand images to one worker until stopping; False if the worker died (its image
        went back to the queue, or was failed for good after ``max_crashes``)."""
        while not self.stopping.is_set():
            job = self.queue.get(timeout=0.2)
            if job is None:
                continue
            entry = job.entry
            try:
                conn.send((job.topic, job.partition, job.offset, job.value))
            except OSError:  # the worker was already gone: the image never reached it
                self.queue.give_back(job)
                return False
            try:
                topic, payload, _label = conn.recv()
            except (EOFError, OSError):
                self._crashed(job, entry)
                return False
            if topic is None:
                self.offsets.done(job, entry)
            else:
                self.publish(topic, job, payload, entry)
        return True

    def _crashed(self, job: Job, entry: list[Any]) -> None:
        job.crashes += 1
        if job.crashes < self.max_crashes:
            log.warning(
                "a worker died on %s@%d:%d; handing it to another", job.topic, job.partition, job.offset
            )
            self.queue.give_back(job)
            return
        log.error("%s@%d:%d killed %d workers: failing it", job.topic, job.partition, job.offset, job.crashes)
        topic, payload = poison_outcome(job, self.max_crashes, self.name)
        self.publish(topic, job, payload, entry)

    # ------------------------------------------------------------------ delivery

    def publish(self, topic: str, job: Job, payload: bytes, entry: list[Any]) -> None:
        """Produce without waiting; the offset is stored in order once acknowledged."""

        def on_delivery(err: KafkaError | None, _m: Message) -> None:
            if err is not None:
                self.fatal = f"delivery to {topic} failed: {err}"
                self.stopping.set()
                return
            self.offsets.done(job, entry)

        while True:
            try:
                self.producer.produce(topic, value=payload, key=job.key, on_delivery=on_delivery)
                return
            except BufferError:  # local queue full: serve deliveries, then try again
                self.producer.poll(0.1)

    def poll(self, timeout: float) -> None:
        """Serve delivery reports (from the supervisor's loop)."""
        self.producer.poll(timeout)

    def stop(self) -> None:
        self.stopping.set()
        self.queue.close()

    def close(self) -> None:
        """Deliver what is in flight, commit what was acknowledged, leave the group
        (once the fetching thread has ended)."""
        self.producer.flush(30)
        self.store_offsets()
        self.consumer.close()


def poison_outcome(job: Job, crashes: int, worker: str) -> tuple[str, bytes]:
    """What an image that killed ``crashes`` worker processes turns into: RecognitionFailed,
    not retryable, with its request (so the stream fails it and parks it for a replay), or
    a dead letter when the message was not even a request. A photo to scan for the API
    turns into a ``ScanCrashed`` answer, so the API answers its caller at once."""
    detail = f"the recognizer process died {crashes} times on this image (out of memory?)"
    try:
        env = codec.decode(job.value)
        data = env.data
        if isinstance(data, ev.FaceScanRequested):
            reply = finished(data, ev.ScanCrashed(detail=detail), worker)
            return topics.SCANNED, codec.encode_data(reply, source=SOURCE, trace_id=env.trace_id)
        request = ev.RecognitionRequested(image=data) if isinstance(data, ev.ImageSubmitted) else data
        if not isinstance(request, ev.RecognitionRequested):
            raise SchemaError(f"not a request: {env.type}")
    except SchemaError as exc:
        dead = ev.ImageDeadLettered(
            reason=ev.FailureReason.INTERNAL_ERROR,
            detail=f"{detail}; {exc}",
            topic=job.topic,
            partition=job.partition,
            offset=job.offset,
            raw=job.value[:65536].decode("utf-8", "replace"),
        )
        return topics.DEAD_LETTER, codec.encode_data(dead, source=SOURCE)
    failed = ev.RecognitionFailed(
        image_id=request.image.image_id,
        run=request.image.run,
        attempt=request.attempt,
        reason=ev.FailureReason.INTERNAL_ERROR,
        detail=detail,
        retryable=False,
        worker=worker,
        request=request,
    )
    return topics.FAILURES, codec.encode_data(failed, source=SOURCE, trace_id=env.trace_id)
