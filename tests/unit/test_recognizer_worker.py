"""``recognizer.worker``: results carry each face's encoding, and a ``RematchRequested``
matches stored encodings again (no image, no detection), only with a gallery recent
enough; real encodings from the shared photos."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from recognizer import worker
from recognizer.calibration import RuleSource
from recognizer.core import DetectionConfig, find_faces, largest_face, load_image
from recognizer.gallery import Gallery, default_rule
from schemas import codec, topics
from schemas import encoding as enc
from schemas import events as ev

CFG = DetectionConfig()
RULE = default_rule()
ORIGIN = (topics.RECOGNIZE, 3, 17)
OBAMA, BIDEN = str(uuid.uuid4()), str(uuid.uuid4())


def _encoding(faces_dir: Path, name: str) -> npt.NDArray[np.float64]:
    face = largest_face(find_faces(load_image((faces_dir / "sample/examples" / name).read_bytes()), CFG))
    assert face is not None
    return face.encoding


@pytest.fixture(scope="module")
def two_people(faces_dir: Path) -> ev.FacesRecognized:
    """two_people.jpg (Obama on the left, Biden on the right) recognized with an empty
    gallery: both unknown, each with its encoding."""
    data = (faces_dir / "sample/examples/two_people.jpg").read_bytes()
    submitted = ev.ImageSubmitted(
        image_id=str(uuid.uuid4()),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        image_b64=base64.b64encode(data).decode(),
        submitted_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    value = codec.encode_data(submitted, source="test")
    out = worker.process_request(value, (topics.SUBMITTED, 0, 0), Gallery(), RULE, CFG, "w")
    assert out.topic == topics.RESULTS
    result = codec.decode(out.payload).data
    assert isinstance(result, ev.FacesRecognized)
    assert result.outcome == ev.Outcome.UNKNOWN_FACES
    assert len(result.faces) == 2
    return result


@pytest.fixture(scope="module")
def gallery(faces_dir: Path) -> Gallery:
    """Obama and Biden enrolled from other photos of them; applied up to offset 9."""
    g = Gallery()
    for pid, name in [(OBAMA, "obama.jpg"), (BIDEN, "biden.jpg")]:
        g.add_face(pid, str(uuid.uuid4()), _encoding(faces_dir, name))
        g.set_person(pid, pid)
    g.version = 10
    return g


def _rematch(result: ev.FacesRecognized, *, gallery_version: int = 10, drop: tuple[int, ...] = ()) -> bytes:
    """A re-match of ``result``'s faces (those in ``drop`` without their encoding)."""
    event = ev.RematchRequested(
        image_id=result.image_id,
        run=result.run + 1,
        faces=[
            ev.FaceToMatch(index=f.index, box=f.box, encoding=None if f.index in drop else f.encoding)
            for f in result.faces
        ],
        width=result.width,
        height=result.height,
        gallery_version=gallery_version,
        model=ev.ModelInfo(detection_max_side=640, num_jitters=2),
        submitted_at=result.submitted_at,
        requested_at=datetime.now(UTC),
        reason="review: named",
    )
    return codec.encode_data(event, source="test", trace_id="ab" * 16)


def _result(out: worker.Processed) -> ev.FacesRecognized:
    assert out.topic == topics.RESULTS, out
    env = codec.decode(out.payload)
    assert isinstance(env.data, ev.FacesRecognized)
    return env.data


def test_results_carry_each_faces_encoding_at_float32_precision(
    faces_dir: Path, two_people: ev.FacesRecognized
) -> None:
    left = _encoding(faces_dir, "two_people.jpg")  # the largest face, whichever it is
    encodings = [f.encoding for f in two_people.faces]
    assert all(e is not None and len(e) == 128 for e in encodings)
    stored = [enc.pack(e) for e in encodings if e is not None]
    assert enc.pack(left) in stored  # the very encoding the recognizer computed, as float32
    assert all(enc.unpack(s) == e for s, e in zip(stored, encodings, strict=True))
    # short numbers: a face's encoding is about 1.7 KB of JSON, not 2.6
    assert len(orjson.dumps(encodings[0])) < 1800


def test_a_rematch_names_the_enrolled_face_and_keeps_the_faces_as_they_were(
    two_people: ev.FacesRecognized, gallery: Gallery
) -> None:
    out = worker.process_request(_rematch(two_people), ORIGIN, gallery, RULE, CFG, "w-2")
    result = _result(out)
    assert [f.person_id for f in result.faces] == [OBAMA, BIDEN]
    assert result.outcome == ev.Outcome.IDENTIFIED
    assert out.label == "identified"
    assert (result.image_id, result.run, result.attempt) == (two_people.image_id, two_people.run + 1, 1)
    assert [(f.index, f.box, f.encoding) for f in result.faces] == [
        (f.index, f.box, f.encoding) for f in two_people.faces
    ]
    assert all(f.distance is not None and f.distance < RULE.tolerance for f in result.faces)
    assert (result.width, result.height) == (two_people.width, two_people.height)
    assert result.model == ev.ModelInfo(detection_max_side=640, num_jitters=2)  # the encodings' model
    assert (result.gallery_version, result.gallery_size) == (10, 2)
    assert set(result.timings_ms) == {"match"}
    assert (result.worker, result.submitted_at) == ("w-2", two_people.submitted_at)
    assert codec.decode(out.payload).trace_id == "ab" * 16


def test_a_face_without_an_encoding_stays_unknown(two_people: ev.FacesRecognized, gallery: Gallery) -> None:
    result = _result(worker.process_request(_rematch(two_people, drop=(1,)), ORIGIN, gallery, RULE, CFG, "w"))
    assert [f.person_id for f in result.faces] == [OBAMA, None]
    assert (result.faces[1].distance, result.faces[1].second_distance, result.faces[1].encoding) == (
        None,
        None,
        None,
    )
    assert result.outcome == ev.Outcome.IDENTIFIED

    nobody = _result(
        worker.process_request(_rematch(two_people, drop=(0, 1)), ORIGIN, gallery, RULE, CFG, "w")
    )
    assert [f.person_id for f in nobody.faces] == [None, None]
    assert nobody.outcome == ev.Outcome.UNKNOWN_FACES


def test_a_rematch_with_strangers_only_or_no_face(two_people: ev.FacesRecognized, gallery: Gallery) -> None:
    strangers = Gallery()
    strangers.add_face(str(uuid.uuid4()), str(uuid.uuid4()), np.full(128, 0.3))
    strangers.version = 10
    result = _result(worker.process_request(_rematch(two_people), ORIGIN, strangers, RULE, CFG, "w"))
    assert result.outcome == ev.Outcome.UNKNOWN_FACES
    assert all(f.person_id is None and f.distance is not None for f in result.faces)

    empty = two_people.model_copy(update={"faces": []})
    none = worker.process_request(_rematch(empty), ORIGIN, gallery, RULE, CFG, "w")
    assert _result(none).outcome == ev.Outcome.NO_FACE
    assert none.label == "no_face"


def test_a_gallery_older_than_required_does_not_match(
    two_people: ev.FacesRecognized, gallery: Gallery
) -> None:
    value = _rematch(two_people, gallery_version=11)
    out = worker.process_request(value, ORIGIN, gallery, RULE, CFG, "w")
    assert (out.topic, out.label, out.wait_for_gallery) == (None, "behind", 11)
    # told to match with what it has (the wait timed out): it does, and says which gallery
    late = _result(worker.process_request(value, ORIGIN, gallery, RULE, CFG, "w", stale_gallery_ok=True))
    assert late.gallery_version == 10
    assert [f.person_id for f in late.faces] == [OBAMA, BIDEN]


class _Feed:
    """A gallery feed that reaches ``reaches`` when asked to catch up (or stays where it is)."""

    def __init__(self, gallery: Gallery, reaches: int) -> None:
        self.gallery, self.reaches = gallery, reaches
        self.asked: list[tuple[int, float]] = []

    def catch_up(self, version: int, timeout: float) -> bool:
        self.asked.append((version, timeout))
        self.gallery.version = max(self.gallery.version, self.reaches)
        return self.gallery.version >= version


@pytest.mark.parametrize("reaches", [12, 10], ids=["caught-up", "timed-out"])
def test_answer_waits_for_the_gallery_then_matches(
    two_people: ev.FacesRecognized, gallery: Gallery, reaches: int, caplog: pytest.LogCaptureFixture
) -> None:
    saved = gallery.version
    feed = _Feed(gallery, reaches)
    try:
        out = worker.answer(
            _rematch(two_people, gallery_version=12), ORIGIN, feed, RuleSource(RULE, None), CFG, "w"
        )
    finally:
        gallery.version = saved
    assert feed.asked == [(12, worker.GALLERY_CATCH_UP_S)]
    assert _result(out).gallery_version == reaches
    assert ("gallery" in caplog.text) == (reaches < 12)  # a timeout is logged


def test_a_rematch_on_the_submissions_topic_is_passed_over(
    two_people: ev.FacesRecognized, gallery: Gallery
) -> None:
    """The stream worker dead-letters what is not an ImageSubmitted there."""
    out = worker.process_request(_rematch(two_people), (topics.SUBMITTED, 0, 1), gallery, RULE, CFG, "w")
    assert (out.topic, out.label) == (None, "skipped")


def test_a_recognizer_that_does_not_know_rematches_passes_them_over(
    two_people: ev.FacesRecognized, gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rolling upgrade: an older recognizer's codec has no such type (UnknownEvent)."""
    value = _rematch(two_people)
    monkeypatch.delitem(codec.EVENT_TYPES, "facestream.rematch.requested")
    out = worker.process_request(value, ORIGIN, gallery, RULE, CFG, "w")
    assert (out.topic, out.label) == (None, "skipped")


def test_a_failing_match_dead_letters_the_rematch_and_leaves_the_image_alone(
    two_people: ev.FacesRecognized, gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not RecognitionFailed: the stream would fail the image, whose stored result is fine."""

    def broken(*_: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(gallery, "match", broken)
    out = worker.process_request(_rematch(two_people), ORIGIN, gallery, RULE, CFG, "w")
    assert (out.topic, out.label) == (topics.DEAD_LETTER, "error")
    dead = codec.decode(out.payload).data
    assert isinstance(dead, ev.ImageDeadLettered)
    assert dead.reason == ev.FailureReason.INTERNAL_ERROR
    assert (dead.topic, dead.partition, dead.offset) == ORIGIN
    assert dead.raw is not None
    assert two_people.image_id in dead.raw


# --------------------------------------------------------------------------- the gallery feed


class _Message:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def key(self) -> bytes:
        return b"person:x"

    def value(self) -> bytes:
        return b"not json"  # skipped, but its offset counts

    def offset(self) -> int:
        return self._offset


class _Consumer:
    """Hands out the gallery topic's messages a few per call, as a slow broker would."""

    def __init__(self, end: int) -> None:
        self.end, self.next, self.calls = end, 0, 0

    def consume(self, num_messages: int, timeout: float) -> list[_Message]:
        self.calls += 1
        batch = [_Message(o) for o in range(self.next, min(self.end, self.next + 2))]
        self.next += len(batch)
        return batch

    def close(self) -> None:
        pass


def _feed(end: int) -> tuple[worker.GalleryFeed, _Consumer]:
    feed = worker.GalleryFeed.__new__(worker.GalleryFeed)
    consumer = _Consumer(end)
    feed.gallery, feed._consumer = Gallery(), consumer  # type: ignore[assignment]
    return feed, consumer


def test_catch_up_reads_the_gallery_until_the_version_asked_for() -> None:
    feed, consumer = _feed(end=7)
    assert feed.catch_up(5, timeout=30)
    assert feed.gallery.version in (5, 6)  # stops once there, not at the end of the topic
    assert feed.catch_up(5, timeout=30)  # already there: no read
    assert consumer.calls == 3


def test_catch_up_gives_up_after_the_timeout() -> None:
    feed, _ = _feed(end=3)
    assert not feed.catch_up(9, timeout=0.05)
    assert feed.gallery.version == 3
