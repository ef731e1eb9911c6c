"""The API's pure parts: text checks and the HTML rendering."""

from __future__ import annotations

import ast
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from api import sightings
from api.models import (
    FacePublic,
    ImagePublic,
    ImagesPublic,
    ImageStatus,
    PeoplePublic,
    PersonCreate,
    PersonPublic,
    storable_filename,
)
from api.routes.page import _faces_list, _images_table, _photo, _rule
from schemas.events import Box

ROOT = Path(__file__).resolve().parents[2]
#: What only the recognizers run: face detection, dlib and its models.
FACE_DETECTION = ("dlib", "face_recognition", "face_recognition_models", "recognizer.core", "recognizer.scan")


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


def test_importing_the_api_loads_no_face_detection() -> None:
    """Photos are scanned by the recognizers (api/scans.py): the API process never loads
    dlib and its models (hundreds of MB)."""
    code = (
        "import sys, api.app, api.__main__\n"
        "api.app.create_app\n"
        f"loaded = sorted(m for m in {FACE_DETECTION!r} if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == ""


def test_no_api_module_imports_face_detection_even_inside_a_function() -> None:
    """Not even lazily, as the API's own process pool once did (api/enrollment.py)."""
    found = []
    for path in sorted((ROOT / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith(FACE_DETECTION)]
    assert found == []


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


def test_confirming_a_face_enrolls_it_for_its_name_or_the_one_given() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert sightings.plan_confirmation(a, None) == sightings.Confirmation(a, was_named=None, rematch=False)
    assert sightings.plan_confirmation(a, a) == sightings.Confirmation(a, was_named=None, rematch=False)
    assert sightings.plan_confirmation(a, b) == sightings.Confirmation(b, was_named=a, rematch=True)
    assert sightings.plan_confirmation(None, b) == sightings.Confirmation(b, was_named=None, rematch=True)
    with pytest.raises(sightings.NotNamed, match="name it with person_id"):
        sightings.plan_confirmation(None, None)


def test_a_confirmed_face_has_the_same_id_however_it_is_named() -> None:
    person, image = uuid.uuid4(), uuid.uuid4()
    assert sightings.face_id(person, image, 2) == uuid.uuid5(person, f"{image}:2")  # as review names it
    assert sightings.face_id(person, image, 2) != sightings.face_id(uuid.uuid4(), image, 2)
    assert sightings.face_id(person, image, 2) != sightings.face_id(person, image, 3)


def test_a_named_face_offers_confirm_and_correct_only_to_a_key_that_may_enroll() -> None:
    person = PersonPublic(
        id=uuid.uuid4(), name="Ann", face_count=1, created_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    box = Box(top=0, right=1, bottom=1, left=0)
    named = FacePublic(index=0, box=box, person_id=person.id, person_name="Ann", distance=0.3)
    unknown = FacePublic(index=1, box=box, person_id=None, person_name=None, distance=None)
    image = image_public([named, unknown])
    html = _faces_list(image, PeoplePublic(data=[person], count=1))
    confirm = f"/v1/images/{image.id}/faces/0/confirm"
    assert f"<button class='confirm-face' data-call='{confirm}'" in html
    assert f"<button class='correct-face' data-call='{confirm}' data-field='person_id'" in html
    assert f"<option value='{person.id}'>Ann</option>" in html
    assert f"/v1/images/{image.id}/faces/1/confirm" not in html  # unknown: named in review
    assert html.count("data-call='/v1/review/assign'") == 2
    assert "confirm" not in _faces_list(image, None)
