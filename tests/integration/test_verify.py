"""``POST /v1/verify`` and ``POST /v1/detect`` on real photos, against the real database
(people, enrolled faces, API keys) and broker (enrollment publishes to the gallery).

One app (and its lifespan, with its process pool) serves the module. People enrolled here
leave the shared gallery afterwards (tombstones), keys made here are deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
import pytest_asyncio

from api.deps import get_settings
from recognizer.core import DetectionConfig, decode_image, find_faces, scaled_box
from recognizer.gallery import DEFAULT_TOLERANCE

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

EXAMPLES = "sample/examples"


@pytest.fixture(scope="module")
def photo(faces_dir: Path) -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        return (faces_dir / name).read_bytes()

    return read


@pytest_asyncio.fixture(loop_scope="module")
async def new_key(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Create API keys through the API; deleted afterwards."""
    made: list[str] = []

    async def make(*scopes: str) -> str:
        r = await client.post("/v1/admin/keys", json={"name": "verify-test", "scopes": list(scopes)})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        return str(r.json()["key"])

    yield make
    await db.execute("DELETE FROM api_keys WHERE id = ANY($1::text[])", made)


def _files(*photos: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "image/jpeg")) for name, data in photos]


async def _verify(client: httpx.AsyncClient, **kwargs: Any) -> httpx.Response:
    return await client.post("/v1/verify", **kwargs)


# ------------------------------------------------------------------------------ two photos


async def test_two_photos_of_the_same_person(client, photo):
    r = await _verify(
        client,
        files=_files(("a.jpg", photo(f"{EXAMPLES}/obama.jpg")), ("b.jpg", photo(f"{EXAMPLES}/obama2.jpg"))),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["same_person"] is True
    assert body["threshold"] == DEFAULT_TOLERANCE
    assert 0 < body["distance"] <= body["threshold"]
    assert [(f["photo"], f["index"], f["faces_found"]) for f in body["faces"]] == [(1, 0, 1), (2, 0, 1)]
    assert set(body["faces"][0]["box"]) == {"top", "right", "bottom", "left"}
    assert (body["person_id"], body["enrolled_faces"], body["aggregation"]) == (None, None, "centroid")


async def test_two_photos_of_different_people(client, photo):
    r = await _verify(
        client,
        files=_files(("a.jpg", photo(f"{EXAMPLES}/obama.jpg")), ("b.jpg", photo(f"{EXAMPLES}/biden.jpg"))),
    )
    assert r.status_code == 200, r.text
    assert r.json()["same_person"] is False
    assert r.json()["distance"] > r.json()["threshold"]


async def test_a_group_photo_lists_its_faces_until_one_is_chosen(client, photo):
    group, obama = photo(f"{EXAMPLES}/two_people.jpg"), photo(f"{EXAMPLES}/obama.jpg")
    r = await _verify(client, files=_files(("two.jpg", group), ("obama.jpg", obama)))
    assert r.status_code == 422
    body = r.json()
    assert body["photo"] == 1
    assert "face_index" in body["detail"]
    assert [f["index"] for f in body["faces"]] == [0, 1]
    boxes = [f["box"] for f in body["faces"]]
    assert boxes[0]["left"] < boxes[1]["left"]  # left to right

    answers = []
    for index in (0, 1):
        chosen = await _verify(
            client, params={"face_index": index}, files=_files(("two.jpg", group), ("o.jpg", obama))
        )
        assert chosen.status_code == 200, chosen.text
        assert chosen.json()["faces"][0] == {
            "photo": 1,
            "index": index,
            "box": boxes[index],
            "faces_found": 2,
        }
        answers.append(chosen.json()["same_person"])
    assert sorted(answers) == [False, True]  # Obama is one of the two, Biden the other
    obama_index = answers.index(True)

    # The second photo's face: face_index_2, here as a form field.
    r = await _verify(client, files=_files(("o.jpg", obama), ("two.jpg", group)))
    assert (r.status_code, r.json()["photo"]) == (422, 2)
    assert "face_index_2" in r.json()["detail"]
    r = await _verify(
        client, data={"face_index_2": str(obama_index)}, files=_files(("o.jpg", obama), ("two.jpg", group))
    )
    assert r.status_code == 200, r.text
    assert r.json()["same_person"] is True
    # largest works as in enrollment; an index past the last face lists them again.
    r = await _verify(client, params={"face_index": 5}, files=_files(("two.jpg", group), ("o.jpg", obama)))
    assert r.status_code == 422
    assert "face_index 5 is not one of them" in r.json()["detail"]
    assert len(r.json()["faces"]) == 2


async def test_a_photo_without_a_face_or_not_an_image_is_422(client, photo):
    obama = photo(f"{EXAMPLES}/obama.jpg")
    r = await _verify(
        client, files=_files(("o.jpg", obama), ("horses.jpg", photo("extras/no_face/dlib_horses.jpg")))
    )
    assert r.status_code == 422
    assert r.json()["detail"] == "no face found in the second photo"

    r = await _verify(client, files=_files(("notes.jpg", b"just some text"), ("o.jpg", obama)))
    assert r.status_code == 422
    assert r.json()["detail"].startswith("the first photo is not a usable image (not_an_image)")

    truncated = obama[: len(obama) // 2]
    r = await _verify(client, files=_files(("o.jpg", obama), ("cut.jpg", truncated)))
    assert r.status_code == 422
    assert "corrupt_image" in r.json()["detail"]


@pytest.mark.parametrize(
    ("kwargs", "detail"),
    [
        ({"files": [("files", ("a.jpg", b"x"))]}, "send two photos as two parts named files"),
        ({"files": [("file", ("a.jpg", b"x"))]}, "send two photos as two parts named files"),
        ({"files": [("files", ("a.jpg", b"x"))] * 3}, "got 3 part(s) named files"),
        ({"files": [("files", ("a.jpg", b"x"))] * 2, "data": {"person": "x"}}, "unknown form field 'person'"),
        ({"files": [("files", ("a.jpg", b"x"))] * 2, "params": {"face_index": "first"}}, "face_index"),
    ],
)
async def test_a_request_that_is_not_two_photos_or_one_and_a_person_is_422(client, kwargs, detail):
    r = await _verify(client, **kwargs)
    assert r.status_code == 422
    assert detail in r.json()["detail"]


async def test_a_photo_over_the_limit_is_413_before_any_decoding(app, client, settings):
    small = settings.model_copy(update={"verify_max_bytes": 1000})
    app.dependency_overrides[get_settings] = lambda: small
    try:
        r = await _verify(client, files=_files(("a.jpg", b"x" * 1000), ("b.jpg", b"x" * 1001)))
        detected = await client.post("/v1/detect", files={"file": ("a.jpg", b"x" * 1001)})
    finally:
        del app.dependency_overrides[get_settings]
    assert r.status_code == 413
    assert r.json()["detail"] == "the second photo is larger than 1000 bytes (VERIFY_MAX_BYTES)"
    assert detected.status_code == 413


# ------------------------------------------------------------------------ a photo and a person


async def test_a_photo_against_an_enrolled_person(client, photo, new_person, db):
    person = await new_person("verify-test obama")
    enrolled = await client.post(
        f"/v1/people/{person}/faces", files={"file": ("obama.jpg", photo(f"{EXAMPLES}/obama.jpg"))}
    )
    assert enrolled.status_code == 201, enrolled.text

    obama2 = photo(f"{EXAMPLES}/obama2.jpg")
    r = await _verify(client, data={"person_id": str(person)}, files={"file": ("o2.jpg", obama2)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["same_person"], body["person_id"], body["enrolled_faces"]) == (True, str(person), 1)
    assert [f["photo"] for f in body["faces"]] == [1]

    # The distance is the one a recognizer computes: to the centroid of the stored encodings.
    detected = await client.post(
        "/v1/detect", params={"encodings": "true"}, files={"file": ("o2.jpg", obama2)}
    )
    probe = np.asarray(detected.json()["faces"][0]["encoding"], dtype=np.float32)
    stored = await db.fetch("SELECT encoding FROM person_faces WHERE person_id = $1", person)
    centroid = np.mean([np.frombuffer(s["encoding"], dtype="<f4") for s in stored], axis=0)
    assert body["distance"] == pytest.approx(float(np.linalg.norm(probe - centroid)), abs=2e-4)

    # person_id as a query parameter works the same; Biden is not this person.
    r = await _verify(
        client, params={"person_id": str(person)}, files={"file": ("b.jpg", photo(f"{EXAMPLES}/biden.jpg"))}
    )
    assert r.status_code == 200, r.text
    assert r.json()["same_person"] is False


async def test_an_unknown_person_is_404_and_one_without_faces_409(client, photo, new_person):
    obama = photo(f"{EXAMPLES}/obama.jpg")
    r = await _verify(client, data={"person_id": str(uuid.uuid4())}, files={"file": ("o.jpg", obama)})
    assert r.status_code == 404
    assert r.json()["detail"].startswith("no person with id ")

    person = await new_person("verify-test nobody yet")
    r = await _verify(client, data={"person_id": str(person)}, files={"file": ("o.jpg", obama)})
    assert r.status_code == 409
    assert "no enrolled face" in r.json()["detail"]


@pytest.mark.parametrize(
    ("kwargs", "detail"),
    [
        ({"files": [("files", ("a.jpg", b"x"))] * 2}, "with person_id, send one photo"),
        ({"files": [("file", ("a.jpg", b"x"))], "params": {"face_index_2": "0"}}, "face_index_2 chooses"),
        ({"files": [("file", ("a.jpg", b"x"))], "data": {"person_id": str(uuid.uuid4())}}, "given twice"),
    ],
)
async def test_a_person_takes_one_photo(client, kwargs, detail):
    person = str(uuid.uuid4())
    r = await _verify(client, **{**kwargs, "params": {"person_id": person, **kwargs.get("params", {})}})
    assert r.status_code == 422
    assert detail in r.json()["detail"]


# ------------------------------------------------------------------------------- detection


async def test_detect_finds_the_recognizers_boxes_with_landmarks(client, photo):
    group = photo(f"{EXAMPLES}/two_people.jpg")
    r = await client.post("/v1/detect", files={"file": ("two.jpg", group)})
    assert r.status_code == 200, r.text
    body = r.json()
    cfg = DetectionConfig()
    decoded = decode_image(group, cfg.max_pixels, cfg.max_decoded_pixels)
    expected = [scaled_box(f.box, decoded).model_dump() for f in find_faces(decoded.rgb, cfg)]
    assert (body["width"], body["height"], body["count"]) == (decoded.width, decoded.height, 2)
    assert [f["box"] for f in body["faces"]] == expected
    assert [f["index"] for f in body["faces"]] == [0, 1]
    for face in body["faces"]:
        box, marks = face["box"], face["landmarks"]
        assert len(marks["chin"]) == 17
        assert len(marks["left_eye"]) == len(marks["right_eye"]) == 6
        for x, y in (
            p for feature in ("left_eye", "right_eye", "nose_tip", "nose_bridge") for p in marks[feature]
        ):
            assert box["left"] <= x <= box["right"]
            assert box["top"] <= y <= box["bottom"]
        assert face["encoding"] is None  # only when asked

    asked = await client.post("/v1/detect", params={"encodings": "true"}, files={"file": ("two.jpg", group)})
    assert asked.status_code == 200
    assert [len(f["encoding"]) for f in asked.json()["faces"]] == [128, 128]
    assert [f["box"] for f in asked.json()["faces"]] == expected


async def test_detect_without_a_face_is_empty_and_not_an_image_is_422(client, photo):
    r = await client.post("/v1/detect", files={"file": ("h.jpg", photo("extras/no_face/dlib_horses.jpg"))})
    assert r.status_code == 200
    assert (r.json()["faces"], r.json()["count"]) == ([], 0)
    r = await client.post("/v1/detect", files={"file": ("notes.jpg", b"just some text")})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("the photo is not a usable image (not_an_image)")
    r = await client.post("/v1/detect", files={"file": ("a.jpg", b"x")}, data={"files": "y"})
    assert r.status_code == 422
    assert "unknown form field 'files'" in r.json()["detail"]


# ------------------------------------------------------------------------- scope and rate


async def test_both_need_the_verify_scope_and_have_their_own_rate(app, client, settings, new_key, photo):
    horses = photo("extras/no_face/dlib_horses.jpg")
    query_only = await new_key("query", "enroll")
    for path, files in (
        ("/v1/verify", _files(("a.jpg", b"x"), ("b.jpg", b"y"))),
        ("/v1/detect", {"file": ("a.jpg", b"x")}),
    ):
        refused = await client.post(path, files=files, headers={"X-API-Key": query_only})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "this API key lacks the 'verify' scope"

    verifier = await new_key("verify")
    one_a_minute = settings.model_copy(update={"verify_rate_per_minute": 1})
    app.dependency_overrides[get_settings] = lambda: one_a_minute
    try:
        first = await client.post(
            "/v1/detect", files={"file": ("h.jpg", horses)}, headers={"X-API-Key": verifier}
        )
        second = await client.post(
            "/v1/verify", files=_files(("a.jpg", horses), ("b.jpg", horses)), headers={"X-API-Key": verifier}
        )
        admin = await client.post(
            "/v1/detect", files={"file": ("h.jpg", horses)}
        )  # the bootstrap key: no limit
    finally:
        del app.dependency_overrides[get_settings]
    assert first.status_code == 200, first.text
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1
    assert "verifications and detections per minute" in second.json()["detail"]
    assert admin.status_code == 200
