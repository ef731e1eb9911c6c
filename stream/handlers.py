"""The stream's handlers: one message in, a :class:`~stream.effects.Plan` out; no I/O.

Like :func:`recognizer.worker.process_request`, each is a plain function tested without
a broker or a database. :mod:`stream.delivery` carries the plans out; :mod:`stream.app`
wires them to topics.

==================  =====================================  ==================================
topic               handler                                effects
==================  =====================================  ==================================
images.submitted    :func:`on_submitted`                   the pending row (+ bytes for re-runs)
images.failures     :func:`on_failure`                     a retry due later, or dead letter +
                                                           ImageFailed
images.retry        :func:`on_legacy_retry`                (older stream workers' retries) a
                                                           retry due at its ``not_before``
images.results      :func:`on_result`                      the final status and faces
gallery             :func:`on_gallery`                     people and enrolled faces
==================  =====================================  ==================================

An event that is not valid is dead-lettered with the reason; an unknown type or a newer
version is skipped (a newer producer's event: not ours to judge).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel

from schemas import codec, topics
from schemas import events as ev
from schemas.codec import UnknownEvent
from schemas.envelope import Envelope
from schemas.errors import SchemaError
from schemas.lifecycle import Status, status_of
from stream import projector, retries
from stream.effects import DeadLetter, Finished, Incoming, Plan, Publish, Skipped, Store
from stream.retry import GiveUp, decide

M = TypeVar("M", bound=BaseModel)
SOURCE = "stream"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_delay_s: float
    max_delay_s: float


def _decode(msg: Incoming, model: type[M]) -> tuple[Envelope[Any], M] | Plan:
    """The event, or the plan for a message that is not one (skip or dead-letter)."""
    try:
        return codec.decode_as(msg.value, model)
    except UnknownEvent as exc:
        return Plan((Skipped(str(exc)),))
    except SchemaError as exc:
        return Plan((DeadLetter(ev.FailureReason.INVALID_EVENT, str(exc)),))


def on_submitted(msg: Incoming, keep_bytes: bool) -> Plan:
    """A submitted image (or a re-run) becomes a pending row, with its bytes for re-runs."""
    decoded = _decode(msg, ev.ImageSubmitted)
    if isinstance(decoded, Plan):
        return decoded
    env, image = decoded
    write = partial(
        projector.image_submitted,
        e=image,
        trace_id=env.trace_id,
        keep_bytes=keep_bytes,
        partition=msg.partition,
        offset=msg.offset,
    )
    return Plan(
        (Store("image_submitted", write),),
        request=ev.RecognitionRequested(image=image),
        trace_id=env.trace_id,
        image_id=image.image_id,
    )


def on_failure(msg: Incoming, now: datetime, policy: RetryPolicy) -> Plan:
    """A failed attempt: retried later with backoff if it may succeed then; otherwise the
    image fails for good (dead letter with the request, then ImageFailed on the results)."""
    decoded = _decode(msg, ev.RecognitionFailed)
    if isinstance(decoded, Plan):
        return decoded
    env, failure = decoded
    decision = decide(failure, now, policy.max_attempts, policy.base_delay_s, policy.max_delay_s)
    if isinstance(decision, GiveUp) or failure.request is None:
        return give_up(failure, str(decision), now, env.trace_id)
    again = failure.request.model_copy(
        update={"attempt": decision.attempt, "not_before": decision.not_before, "last_error": failure.detail}
    )
    write = partial(
        retries.schedule,
        image_id=failure.image_id,
        run=failure.run,
        attempt=decision.attempt,
        due_at=decision.not_before,
        request=codec.encode_data(again, source=SOURCE, trace_id=env.trace_id),
    )
    return Plan(
        (Store("retry_scheduled", write),),
        request=failure.request,
        trace_id=env.trace_id,
        image_id=failure.image_id,
    )


def give_up(failure: ev.RecognitionFailed, why: str, now: datetime, trace_id: str) -> Plan:
    reason = ev.FailureReason.RETRIES_EXHAUSTED if failure.retryable else failure.reason
    detail = f"{failure.detail} ({why})" if failure.retryable else failure.detail
    final = ev.ImageFailed(
        image_id=failure.image_id,
        run=failure.run,
        attempts=failure.attempt,
        reason=reason,
        detail=detail,
        failed_at=now,
    )
    value = codec.encode_data(final, source=SOURCE, trace_id=trace_id)
    return Plan(
        (DeadLetter(reason, detail), Publish(topics.RESULTS, failure.image_id, value, "final")),
        request=failure.request,
        trace_id=trace_id,
        image_id=failure.image_id,
    )


def on_legacy_retry(msg: Incoming) -> Plan:
    """A retry on ``images.retry`` (published by a stream worker older than the retry
    table, during a rolling upgrade): due at its ``not_before``, like any other."""
    decoded = _decode(msg, ev.RecognitionRequested)
    if isinstance(decoded, Plan):
        return decoded
    env, request = decoded
    image = request.image
    write = partial(
        retries.schedule,
        image_id=image.image_id,
        run=image.run,
        attempt=request.attempt,
        due_at=request.not_before or image.submitted_at,
        request=msg.value or b"",
    )
    return Plan(
        (Store("retry_scheduled", write),), request=request, trace_id=env.trace_id, image_id=image.image_id
    )


def on_result(msg: Incoming, now: datetime) -> Plan:
    """A final result: the image's status and faces (the newest run wins)."""
    try:
        env = codec.decode(msg.value)
    except UnknownEvent as exc:
        return Plan((Skipped(str(exc)),))
    except SchemaError as exc:
        return Plan((DeadLetter(ev.FailureReason.INVALID_EVENT, str(exc)),))
    data = env.data
    if isinstance(data, ev.FacesRecognized):
        write = partial(projector.faces_recognized, e=data, finished_at=now)
        done = Finished(status_of(data.outcome), data.submitted_at)
        return Plan((Store("faces_recognized", write), done), trace_id=env.trace_id, image_id=data.image_id)
    if isinstance(data, ev.ImageFailed):
        write = partial(projector.image_failed, e=data)
        done = Finished(Status.FAILED)
        return Plan((Store("image_failed", write), done), trace_id=env.trace_id, image_id=data.image_id)
    return Plan((Skipped(f"{env.type} is not a result"),))


def on_gallery(msg: Incoming) -> Plan:
    """People and enrolled faces; a tombstone (no value) erases the person or the face."""
    key = (msg.key or b"").decode("utf-8", "replace")
    if msg.value is None:
        return Plan((Store("gallery_tombstone", partial(projector.gallery_tombstone, key=key)),))
    try:
        data = codec.decode(msg.value).data
    except SchemaError as exc:
        # The gallery is compacted and read by every recognizer from offset 0: a record
        # there that no one can read is skipped, as the recognizers skip it.
        return Plan((Skipped(str(exc)),))
    if isinstance(data, ev.PersonEnrolled):
        return Plan((Store("person_enrolled", partial(projector.person_enrolled, e=data)),))
    if isinstance(data, ev.FaceEnrolled):
        return Plan((Store("face_enrolled", partial(projector.face_enrolled, e=data)),))
    return Plan((Skipped(f"{type(data).__name__} does not belong on the gallery"),))
