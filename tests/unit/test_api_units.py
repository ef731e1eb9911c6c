"""The API's pure parts: the enrollment scan, text checks and the HTML rendering."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from api.enrollment import LARGEST, FaceFound, NoFace, Rejected, SeveralFaces, scan_photo
from api.models import FacePublic, ImagePublic, ImagesPublic, ImageStatus, PersonCreate, storable_filename
from api.routes.page import _images_table, _photo, _rule
from recognizer.core import DetectionConfig
from schemas.events import Box


def test_scan_enrolls_the_face_of_a_portrait(faces_dir: Path) -> None:
    scan = scan_photo((faces_dir / "sample" / "examples" / "obama.jpg").read_bytes())
    assert isinstance(scan, FaceFound)
    assert scan.faces_found == 1
    assert len(scan.encoding) == 128
    assert scan.model == DetectionConfig().model_info()
    # It crosses the process-pool boundary.
    assert pickle.loads(pickle.dumps(scan)) == scan


def test_scan_of_a_group_photo_asks_which_face_unless_told(faces_dir: Path) -> None:
    photo = (faces_dir / "sample" / "examples" / "two_people.jpg").read_bytes()
    several = scan_photo(photo)
    assert isinstance(several, SeveralFaces)
    assert len(several.boxes) == 2
    assert several.boxes[0].left < several.boxes[1].left  # left to right, as results number faces
    assert isinstance(scan_photo(photo, 1, 9), SeveralFaces)  # no face 9

    second = scan_photo(photo, 1, 1)
    assert isinstance(second, FaceFound)
    assert (second.index, second.box, second.faces_found) == (1, several.boxes[1], 2)
    assert second.crop.startswith(b"\xff\xd8")  # a JPEG crop for the person's page
    largest = scan_photo(photo, 1, LARGEST)
    assert isinstance(largest, FaceFound)
    area = [(b.right - b.left) * (b.bottom - b.top) for b in several.boxes]
    assert largest.index == area.index(max(area))


def test_scan_without_a_face(faces_dir: Path) -> None:
    assert scan_photo((faces_dir / "extras" / "no_face" / "dlib_horses.jpg").read_bytes()) == NoFace()


def test_scan_of_bytes_that_are_no_image_is_rejected_as_data() -> None:
    scan = scan_photo(b"hello, this is text")
    assert isinstance(scan, Rejected)
    assert scan.reason == "not_an_image"
    assert pickle.loads(pickle.dumps(scan)) == scan


@pytest.mark.parametrize("name", ["a\x00b", "\ud800", "   "])
def test_person_names_the_database_cannot_store_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        PersonCreate(name=name)


def test_uploaded_file_names_are_made_storable() -> None:
    assert storable_filename("a\x00b\ud800.jpg") == "ab?.jpg"
    assert storable_filename("") is None
    assert storable_filename(None) is None


def image_public(faces: list[FacePublic], **fields: Any) -> ImagePublic:
    """An image as the API shows it: these faces, and ``fields`` over plain defaults."""
    defaults: dict[str, Any] = {
        "id": uuid.uuid4(),
        "status": ImageStatus.PROCESSED,
        "status_reason": None,
        "status_detail": None,
        "filename": "a.jpg",
        "content_type": None,
        "size_bytes": None,
        "source": None,
        "camera": None,
        "metadata": {},
        "submitted_at": datetime(2026, 1, 1, tzinfo=UTC),
        "finished_at": None,
        "width": None,
        "height": None,
        "face_count": len(faces),
        "run": 0,
        "attempts": 1,
        "gallery_version": None,
        "rule": None,
        "model": None,
    }
    return ImagePublic(**{**defaults, **fields}, faces=faces)


def test_images_table_escapes_client_text() -> None:
    person_id = uuid.uuid4()
    face = FacePublic(
        index=0,
        box=Box(top=0, right=1, bottom=1, left=0),
        person_id=person_id,
        person_name="O'Brien & <Co>",
        distance=0.3,
    )
    image = image_public([face], status_detail="<i>detail</i>", filename="<script>x</script>.jpg")
    html = _images_table(ImagesPublic(data=[image], count=1), empty="")
    assert "<script>" not in html
    assert "<i>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;.jpg" in html
    assert f"<a href='/people/{person_id}'>O&#x27;Brien &amp; &lt;Co&gt;</a>" in html
    assert "2026-01-01 00:00:00 UTC" in html


def test_boxes_of_the_image_page_are_placed_in_percent() -> None:
    face = FacePublic(
        index=0,
        box=Box(top=50, right=300, bottom=150, left=200),
        person_id=uuid.uuid4(),
        person_name="<Ann>",
        distance=0.4123,
    )
    html = _photo(image_public([face], width=400, height=200))
    assert "left:50.000%;top:25.000%;width:25.000%;height:50.000%" in html
    assert "&lt;Ann&gt; 0.41" in html


def test_the_image_page_says_which_rule_named_the_faces() -> None:
    assert _rule(None) == ""
    assert _rule({"tolerance": 0.5, "margin": 0.1}) == "tolerance 0.500, margin 0.100 (fixed)"
    derived = {
        "tolerance": 0.55,
        "margin": 0.16,
        "false_accept_target": 0.01,
        "false_accept_estimate": 0.0097,
        "calibration": "<model>",
        "calibrated_people": 60,
    }
    assert _rule(derived) == (
        "tolerance 0.550, margin 0.160: derived for a stated false-accept rate of 1.00% with 60 people"
        " enrolled (estimated 0.97%, &lt;model&gt;)"
    )
