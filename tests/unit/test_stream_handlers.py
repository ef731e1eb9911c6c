"""The stream's pure handlers: one message in, the plan of its effects out (no broker)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas import codec, topics
from schemas import events as ev
from schemas.lifecycle import FINAL, RERUNNABLE, Status, status_of
from stream import handlers, reconciler
from stream.delivery import dead_letter
from stream.effects import DeadLetter, Finished, Incoming, Plan, Publish, Skipped, Store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "schemas/examples"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = handlers.RetryPolicy(max_attempts=4, base_delay_s=1.0, max_delay_s=60.0)


def _msg(topic: str, value: bytes | None, key: bytes | None = b"k") -> Incoming:
    return Incoming(topic, 3, 42, key, value)


def _example(name: str) -> bytes:
    return (EXAMPLES / f"facestream.{name}.v1.json").read_bytes()


def _kinds(plan: Plan) -> list[type]:
    return [type(e) for e in plan.effects]


def test_a_submitted_image_becomes_its_pending_row_with_where_it_lies() -> None:
    plan = handlers.on_submitted(_msg(topics.SUBMITTED, _example("image.submitted")), keep_bytes=True)
    assert _kinds(plan) == [Store]
    store = plan.effects[0]
    assert isinstance(store, Store)
    assert store.label == "image_submitted"
    assert store.write.keywords["partition"] == 3  # type: ignore[attr-defined]
    assert store.write.keywords["offset"] == 42  # type: ignore[attr-defined]
    assert plan.request is not None
    assert plan.image_id == plan.request.image.image_id


def test_an_invalid_submission_is_dead_lettered_and_an_unknown_type_skipped() -> None:
    bad = handlers.on_submitted(_msg(topics.SUBMITTED, b"this is no event"), keep_bytes=True)
    assert bad.effects == (DeadLetter(ev.FailureReason.INVALID_EVENT, bad.effects[0].detail),)  # type: ignore[union-attr]
    newer = _example("image.submitted").replace(b'"version": 1', b'"version": 99')
    assert _kinds(handlers.on_submitted(_msg(topics.SUBMITTED, newer), keep_bytes=True)) == [Skipped]


def test_a_transient_failure_is_scheduled_not_waited_for() -> None:
    plan = handlers.on_failure(_msg(topics.FAILURES, _example("recognition.failed")), NOW, POLICY)
    assert _kinds(plan) == [Store]
    store = plan.effects[0]
    assert isinstance(store, Store)
    assert store.label == "retry_scheduled"
    kw = store.write.keywords  # type: ignore[attr-defined]
    assert kw["attempt"] == 2
    assert kw["due_at"] == NOW + timedelta(seconds=1)
    _, again = codec.decode_as(kw["request"], ev.RecognitionRequested)
    assert again.attempt == 2
    assert again.not_before == NOW + timedelta(seconds=1)


def _failure(**changes: object) -> bytes:
    env = codec.decode(_example("recognition.failed"))
    data = env.data.model_copy(update=changes)
    return codec.encode(env.model_copy(update={"data": data}))


def test_bad_input_fails_the_image_for_good_with_a_dead_letter_holding_the_request() -> None:
    value = _failure(retryable=False, reason=ev.FailureReason.CORRUPT_IMAGE)
    plan = handlers.on_failure(_msg(topics.FAILURES, value), NOW, POLICY)
    assert _kinds(plan) == [DeadLetter, Publish]
    letter, final = plan.effects
    assert isinstance(letter, DeadLetter)
    assert letter.reason == ev.FailureReason.CORRUPT_IMAGE
    assert isinstance(final, Publish)
    assert final.topic == topics.RESULTS
    _, failed = codec.decode_as(final.value, ev.ImageFailed)
    assert failed.reason == ev.FailureReason.CORRUPT_IMAGE
    assert dead_letter(letter, plan, _msg(topics.FAILURES, value)).request == plan.request is not None


def test_retries_run_out_as_retries_exhausted() -> None:
    plan = handlers.on_failure(_msg(topics.FAILURES, _failure(attempt=4)), NOW, POLICY)
    letter = plan.effects[0]
    assert isinstance(letter, DeadLetter)
    assert letter.reason == ev.FailureReason.RETRIES_EXHAUSTED


def test_a_legacy_retry_is_due_at_its_not_before() -> None:
    env = codec.decode(_example("recognition.requested"))
    request = env.data.model_copy(update={"attempt": 3, "not_before": NOW})
    value = codec.encode(env.model_copy(update={"data": request}))
    plan = handlers.on_legacy_retry(_msg(topics.RETRY, value))
    store = plan.effects[0]
    assert isinstance(store, Store)
    assert store.write.keywords["due_at"] == NOW  # type: ignore[attr-defined]
    assert store.write.keywords["request"] == value  # type: ignore[attr-defined]


def test_results_store_the_status_and_count_it() -> None:
    plan = handlers.on_result(_msg(topics.RESULTS, _example("faces.recognized")), NOW)
    assert _kinds(plan) == [Store, Finished]
    failed = handlers.on_result(_msg(topics.RESULTS, _example("image.failed")), NOW)
    assert failed.effects[1] == Finished(Status.FAILED)
    assert _kinds(handlers.on_result(_msg(topics.RESULTS, b"{"), NOW)) == [DeadLetter]
    assert _kinds(handlers.on_result(_msg(topics.RESULTS, _example("person.enrolled")), NOW)) == [Skipped]


def test_gallery_records_and_tombstones() -> None:
    person = handlers.on_gallery(_msg(topics.GALLERY, _example("person.enrolled")))
    assert [e.label for e in person.effects if isinstance(e, Store)] == ["person_enrolled"]
    gone = handlers.on_gallery(_msg(topics.GALLERY, None, b"person:x"))
    assert [e.label for e in gone.effects if isinstance(e, Store)] == ["gallery_tombstone"]
    assert _kinds(handlers.on_gallery(_msg(topics.GALLERY, b"junk"))) == [Skipped]


def test_an_unparseable_message_is_dead_lettered_with_its_text() -> None:
    plan = handlers.on_result(_msg(topics.RESULTS, b"not json at all"), NOW)
    letter = plan.effects[0]
    assert isinstance(letter, DeadLetter)
    parked = dead_letter(letter, plan, _msg(topics.RESULTS, b"not json at all"))
    assert parked.raw == "not json at all"
    assert parked.request is None
    assert parked.offset == 42


def test_the_lifecycle_is_the_one_the_database_enforces() -> None:
    sql = "\n".join(p.read_text() for p in sorted((ROOT / "common/migrations").glob("*.sql")))
    check = re.search(r"status\s+text\s+NOT NULL CHECK \(status IN \(([^)]*)\)\)", sql)
    assert check is not None
    assert {w.strip(" '") for w in check.group(1).split(",")} == {s.value for s in Status}
    assert {status_of(o) for o in ev.Outcome} <= FINAL
    assert Status.PENDING not in FINAL


def test_the_api_offers_re_runs_from_the_lifecycle_s_rerunnable_statuses() -> None:
    from api.models import RerunnableStatus

    assert {s.value for s in RerunnableStatus} == {s.value for s in RERUNNABLE}


def test_the_reconciler_waits_until_the_recognizers_are_past_an_image() -> None:
    row = {"kafka_partition": 3, "kafka_offset": 42}
    assert reconciler.past_the_recognizers(row, {3: 43})
    assert not reconciler.past_the_recognizers(row, {3: 42})  # still queued for them
    assert not reconciler.past_the_recognizers(row, {})  # no commit read: decide nothing
    assert not reconciler.past_the_recognizers({"kafka_partition": None, "kafka_offset": None}, {3: 99})


def test_a_resubmission_keeps_the_id_the_run_and_the_bytes() -> None:
    _, image = codec.decode_as(_example("image.submitted"), ev.ImageSubmitted)
    row = {
        "id": image.image_id,
        "run": 2,
        "filename": "a.jpg",
        "content_type": "image/jpeg",
        "size_bytes": 3,
        "sha256": image.sha256,
        "source": None,
        "camera": "door",
        "metadata": {"k": "v"},
        "submitted_at": NOW,
        "content": b"abc",
    }
    again = reconciler.resubmission(row)
    assert (again.image_id, again.run, again.image_b64, again.camera) == (image.image_id, 2, "YWJj", "door")
