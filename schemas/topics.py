"""The topics: names, partition counts, retention and cleanup policy.

These are a public interface. Any Kafka client may publish a valid ImageSubmitted to
``images.submitted`` and consume results from ``images.results``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000
#: How long any images.* topic keeps a message (image bytes included): the longest an
#: erased image or result can survive in a Kafka log.
RETENTION_DAYS = 7
#: The gallery's segments roll and are compacted within this: how long a value a
#: tombstone replaced (an erased person's name, a face's encoding) stays on disk.
GALLERY_COMPACTION_MS = 3600 * 1000
#: Largest message a topic accepts; image events carry the image inline (see ingest).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


SUBMITTED = "images.submitted"
RECOGNIZE = "images.recognize"
FAILURES = "images.failures"
RETRY = "images.retry"
RESULTS = "images.results"
DEAD_LETTER = "images.dead-letter"
GALLERY = "gallery"
SCAN = "faces.scan"
SCANNED = "faces.scanned"

#: How long a scan request stays on ``faces.scan``: the API waits seconds for its answer
#: (SCAN_TIMEOUT_S), so a day is only room for an outage; the photo goes with it.
SCAN_RETENTION_MS = DAY_MS
#: How long a scan's answer stays on ``faces.scanned``: it carries a face's encoding and a
#: crop of the face (biometric data) and is read within seconds by the API replica that
#: asked, so it is kept no longer than an hour (a short segment, so that the hour holds).
SCANNED_RETENTION_MS = 3600 * 1000

_big = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}

TOPICS: tuple[Topic, ...] = (
    # The recognizers are one consumer group on images.submitted (first attempts) and
    # images.recognize (retries): the partition count caps how many recognizer processes
    # can work at once. Each image's bytes cross the broker once per run.
    Topic(SUBMITTED, 32, {"retention.ms": str(RETENTION_DAYS * DAY_MS), "cleanup.policy": "delete", **_big}),
    Topic(RECOGNIZE, 32, {"retention.ms": str(RETENTION_DAYS * DAY_MS), "cleanup.policy": "delete", **_big}),
    Topic(FAILURES, 12, {"retention.ms": str(RETENTION_DAYS * DAY_MS), "cleanup.policy": "delete", **_big}),
    Topic(RETRY, 12, {"retention.ms": str(RETENTION_DAYS * DAY_MS), "cleanup.policy": "delete", **_big}),
    # Results name no one (people are named only in the gallery and the read model), and
    # like every images.* topic they expire after RETENTION_DAYS: what an erasure cannot
    # delete from a log is gone from it within that time (README, "What is kept where").
    # That includes each face's encoding (biometric data, carried for review and
    # re-matches), as on images.recognize in a RematchRequested.
    Topic(RESULTS, 12, {"retention.ms": str(RETENTION_DAYS * DAY_MS), "cleanup.policy": "delete"}),
    Topic(DEAD_LETTER, 4, {"retention.ms": str(RETENTION_DAYS * DAY_MS), "cleanup.policy": "delete", **_big}),
    # Photos to scan for the API (enrollment, verification, detection), answered by the
    # recognizers' group. As many partitions as images.submitted, so that scans do not
    # lower the cap on recognizer pods (KEDA stops at the fewest partitions of their inputs).
    # The photo travels inline, like an image.
    Topic(
        SCAN,
        32,
        {
            "retention.ms": str(SCAN_RETENTION_MS),
            "segment.ms": str(SCAN_RETENTION_MS),
            "cleanup.policy": "delete",
            **_big,
        },
    ),
    # The answers, each read by the API replica that asked (it reads every partition from
    # its end, no consumer group). Biometric data: see SCANNED_RETENTION_MS.
    Topic(
        SCANNED,
        12,
        {
            "retention.ms": str(SCANNED_RETENTION_MS),
            "segment.ms": str(SCANNED_RETENTION_MS),
            "cleanup.policy": "delete",
            **_big,
        },
    ),
    # One partition keeps every gallery change in one order; compaction keeps the latest
    # value per key (a person, a face) forever, so a new replica loads it from offset 0.
    # Short segments and a compaction deadline: an erased person's name and encodings
    # leave the broker's disk within hours, not whenever a day-long segment fills.
    Topic(
        GALLERY,
        1,
        {
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": "0",
            "max.compaction.lag.ms": str(GALLERY_COMPACTION_MS),
            "segment.ms": str(GALLERY_COMPACTION_MS),
        },
    ),
)

BY_NAME = {t.name: t for t in TOPICS}

#: What the recognizers' consumer group reads: images to recognize, and photos the API
#: asks them to scan.
RECOGNIZER_INPUTS = (SUBMITTED, RECOGNIZE, SCAN)


def person_key(person_id: str) -> str:
    return f"person:{person_id}"


def face_key(person_id: str, face_id: str) -> str:
    return f"face:{person_id}:{face_id}"
