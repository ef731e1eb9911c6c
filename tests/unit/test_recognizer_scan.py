"""Face scans for the API (recognizer/scan.py and the recognizer's side of ``faces.scan``):
the scan functions on real photos, a request answered end to end without a broker, an
expired request skipped, and a photo that kills workers answered ``crashed``."""

from __future__ import annotations

import io
import uuid
from base64 import b64encode
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from recognizer.calibration import RuleSource
from recognizer.core import DetectionConfig
from recognizer.dispatch import Job, poison_outcome
from recognizer.gallery import Gallery, default_rule
from recognizer.scan import LARGEST, answer_scan, scan, scan_photo
from recognizer.worker import answer, process_scan
from schemas import codec, topics
from schemas import events as ev

OBAMA = "sample/examples/obama.jpg"
#: Two encodings of one face apart by less than this are the same scan, jitters aside
#: (two 10-jitter scans of one photo: 0.04-0.05 apart; two photos of one person: 0.3-0.5).
JITTER_SPREAD = 0.12


def _request(photo: bytes, kind: ev.ScanKind = ev.ScanKind.ENROLL, **options: object) -> ev.FaceScanRequested:
    now = datetime.now(UTC)
    return ev.FaceScanRequested(
        request_id=str(uuid.uuid4()),
        kind=kind,
        image_b64=b64encode(photo).decode("ascii"),
        reply_to="api-replica-1",
        requested_at=now,
        expires_at=now + timedelta(seconds=30),
        **options,  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------- the scan functions


def test_scan_enrolls_the_face_of_a_portrait(faces_dir: Path) -> None:
    scan = scan_photo((faces_dir / OBAMA).read_bytes())
    assert isinstance(scan, ev.ScanFaceFound)
    assert scan.faces_found == 1
    assert len(scan.encoding) == 128
    assert scan.model == DetectionConfig().model_info()


def blurred(photo: bytes, radius: float) -> bytes:
    """``photo`` blurred all over (Gaussian, ``radius`` px), as a JPEG."""
    from PIL import Image, ImageFilter

    out = io.BytesIO()
    Image.open(io.BytesIO(photo)).convert("RGB").filter(ImageFilter.GaussianBlur(radius)).save(out, "JPEG")
    return out.getvalue()


def test_a_sharp_portrait_makes_a_good_template(faces_dir: Path) -> None:
    scan = scan_photo((faces_dir / "sample/examples/obama-480p.jpg").read_bytes())
    assert isinstance(scan, ev.ScanFaceFound)
    assert scan.quality == []


def test_a_face_too_blurred_to_be_a_template_is_refused_unless_accepted(faces_dir: Path) -> None:
    photo = blurred((faces_dir / "sample/examples/obama-480p.jpg").read_bytes(), 8)
    refused = scan_photo(photo, 1)
    assert isinstance(refused, ev.ScanRejected)
    assert refused.reason == ev.POOR_TEMPLATE
    assert [(n.code, n.severity) for n in refused.quality] == [("blurred", "refuse")]
    assert refused.quality[0].value < refused.quality[0].limit
    assert "blurred" in refused.detail
    accepted = scan_photo(photo, 1, check_quality=False)
    assert isinstance(accepted, ev.ScanFaceFound)
    assert accepted.quality == refused.quality
    # Through a request, as the API asks.
    assert isinstance(scan(_request(photo)), ev.ScanRejected)
    assert isinstance(scan(_request(photo, check_quality=False)), ev.ScanFaceFound)


def test_a_small_face_is_enrolled_with_a_flag(faces_dir: Path) -> None:
    from PIL import Image

    image = Image.open(faces_dir / "sample/examples/obama-480p.jpg").convert("RGB")
    small = io.BytesIO()
    image.resize((image.width // 4, image.height // 4), Image.Resampling.BOX).save(small, "JPEG", quality=95)
    found = scan_photo(small.getvalue(), 1)
    assert isinstance(found, ev.ScanFaceFound)
    assert "too_small" in [n.code for n in found.quality]
    assert all(n.severity == "flag" for n in found.quality)


def test_scan_of_a_group_photo_asks_which_face_unless_told(faces_dir: Path) -> None:
    photo = (faces_dir / "sample" / "examples" / "two_people.jpg").read_bytes()
    several = scan_photo(photo)
    assert isinstance(several, ev.ScanSeveralFaces)
    assert len(several.boxes) == 2
    assert several.boxes[0].left < several.boxes[1].left  # left to right, as results number faces
    assert isinstance(scan_photo(photo, 1, 9), ev.ScanSeveralFaces)  # no face 9

    second = scan_photo(photo, 1, 1)
    assert isinstance(second, ev.ScanFaceFound)
    assert (second.index, second.box, second.faces_found) == (1, several.boxes[1], 2)
    assert second.crop.startswith(b"\xff\xd8")  # a JPEG crop for the person's page
    largest = scan_photo(photo, 1, LARGEST)
    assert isinstance(largest, ev.ScanFaceFound)
    area = [(b.right - b.left) * (b.bottom - b.top) for b in several.boxes]
    assert largest.index == area.index(max(area))


def test_scan_without_a_face(faces_dir: Path) -> None:
    assert scan_photo((faces_dir / "extras" / "no_face" / "dlib_horses.jpg").read_bytes()) == ev.ScanNoFace()


def test_scan_of_bytes_that_are_no_image_is_rejected_as_data() -> None:
    scan = scan_photo(b"hello, this is text")
    assert isinstance(scan, ev.ScanRejected)
    assert scan.reason == "not_an_image"


# ----------------------------------------------------------------------- the events


def test_a_request_and_its_answer_round_trip_through_the_codec(faces_dir: Path) -> None:
    request = _request((faces_dir / OBAMA).read_bytes(), num_jitters=3, face=LARGEST)
    env, decoded = codec.decode_as(codec.encode_data(request, source="api"), ev.FaceScanRequested)
    assert env.type == "facestream.face_scan.requested"
    assert decoded == request

    found = scan_photo((faces_dir / OBAMA).read_bytes(), 1, 0)
    assert isinstance(found, ev.ScanFaceFound)
    reply = answer_scan(request, "w").reply
    assert reply is not None
    _, back = codec.decode_as(codec.encode_data(reply, source="recognizer"), ev.FaceScanFinished)
    assert back == reply
    assert isinstance(back.outcome, ev.ScanFaceFound)
    assert back.outcome.crop == found.crop  # the JPEG crop crosses intact (base64)


@pytest.mark.parametrize("face", [-1, "smallest", True])
def test_a_request_names_a_face_by_index_or_largest_only(face: object) -> None:
    with pytest.raises(ValidationError, match="face"):
        _request(b"x", face=face)


# ----------------------------------------------------------------------- the recognizer's answer


def test_the_recognizer_answers_a_scan_request_with_the_encoding_scan_photo_computes(faces_dir: Path) -> None:
    """Exactly scan_photo's with one jitter; dlib's jitters are random, so with more the
    encodings of two scans of one photo differ a little (0.04-0.05 apart, measured)."""
    photo = (faces_dir / OBAMA).read_bytes()
    request = _request(photo)
    out = process_scan(codec.encode_data(request, source="api", trace_id="t" * 32), "w")

    assert (out.topic, out.label, out.scan_kind) == (topics.SCANNED, "face_found", "enroll")
    assert out.seconds is not None
    assert out.seconds > 0
    env, reply = codec.decode_as(out.payload, ev.FaceScanFinished)
    assert env.trace_id == "t" * 32
    assert (reply.request_id, reply.reply_to, reply.kind) == (request.request_id, "api-replica-1", "enroll")
    direct = scan_photo(photo)
    assert isinstance(reply.outcome, ev.ScanFaceFound)
    assert reply.outcome == direct

    jittered = answer_scan(_request(photo, num_jitters=10), "w").reply
    assert jittered is not None
    assert isinstance(jittered.outcome, ev.ScanFaceFound)
    assert jittered.outcome.model.num_jitters == 10
    assert np.linalg.norm(np.subtract(jittered.outcome.encoding, direct.encoding)) < JITTER_SPREAD


def test_a_worker_answers_what_comes_on_the_scan_topic_as_a_scan(faces_dir: Path) -> None:
    """Through :func:`recognizer.worker.answer`, as the worker process calls it."""

    class NoGallery:
        gallery = Gallery()

        def catch_up(self, version: int, timeout: float) -> bool:
            raise AssertionError("a scan does not wait for the gallery")

    request = _request((faces_dir / OBAMA).read_bytes(), ev.ScanKind.PROBE)
    value = codec.encode_data(request, source="api")
    out = answer(
        value, (topics.SCAN, 0, 0), NoGallery(), RuleSource(default_rule(), None), DetectionConfig(), "w"
    )
    assert (out.topic, out.label, out.scan_kind) == (topics.SCANNED, "probe", "probe")


def test_probe_and_detect_requests_are_answered_as_asked(faces_dir: Path) -> None:
    photo = (faces_dir / "sample/examples/two_people.jpg").read_bytes()
    probe = answer_scan(_request(photo, ev.ScanKind.PROBE, face=1), "w")
    assert probe.reply is not None
    assert isinstance(probe.reply.outcome, ev.ScanProbe)
    assert probe.reply.outcome.index == 1
    detect = answer_scan(_request(photo, ev.ScanKind.DETECT, encodings=True), "w")
    assert detect.reply is not None
    assert isinstance(detect.reply.outcome, ev.ScanDetection)
    assert [f.encoding is not None for f in detect.reply.outcome.faces] == [True, True]
    bad = answer_scan(_request(b"text, not a photo", ev.ScanKind.DETECT), "w")
    assert bad.reply is not None
    assert isinstance(bad.reply.outcome, ev.ScanRejected)


def test_a_request_read_after_it_expired_is_not_scanned(faces_dir: Path) -> None:
    request = _request((faces_dir / OBAMA).read_bytes())
    late = answer_scan(request, "w", now=request.expires_at + timedelta(milliseconds=1))
    assert (late.reply, late.outcome) == (None, "expired")

    expired = request.model_copy(update={"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    out = process_scan(codec.encode_data(expired, source="api"), "w")
    assert (out.topic, out.label, out.scan_kind) == (None, "expired", "enroll")  # nothing published


def test_a_message_on_the_scan_topic_that_is_no_request_is_passed_over() -> None:
    out = process_scan(b"not an event", "w")
    assert (out.topic, out.label) == (None, "skipped")


def test_a_photo_that_kills_workers_is_answered_crashed() -> None:
    request = _request(b"a photo that kills dlib")
    job = Job(topics.SCAN, 3, 7, request.request_id.encode(), codec.encode_data(request, source="api"))
    topic, payload = poison_outcome(job, crashes=2, worker="w")
    assert topic == topics.SCANNED
    _, reply = codec.decode_as(payload, ev.FaceScanFinished)
    assert (reply.request_id, reply.reply_to) == (request.request_id, "api-replica-1")
    assert isinstance(reply.outcome, ev.ScanCrashed)
    assert "died 2 times" in reply.outcome.detail
