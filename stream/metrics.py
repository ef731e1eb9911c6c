"""Prometheus metrics of the stream service (dispatch, retries, dead letters, projector),
and the consumer-lag exporter that reads the broker for every consumer group.

Labelled series whose label values are known in advance are created at import with
value 0, so that a rate over them is 0 rather than no data (an alert or a dashboard
panel cannot tell "nothing happened" from "not scraped" otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from prometheus_client import Counter, Gauge, Histogram

from schemas import topics
from schemas.events import FailureReason
from schemas.lifecycle import FINAL, Status

log = logging.getLogger(__name__)

DISPATCHED = Counter(
    "facestream_stream_dispatched_total", "Images sent to the recognizers, by kind.", ["kind"]
)
RETRIES = Counter("facestream_stream_retries_total", "Recognition retries scheduled.")
DEAD_LETTERS = Counter(
    "facestream_stream_dead_letters_total", "Messages dead-lettered, by reason.", ["reason"]
)
SKIPPED = Counter(
    "facestream_stream_skipped_total", "Events skipped (unknown type or version), by topic.", ["topic"]
)
PROJECTED = Counter("facestream_projector_events_total", "Events written to PostgreSQL, by type.", ["type"])
PROJECTOR_WRITE_SECONDS = Histogram(
    "facestream_projector_write_seconds",
    "Time to write one event to PostgreSQL.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PROJECTOR_DB_ERRORS = Counter(
    "facestream_projector_db_errors_total",
    "Failed database writes (retried), by kind: unavailable or transient (deadlock, read-only, ...).",
    ["kind"],
)
PUBLISH_ERRORS = Counter(
    "facestream_stream_publish_errors_total", "Publishes the broker did not acknowledge (retried)."
)
HANDLER_ERRORS = Counter(
    "facestream_stream_handler_errors_total",
    "Unexpected errors while carrying out an event's effects (retried, then dead-lettered), by topic.",
    ["topic"],
)
WITHHELD = Counter(
    "facestream_stream_withheld_acks_total",
    "Events left uncommitted because the worker stopped before their effects were durable (redone later).",
)
RETRIES_WAITING = Gauge("facestream_stream_retries_waiting", "Retries in the retry table, not yet sent.")
REDISPATCHED = Counter(
    "facestream_reconciler_redispatched_total",
    "Images found pending too long and sent to the recognizers again (each means something was lost).",
)
GALLERY_KEYS_PURGED = Counter(
    "facestream_gallery_keys_purged_total",
    "Gallery tombstones the stream published for keys that outlived an erasure (an enrollment raced it).",
)
PENDING_OLDEST = Gauge(
    "facestream_images_pending_oldest_seconds", "Seconds since the oldest pending image was last touched."
)
IMAGES_FINISHED = Counter(
    "facestream_images_finished_total", "Images that reached a final status.", ["status"]
)
END_TO_END_SECONDS = Histogram(
    "facestream_end_to_end_seconds",
    "From submission to the result being queryable in PostgreSQL.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
AGENT_CRASHES = Counter(
    "facestream_stream_agent_crashes_total", "Agents stopped by an unexpected error, by agent.", ["agent"]
)
CONSUMER_LAG = Gauge(
    "facestream_consumer_lag_messages",
    "Messages a consumer group has yet to consume: end offset minus committed offset, per partition.",
    ["group", "topic", "partition"],
)
PARTITION_END_OFFSET = Gauge(
    "facestream_kafka_partition_end_offset",
    "Offset the next message of a partition will get (its deriv is the produce rate).",
    ["topic", "partition"],
)
LAG_ERRORS = Counter(
    "facestream_consumer_lag_errors_total", "Consumer-lag reads that failed (the broker did not answer)."
)

#: The topics the stream's agents consume (stream/app.py), i.e. its group's partitions.
STREAM_INPUTS = (topics.SUBMITTED, topics.FAILURES, topics.RETRY, topics.RESULTS, topics.GALLERY)


def record_finished(status: Status, submitted_at: datetime | None) -> None:
    """An image reached a final status: count it, and its time from submission."""
    IMAGES_FINISHED.labels(status.value).inc()
    if submitted_at is not None:
        END_TO_END_SECONDS.observe(max(0.0, (datetime.now(UTC) - submitted_at).total_seconds()))


for _kind in ("retry", "reconciled"):
    DISPATCHED.labels(_kind)
for _db_kind in ("unavailable", "transient"):
    PROJECTOR_DB_ERRORS.labels(_db_kind)
for _reason in FailureReason:
    DEAD_LETTERS.labels(_reason.value)
for _topic in STREAM_INPUTS:
    SKIPPED.labels(_topic)
for _status in FINAL:
    IMAGES_FINISHED.labels(_status.value)
for _type in (
    "image_submitted",
    "faces_recognized",
    "image_failed",
    "person_enrolled",
    "face_enrolled",
    "gallery_tombstone",
    "retry_scheduled",
):
    PROJECTED.labels(_type)

Labels = tuple[str, ...]


class ConsumerLagExporter:
    """Sets CONSUMER_LAG for ``groups`` (group id -> the topics it consumes) and
    PARTITION_END_OFFSET for every topic of ``watched``, from the broker's offsets.

    Lag is end offset minus committed offset; a partition the group has not committed
    yet (or whose commit predates the retained log) counts from the log start, where a
    consumer with ``auto.offset.reset=earliest`` (every facestream group) begins.

    :meth:`update` blocks on admin requests (``timeout`` each): run it in a thread. When
    the broker does not answer, every series is removed rather than left at its last
    value (a stale lag would look like a healthy one), LAG_ERRORS counts the failure,
    and the next update sets them again. Label sets are bounded by the topics'
    partition counts.
    """

    def __init__(
        self,
        conf: Mapping[str, Any],
        groups: Mapping[str, Sequence[str]],
        watched: Iterable[str] = (),
        timeout: float = 5.0,
    ) -> None:
        self._conf = dict(conf)
        self.groups = {g: tuple(ts) for g, ts in groups.items()}
        self.watched = tuple(sorted({*watched, *(t for ts in self.groups.values() for t in ts)}))
        self.timeout = timeout
        self._admin: AdminClient | None = None
        self._lag_labels: set[Labels] = set()
        self._end_labels: set[Labels] = set()
        #: (group, topic, partition) -> committed offset, as of the last successful update
        #: (empty after a failed one): the reconciler reads it.
        self.committed: dict[tuple[str, str, int], int] = {}

    def update(self) -> None:
        try:
            lag, ends = self.read()
        except (KafkaException, FutureTimeout) as exc:
            LAG_ERRORS.inc()
            log.warning("consumer lag not read: %s", exc)
            lag, ends = {}, {}
            self.committed = {}
        self._lag_labels = _replace(CONSUMER_LAG, self._lag_labels, lag)
        self._end_labels = _replace(PARTITION_END_OFFSET, self._end_labels, ends)

    def read(self) -> tuple[dict[Labels, int], dict[Labels, int]]:
        """((group, topic, partition) -> lag, (topic, partition) -> end offset)."""
        if self._admin is None:
            self._admin = AdminClient(self._conf)
        admin = self._admin
        meta = admin.list_topics(timeout=self.timeout).topics
        # A topic not created yet has no partitions to report (ensure_topics makes them).
        tps = [TopicPartition(t, p) for t in self.watched if t in meta for p in sorted(meta[t].partitions)]
        if not tps:
            return {}, {}
        end = self._offsets(admin, tps, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        start = self._offsets(admin, tps, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        lag: dict[Labels, int] = {}
        committed_offsets: dict[tuple[str, str, int], int] = {}
        for group, group_topics in self.groups.items():
            wanted = [tp for tp in tps if tp.topic in group_topics]
            if not wanted:
                continue
            futures = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, wanted)], request_timeout=self.timeout
            )
            committed = futures[group].result(timeout=self.timeout)
            for tp in committed.topic_partitions:
                key = (tp.topic, tp.partition)
                committed_offsets[(group, tp.topic, tp.partition)] = tp.offset
                # OFFSET_INVALID (-1001) when nothing is committed: max() picks the log start.
                lag[(group, tp.topic, str(tp.partition))] = max(0, end[key] - max(tp.offset, start[key]))
        ends: dict[Labels, int] = {(t, str(p)): offset for (t, p), offset in end.items()}
        self.committed = committed_offsets
        return lag, ends

    def _offsets(
        self, admin: AdminClient, tps: list[TopicPartition], spec: Any
    ) -> dict[tuple[str, int], int]:
        futures = admin.list_offsets({tp: spec for tp in tps}, request_timeout=self.timeout)
        return {
            (tp.topic, tp.partition): int(f.result(timeout=self.timeout).offset) for tp, f in futures.items()
        }


def _replace(gauge: Gauge, previous: set[Labels], values: Mapping[Labels, int]) -> set[Labels]:
    """Set ``values`` on ``gauge`` and remove the series of ``previous`` that are gone."""
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    for labels in previous - values.keys():
        gauge.remove(*labels)
    return set(values)
