"""Verification and detection, without the HTTP layer: the decision (api/faces.py) agrees
with the recognizers' rule, and the scan functions the recognizers answer /v1/verify and
/v1/detect with (recognizer/scan.py) find what the recognizers find."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr, ValidationError

from api.faces import face_choice, stored_encodings, verdict
from api.models import LandmarksPublic
from api.settings import ApiSettings
from common.auth import SCOPES, KeyCreate
from recognizer.core import DetectionConfig, decode_image, find_faces, scaled_box
from recognizer.gallery import DEFAULT_AGGREGATION, DEFAULT_TOLERANCE, Gallery, default_rule
from recognizer.scan import LARGEST, detect_photo, probe_photo
from schemas.encoding import DIM, EncodingError, floats, pack
from schemas.events import Box, ScanDetection, ScanNoFace, ScanProbe, ScanRejected, ScanSeveralFaces

KEY = SecretStr("fsk-unit-admin-key-not-secret")


def _faces(seed: int, n: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(scale=0.09, size=(n, DIM))  # norm about 1, like dlib's encodings
    return [[float(x) for x in v] for v in vectors]


def _inside(point: tuple[int, int], box: Box, margin: int = 0) -> bool:
    x, y = point
    return box.left - margin <= x <= box.right + margin and box.top - margin <= y <= box.bottom + margin


# ----------------------------------------------------------------------------- the decision


def test_two_photos_are_compared_by_euclidean_distance() -> None:
    a, b = _faces(1, 2)
    decided = verdict(a, [b], tolerance=2.0, aggregation="centroid")
    assert decided.distance == pytest.approx(np.linalg.norm(np.subtract(a, b)), rel=1e-5)
    assert decided.same_person


@pytest.mark.parametrize("aggregation", ["centroid", "min", "mean"])
def test_a_person_is_aggregated_as_the_recognizers_do(aggregation: str) -> None:
    probe, *enrolled = _faces(2, 4)
    expected = {
        "centroid": np.linalg.norm(np.asarray(probe) - np.mean(enrolled, axis=0)),
        "min": min(np.linalg.norm(np.subtract(probe, e)) for e in enrolled),
        "mean": np.mean([np.linalg.norm(np.subtract(probe, e)) for e in enrolled]),
    }[aggregation]
    assert verdict(probe, enrolled, 0.5, aggregation).distance == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("aggregation", ["centroid", "min", "mean"])
def test_same_person_exactly_when_a_recognizer_would_name_them(aggregation: str) -> None:
    """A gallery holding only this person: the recognizer names the probe iff verify says same."""
    probes = _faces(3, 20)
    enrolled = _faces(4, 3)
    gallery = Gallery(ann_threshold=0)
    for i, e in enumerate(enrolled):
        gallery.add_face("p", f"f{i}", e)
    distances = [verdict(p, enrolled, 1.0, aggregation).distance for p in probes]
    tolerance = float(np.median(distances))  # half of them in, half out
    rule = default_rule(tolerance=tolerance, aggregation=aggregation)
    for probe, match in zip(probes, gallery.match(np.asarray(probes), rule), strict=True):
        decided = verdict(probe, enrolled, tolerance, aggregation)
        assert decided.same_person == (match.person_id == "p")
        assert round(decided.distance, 4) == match.distance


def test_the_tolerance_is_inclusive_and_an_unknown_aggregation_or_no_face_is_refused() -> None:
    a, b = _faces(5, 2)
    d = verdict(a, [b], 2.0, "centroid").distance
    assert verdict(a, [b], d, "centroid").same_person
    assert not verdict(a, [b], d * 0.999, "centroid").same_person
    with pytest.raises(ValueError, match="aggregation"):
        verdict(a, [b], 0.5, "median")
    with pytest.raises(ValueError, match="at least one"):
        verdict(a, [], 0.5, "centroid")


def test_stored_encodings_read_back_as_the_float32_they_were() -> None:
    encodings = _faces(6, 2)
    back = stored_encodings([pack(e) for e in encodings])
    assert [pack(e) for e in back] == [pack(e) for e in encodings]
    with pytest.raises(EncodingError):
        stored_encodings([b"\x00" * 12])


def test_face_choice() -> None:
    assert (face_choice(None), face_choice("largest"), face_choice("0"), face_choice("12")) == (
        None,
        LARGEST,
        0,
        12,
    )


# --------------------------------------------------------------------- settings and scope


def test_the_api_reads_the_recognizers_match_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = ApiSettings(admin_api_key=KEY)
    assert (defaults.match_tolerance, defaults.match_aggregation) == (DEFAULT_TOLERANCE, DEFAULT_AGGREGATION)
    monkeypatch.setenv("MATCH_TOLERANCE", "0.42")
    monkeypatch.setenv("MATCH_AGGREGATION", "min")
    configured = ApiSettings(admin_api_key=KEY)
    assert (configured.match_tolerance, configured.match_aggregation) == (0.42, "min")
    monkeypatch.setenv("MATCH_AGGREGATION", "median")
    with pytest.raises(ValidationError, match="MATCH_AGGREGATION"):
        ApiSettings(admin_api_key=KEY)


def test_a_photo_of_the_largest_size_must_fit_in_a_request() -> None:
    with pytest.raises(ValidationError, match="VERIFY_MAX_BYTES"):
        ApiSettings(admin_api_key=KEY, verify_max_bytes=16 * 1024 * 1024)


def test_verify_is_a_scope_keys_can_be_given() -> None:
    assert "verify" in SCOPES
    assert KeyCreate(name="door", scopes=["verify"]).scopes == ["verify"]


# ----------------------------------------------------------------------- the scan functions


def test_a_probe_is_the_face_a_result_would_have(faces_dir: Path) -> None:
    photo = (faces_dir / "sample/examples/obama.jpg").read_bytes()
    probe = probe_photo(photo)
    assert isinstance(probe, ScanProbe)
    cfg = DetectionConfig()
    decoded = decode_image(photo, cfg.max_pixels, cfg.max_decoded_pixels)
    [face] = find_faces(decoded.rgb, cfg)
    assert (probe.index, probe.box, probe.faces_found) == (0, scaled_box(face.box, decoded), 1)
    assert probe.encoding == pytest.approx(face.encoding.tolist())


def test_a_group_photo_needs_a_face_index(faces_dir: Path) -> None:
    photo = (faces_dir / "sample/examples/two_people.jpg").read_bytes()
    several = probe_photo(photo)
    assert isinstance(several, ScanSeveralFaces)
    assert len(several.boxes) == 2
    assert isinstance(probe_photo(photo, 2), ScanSeveralFaces)  # no third face
    second = probe_photo(photo, 1)
    assert isinstance(second, ScanProbe)
    assert (second.index, second.box) == (1, several.boxes[1])
    largest = probe_photo(photo, LARGEST)
    assert isinstance(largest, ScanProbe)


def test_no_face_and_not_an_image(faces_dir: Path) -> None:
    assert probe_photo((faces_dir / "extras/no_face/dlib_horses.jpg").read_bytes()) == ScanNoFace()
    rejected = probe_photo(b"plain text")
    assert isinstance(rejected, ScanRejected)
    assert rejected.reason == "not_an_image"
    assert detect_photo(b"plain text") == rejected


@pytest.mark.parametrize(
    "name", ["sample/examples/two_people.jpg", "extras/large/deepface_img49_4352x2903.jpg"]
)
def test_detection_finds_the_recognizers_faces_with_landmarks(faces_dir: Path, name: str) -> None:
    """Boxes are find_faces' (in the original's pixels, also for a photo detected downscaled),
    and every landmark lies near its face."""
    photo = (faces_dir / name).read_bytes()
    found = detect_photo(photo, encodings=True)
    assert isinstance(found, ScanDetection)
    cfg = DetectionConfig()
    decoded = decode_image(photo, cfg.max_pixels, cfg.max_decoded_pixels)
    faces = find_faces(decoded.rgb, cfg)
    assert faces
    assert (found.width, found.height) == (decoded.width, decoded.height)
    assert [f.box for f in found.faces] == [scaled_box(f.box, decoded) for f in faces]
    for detected, face in zip(found.faces, faces, strict=True):
        LandmarksPublic(**detected.landmarks)  # the nine features, no other
        assert sum(len(p) for p in detected.landmarks.values()) == 72  # 68, the lips' corners twice
        box = detected.box
        grow = (box.bottom - box.top) // 3  # the chin reaches below the detector's tight box
        assert all(_inside(p, box, grow) for points in detected.landmarks.values() for p in points)
        for feature in ("left_eye", "right_eye", "nose_tip"):
            assert all(_inside(p, box) for p in detected.landmarks[feature])
        assert detected.encoding == floats(face.encoding)
    plain = detect_photo(photo)
    assert isinstance(plain, ScanDetection)
    assert [f.encoding for f in plain.faces] == [None] * len(faces)  # encodings only when asked


def test_detection_of_a_photo_without_a_face_is_empty(faces_dir: Path) -> None:
    found = detect_photo((faces_dir / "extras/no_face/dlib_horses.jpg").read_bytes())
    assert isinstance(found, ScanDetection)
    assert found.faces == []
