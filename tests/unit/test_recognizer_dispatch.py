"""The recognizer pool's local queue and in-order offsets (recognizer.dispatch), no broker."""

from __future__ import annotations

import threading
from pathlib import Path

from recognizer.dispatch import Job, JobQueue, Offsets, poison_outcome
from schemas import codec, topics
from schemas import events as ev

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas/examples"


def _job(offset: int, partition: int = 0, value: bytes = b"x") -> Job:
    return Job(topics.SUBMITTED, partition, offset, b"k", value)


def _stored(offsets: Offsets) -> list[tuple[int, int]]:
    return [(tp.partition, tp.offset) for tp in offsets.ready()]


def test_offsets_are_stored_in_order_once_everything_before_is_done() -> None:
    offsets = Offsets()
    jobs = [_job(o) for o in (10, 11, 12)]
    entries = [offsets.fetched(j) for j in jobs]
    offsets.done(jobs[2], entries[2])  # the last one first: nothing may be committed
    offsets.done(jobs[1], entries[1])
    assert _stored(offsets) == []
    offsets.done(jobs[0], entries[0])
    assert _stored(offsets) == [(0, 13)]
    assert _stored(offsets) == []  # handed out once


def test_a_revoked_partition_is_forgotten() -> None:
    offsets = Offsets()
    job = _job(5, partition=3)
    entry = offsets.fetched(job)
    offsets.forget({(topics.SUBMITTED, 3)})
    offsets.done(job, entry)
    assert _stored(offsets) == []


def test_a_job_given_back_after_a_crash_is_next() -> None:
    queue = JobQueue(capacity=3)
    for o in (1, 2):
        assert queue.put(_job(o))
    first = queue.get(timeout=1)
    assert first is not None
    queue.give_back(first)
    again = queue.get(timeout=1)
    assert again is not None
    assert again.offset == 1


def test_a_full_queue_makes_the_fetcher_wait_and_closing_releases_it() -> None:
    queue = JobQueue(capacity=1)
    assert queue.put(_job(1))
    results: list[bool] = []
    fetcher = threading.Thread(target=lambda: results.append(queue.put(_job(2))))
    fetcher.start()
    fetcher.join(timeout=0.3)
    assert fetcher.is_alive()  # waiting for room
    queue.close()
    fetcher.join(timeout=5)
    assert results == [False]
    assert queue.get(timeout=0.1) is None


def test_revoked_jobs_leave_the_queue() -> None:
    queue = JobQueue(capacity=5)
    for o, p in ((1, 0), (2, 1), (3, 0)):
        queue.put(_job(o, partition=p))
    queue.drop({(topics.SUBMITTED, 0)})
    job = queue.get(timeout=1)
    assert job is not None
    assert (job.partition, len(queue)) == (1, 0)


def test_an_image_that_kills_workers_fails_for_good_with_its_request() -> None:
    value = (EXAMPLES / "facestream.image.submitted.v1.json").read_bytes()
    topic, payload = poison_outcome(_job(7, value=value), crashes=2, worker="w")
    assert topic == topics.FAILURES
    _, failed = codec.decode_as(payload, ev.RecognitionFailed)
    assert not failed.retryable
    assert failed.request is not None
    assert failed.reason == ev.FailureReason.INTERNAL_ERROR


def test_a_poison_message_that_is_no_request_is_dead_lettered() -> None:
    topic, payload = poison_outcome(_job(7, value=b"garbage"), crashes=2, worker="w")
    assert topic == topics.DEAD_LETTER
    _, dead = codec.decode_as(payload, ev.ImageDeadLettered)
    assert dead.raw == "garbage"
