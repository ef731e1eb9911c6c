"""Enrollment face quality (recognizer.quality) on real photos and their degraded copies."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from recognizer import quality
from recognizer.core import DetectionConfig, find_faces, largest_face, load_image
from recognizer.quality import FaceQuality, judge, measure, sharpness, yaw
from schemas.events import Box

Image = npt.NDArray[np.uint8]
#: obama-480p.jpg's face as the shipped detector draws it (checked in the first test);
#: obama-720p.jpg and obama-1080p.jpg are the same frame, 1.5 and 2.25 times larger.
OBAMA_480P_BOX = (68, 497, 175, 390)
#: A near profile in lfw-dev (the strongest |yaw| of its photos).
PROFILE = "lfw-dev/known/Donald_Rumsfeld/Donald_Rumsfeld_0005.jpg"


def _load(faces_dir: Path, name: str) -> Image:
    return load_image((faces_dir / name).read_bytes())


def _shrunk(rgb: Image, scale: float) -> Image:
    h, w = rgb.shape[:2]
    size = (round(w * scale), round(h * scale))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))


def _scaled(box: tuple[int, int, int, int], scale: float) -> tuple[int, int, int, int]:
    top, right, bottom, left = box
    return round(top * scale), round(right * scale), round(bottom * scale), round(left * scale)


@pytest.fixture(scope="module")
def obama(faces_dir: Path) -> Image:
    return _load(faces_dir, "sample/examples/obama-480p.jpg")


def test_a_sharp_frontal_photo_passes(obama: Image) -> None:
    face = largest_face(find_faces(obama, DetectionConfig()))
    assert face is not None
    assert (face.box.top, face.box.right, face.box.bottom, face.box.left) == OBAMA_480P_BOX
    q = measure(obama, face.box)
    assert q.height_px == 107
    assert q.sharpness > 10 * quality.MIN_SHARPNESS_FLAG
    assert abs(q.yaw) < 0.1
    assert judge(q) == []


def test_a_box_and_a_location_measure_the_same(obama: Image) -> None:
    top, right, bottom, left = OBAMA_480P_BOX
    box = Box(top=top, right=right, bottom=bottom, left=left)
    assert measure(obama, box) == measure(obama, OBAMA_480P_BOX)


def test_given_landmarks_are_used_as_they_are(obama: Image) -> None:
    import face_recognition

    [marks] = face_recognition.face_landmarks(obama, face_locations=[OBAMA_480P_BOX], model="large")
    assert measure(obama, OBAMA_480P_BOX, marks) == measure(obama, OBAMA_480P_BOX)
    # Landmarks moved to the image's right edge read as a face turned fully that way.
    turned = {feature: [(x + 40, y) for x, y in points] for feature, points in marks.items()}
    turned["chin"] = marks["chin"]
    assert measure(obama, OBAMA_480P_BOX, turned).yaw > measure(obama, OBAMA_480P_BOX).yaw + 0.5


def test_a_shrunk_copy_is_flagged_too_small(obama: Image) -> None:
    small = _shrunk(obama, 0.4)
    face = largest_face(find_faces(small, DetectionConfig()))  # as the scan would find it
    assert face is not None
    q = measure(small, face.box)
    assert quality.MIN_HEIGHT_REFUSE <= q.height_px < quality.MIN_HEIGHT_FLAG
    [issue] = judge(q)
    assert (issue.code, issue.severity) == ("too_small", "flag")
    assert issue.value == q.height_px
    assert issue.limit == quality.MIN_HEIGHT_FLAG
    assert f"{q.height_px} px" in issue.message
    assert f"{quality.MIN_HEIGHT_FLAG} px" in issue.message


def test_a_face_shrunk_to_20_px_is_refused(obama: Image) -> None:
    scale = 20 / 107
    q = measure(_shrunk(obama, scale), _scaled(OBAMA_480P_BOX, scale))
    assert q.height_px == 20
    issues = judge(q)
    assert ("too_small", "refuse") in [(i.code, i.severity) for i in issues]
    assert issues[0].severity == "refuse"  # refusals come first


@pytest.mark.parametrize(("sigma", "severity"), [(0.025, "flag"), (0.05, "refuse")])
def test_a_blurred_copy_is_blurred(obama: Image, sigma: float, severity: str) -> None:
    """Sigma as a share of the face's height (107 px), as in benchmarks.enroll_quality."""
    blurred = np.asarray(cv2.GaussianBlur(obama, (0, 0), sigma * 107), dtype=np.uint8)
    q = measure(blurred, OBAMA_480P_BOX)
    assert q.height_px == 107
    [issue] = judge(q)
    assert (issue.code, issue.severity) == ("blurred", severity)
    limit = quality.MIN_SHARPNESS_FLAG if severity == "flag" else quality.MIN_SHARPNESS_REFUSE
    assert issue.limit == limit
    assert f"sharpness {q.sharpness:.2f}" in issue.message
    assert f"{limit:.2f}" in issue.message


def test_sharpness_does_not_depend_on_the_photos_resolution(faces_dir: Path, obama: Image) -> None:
    scores = [sharpness(_crop(obama, OBAMA_480P_BOX))]
    for name, scale in (("obama-720p.jpg", 1.5), ("obama-1080p.jpg", 2.25)):
        rgb = _load(faces_dir, f"sample/examples/{name}")
        scores.append(sharpness(_crop(rgb, _scaled(OBAMA_480P_BOX, scale))))
    assert max(scores) < 1.3 * min(scores), scores


def test_sharpness_does_not_depend_on_contrast(obama: Image) -> None:
    crop = _crop(obama, OBAMA_480P_BOX)
    dim = (crop // 3 + 20).astype(np.uint8)  # a third of the contrast, darker
    assert sharpness(dim) == pytest.approx(sharpness(crop), rel=0.1)
    grey = np.asarray(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    assert sharpness(grey) == pytest.approx(sharpness(crop))


def test_a_flat_crop_has_no_sharpness() -> None:
    assert sharpness(np.full((50, 40, 3), 128, dtype=np.uint8)) == 0.0


def test_a_near_profile_is_flagged_turned(faces_dir: Path) -> None:
    rgb = _load(faces_dir, PROFILE)
    face = largest_face(find_faces(rgb, DetectionConfig()))
    assert face is not None
    q = measure(rgb, face.box)
    assert q.yaw < -0.9  # the nose points to the image's left
    issues = {i.code: i for i in judge(q)}
    assert issues["turned"].severity == "flag"
    assert issues["turned"].value == pytest.approx(abs(q.yaw))
    assert all(i.severity == "flag" for i in issues.values())  # a turned face is never refused

    # Mirrored, it turns the other way by as much.
    mirrored = np.ascontiguousarray(rgb[:, ::-1])
    w = rgb.shape[1]
    box = (face.box.top, w - face.box.left, face.box.bottom, w - face.box.right)
    assert measure(mirrored, box).yaw == pytest.approx(-q.yaw, abs=0.1)


def test_yaw_needs_the_68_point_landmarks(obama: Image) -> None:
    import face_recognition

    [five] = face_recognition.face_landmarks(obama, face_locations=[OBAMA_480P_BOX], model="small")
    with pytest.raises(ValueError, match="68-point"):
        yaw(five)


def test_a_face_cut_by_the_photos_edge_is_measured_inside_it(obama: Image) -> None:
    """A photo cropped through the face: its box reaches past the top and left edges."""
    top, right, bottom, left = OBAMA_480P_BOX
    cut = np.ascontiguousarray(obama[top + 30 :, left + 30 :])
    q = measure(cut, (-30, right - left - 30, bottom - top - 30, -30))
    assert q.height_px == bottom - top - 30
    assert q.sharpness > quality.MIN_SHARPNESS_FLAG
    assert -1.0 <= q.yaw <= 1.0


def test_a_box_outside_the_image_is_an_error(obama: Image) -> None:
    h, w = obama.shape[:2]
    with pytest.raises(ValueError, match="no pixel inside"):
        measure(obama, (h + 10, w + 60, h + 60, w + 10))
    with pytest.raises(ValueError, match="no pixel inside"):
        measure(obama, (100, 100, 100, 50))  # no height


def test_a_tiny_image_is_measured_and_refused(obama: Image) -> None:
    face = _crop(obama, OBAMA_480P_BOX)
    tiny: Image = np.ascontiguousarray(cv2.resize(face, (16, 16), interpolation=cv2.INTER_AREA))
    q = measure(tiny, (0, 16, 16, 0))
    assert q.height_px == 16
    assert -1.0 <= q.yaw <= 1.0
    codes = {(i.code, i.severity) for i in judge(q)}
    assert ("too_small", "refuse") in codes


@pytest.mark.parametrize(
    ("q", "codes"),
    [
        (FaceQuality(quality.MIN_HEIGHT_FLAG, quality.MIN_SHARPNESS_FLAG, quality.MAX_YAW_FLAG), []),
        (FaceQuality(quality.MIN_HEIGHT_FLAG - 1, 5.0, 0.0), [("too_small", "flag")]),
        (FaceQuality(quality.MIN_HEIGHT_REFUSE, 5.0, 0.0), [("too_small", "flag")]),
        (FaceQuality(quality.MIN_HEIGHT_REFUSE - 1, 5.0, 0.0), [("too_small", "refuse")]),
        (FaceQuality(100, quality.MIN_SHARPNESS_REFUSE, 0.0), [("blurred", "flag")]),
        (FaceQuality(100, quality.MIN_SHARPNESS_REFUSE - 0.01, 0.0), [("blurred", "refuse")]),
        (FaceQuality(100, 5.0, -quality.MAX_YAW_FLAG - 0.01), [("turned", "flag")]),
        (
            FaceQuality(quality.MIN_HEIGHT_FLAG - 1, 0.5, 0.9),
            [("blurred", "refuse"), ("too_small", "flag"), ("turned", "flag")],
        ),
    ],
)
def test_judge_at_and_past_each_limit(q: FaceQuality, codes: list[tuple[str, str]]) -> None:
    assert [(i.code, i.severity) for i in judge(q)] == codes


def _crop(rgb: Image, box: tuple[int, int, int, int]) -> Image:
    top, right, bottom, left = box
    return np.ascontiguousarray(rgb[top:bottom, left:right])
