"""What the operator's pages are made of, without a database: renderings of stored images,
the review's grouping, keyset cursors and the refusal of unknown query parameters."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import Depends, FastAPI, Query
from PIL import Image

from api import imaging, review
from api.queries import Cursor
from api.routes.paging import image_filter
from common.http import known_query_only, readable_validation_errors
from recognizer.core import DetectionConfig, find_faces, load_image
from schemas.encoding import pack


def _jpeg_size(data: bytes) -> tuple[int, int]:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    return img.size


def test_thumbnail_and_preview_fit_their_side_and_keep_the_shape(faces_dir: Path) -> None:
    photo = (faces_dir / "sample/examples/obama-1080p.jpg").read_bytes()
    w, h = Image.open(io.BytesIO(photo)).size
    tw, th = _jpeg_size(imaging.render(photo, imaging.THUMB))
    assert max(tw, th) == imaging.THUMB_SIDE
    assert abs(tw / th - w / h) < 0.02
    assert max(_jpeg_size(imaging.render(photo, imaging.PREVIEW))) == min(imaging.PREVIEW_SIDE, max(w, h))


def test_a_face_crop_shows_the_face_it_was_cut_around(faces_dir: Path) -> None:
    """The crop is re-detected: the face the recognizer boxed is in it, centred."""
    photo = (faces_dir / "sample/examples/two_people.jpg").read_bytes()
    rgb = load_image(photo)
    faces = find_faces(rgb, DetectionConfig())
    h, w = rgb.shape[:2]
    for face in faces:
        crop = imaging.render(photo, imaging.Kind.face(0), face.box, w, h)
        assert _jpeg_size(crop)[0] == imaging.CROP_SIDE
        [found] = find_faces(load_image(crop), DetectionConfig(upsample=2))
        cx = (found.box.left + found.box.right) / 2
        assert abs(cx - imaging.CROP_SIDE / 2) < imaging.CROP_SIDE * 0.15


def test_a_rotated_photo_is_rendered_upright(tmp_path: Path) -> None:
    """Boxes are in the upright frame: a photo stored sideways (EXIF orientation 6) must be
    turned, or every box would land beside its face."""
    img = Image.new("RGB", (400, 200), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    assert _jpeg_size(imaging.fitted(out.getvalue(), 1000)) == (200, 400)


def test_bytes_that_are_no_image_are_not_renderable() -> None:
    with pytest.raises(imaging.NotRenderable):
        imaging.render(b"not an image", imaging.THUMB)


def test_groups_put_the_same_person_together(faces_dir: Path) -> None:
    """Chinese whispers on real encodings: Obama's photos form one group, Biden is alone."""
    names = ["obama.jpg", "obama2.jpg", "obama-480p.jpg", "biden.jpg"]
    cfg = DetectionConfig()
    encodings = [
        find_faces(load_image((faces_dir / "sample/examples" / n).read_bytes()), cfg)[0].encoding
        for n in names
    ]
    labels = review.cluster(b"".join(pack(e) for e in encodings), 0.5)
    found = review.groups(labels)
    assert found == [[0, 1, 2], [3]]


def test_groups_largest_first_then_newest() -> None:
    assert review.groups([7, 3, 3, 7, 7, 9]) == [[0, 3, 4], [1, 2], [5]]
    assert review.groups([]) == []


def test_representatives_are_nearest_the_centre() -> None:
    m = np.zeros((4, 128), dtype=np.float32)
    m[1, 0] = 0.1
    m[2, 0] = 5.0  # an outlier
    m[3, 0] = -0.1
    assert review.representatives(m, 2)[0] in (0, 1, 3)
    assert 2 not in review.representatives(m, 3)
    assert review.representatives(m[:0], 3) == []


def test_near_finds_candidates_within_the_radius() -> None:
    probes = np.zeros((1, 128), dtype=np.float32)
    candidates = np.zeros((3, 128), dtype=np.float32)
    candidates[1, 0] = 0.59
    candidates[2, 0] = 0.61
    assert review.near(candidates, probes, 0.6).tolist() == [True, True, False]
    assert review.near(candidates, probes[:0], 0.6).tolist() == [False, False, False]


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    cursor = Cursor(datetime(2026, 12, 1, 8, 30, 1, 5, tzinfo=UTC), uuid.uuid4())
    assert Cursor.parse(cursor.token()) == cursor
    for bad in ("", "!!!", "bm90IGEgY3Vyc29y", Cursor(datetime(2026, 1, 1), uuid.uuid4()).token()):
        with pytest.raises(ValueError, match="not a cursor from this API"):
            Cursor.parse(bad)


async def test_unknown_query_parameters_are_refused_with_what_the_path_takes() -> None:
    app = FastAPI(dependencies=[Depends(known_query_only)])
    readable_validation_errors(app)

    @app.get("/things")
    async def things(f: object = Depends(image_filter), limit: int = Query(10)) -> dict[str, str]:
        return {"ok": "yes"}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/things", params={"status": "failed", "limit": 3})).status_code == 200
        assert (await client.get("/things", params={"status": "", "since": ""})).status_code == 200
        r = await client.get("/things", params={"stauts": "failed"})
        assert r.status_code == 422
        assert "'stauts'" in r.json()["detail"]
        assert "status" in r.json()["detail"]
        bad = await client.get("/things", params={"since": "2026-12-02", "until": "2026-12-01"})
        assert bad.status_code == 422
