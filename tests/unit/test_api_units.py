"""The API's pure parts: the enrollment scan, text checks and the HTML rendering."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.enrollment import FaceFound, NoFace, Rejected, scan_photo
from api.models import FacePublic, ImagePublic, ImagesPublic, ImageStatus, PersonCreate, storable_filename
from api.routes.page import _images_table
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


def test_images_table_escapes_client_text() -> None:
    person_id = uuid.uuid4()
    image = ImagePublic(
        id=uuid.uuid4(),
        status=ImageStatus.PROCESSED,
        status_reason=None,
        status_detail="<i>detail</i>",
        filename="<script>x</script>.jpg",
        content_type=None,
        size_bytes=None,
        source=None,
        camera=None,
        metadata={},
        submitted_at=datetime(2026, 1, 1, tzinfo=UTC),
        finished_at=None,
        width=None,
        height=None,
        face_count=1,
        run=0,
        attempts=1,
        gallery_version=None,
        rule=None,
        model=None,
        faces=[
            FacePublic(
                index=0,
                box=Box(top=0, right=1, bottom=1, left=0),
                person_id=person_id,
                person_name="O'Brien & <Co>",
                distance=0.3,
            )
        ],
    )
    html = _images_table(ImagesPublic(data=[image], count=1))
    assert "<script>" not in html
    assert "<i>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;.jpg" in html
    assert f"<a href='/people/{person_id}'>O&#x27;Brien &amp; &lt;Co&gt;</a>" in html
    assert "2026-01-01 00:00:00 UTC" in html
