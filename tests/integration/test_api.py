"""The results API against the real broker and database.

One app (and its lifespan) serves the whole module. Tests share the broker and the
database with other tests, so every test uses fresh ids, deletes the rows it seeded, and
reads events only from the offsets that were at the end of the topic before it acted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
import pytest_asyncio
from confluent_kafka import Consumer, Producer, TopicPartition

from api.app import create_app
from api.deps import get_publisher, get_settings
from common.kafka import AsyncProducer, watermarks
from common.publisher import Publisher
from recognizer.scan import scan_photo
from schemas.codec import decode, encode_data
from schemas.encoding import floats
from schemas.envelope import Envelope
from schemas.events import (
    FaceEnrolled,
    FaceScanFinished,
    ImageSubmitted,
    PersonEnrolled,
    ScanFaceFound,
    ScanKind,
    ScanNoFace,
    ScanOutcome,
    ScanRejected,
)
from schemas.topics import GALLERY, SCANNED, SUBMITTED, face_key, person_key
from tests.platform import ADMIN_KEY

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


# --------------------------------------------------------------------------- fixtures


Seed = Callable[..., Awaitable[uuid.UUID]]


@pytest_asyncio.fixture(loop_scope="module")
async def seed_image(db: asyncpg.Connection) -> AsyncIterator[Seed]:
    """Insert an image (with faces and stored bytes) as the projector would; removed afterwards."""
    seeded: list[uuid.UUID] = []

    async def seed(
        *,
        status: str = "processed",
        filename: str | None = "photo.jpg",
        camera: str | None = None,
        run: int = 0,
        submitted_at: datetime | None = None,
        faces: tuple[tuple[uuid.UUID | None, str | None], ...] = (),
        content: bytes | None = b"stored image bytes",
        reason: str | None = None,
        encodings: tuple[bytes | None, ...] = (),
        boxes: tuple[tuple[int, int, int, int], ...] = (),
        size: tuple[int, int] = (640, 480),
        model: dict[str, Any] | None = None,
    ) -> uuid.UUID:
        image_id = uuid.uuid4()
        submitted_at = submitted_at or datetime.now(UTC)
        finished = None if status == "pending" else submitted_at + timedelta(seconds=1)
        await db.execute(
            """
            INSERT INTO images (id, run, status, status_reason, filename, content_type, size_bytes,
                                source, camera, metadata, width, height, face_count, attempts,
                                submitted_at, finished_at, model, sha256)
            VALUES ($1, $2, $3, $4, $5, 'image/jpeg', 18,
                    'test', $6, '{"k": "v"}', $10, $11, $7, 1,
                    $8, $9, $12, $13)
            """,
            image_id,
            run,
            status,
            reason,
            filename,
            camera,
            len(faces),
            submitted_at,
            finished,
            size[0],
            size[1],
            json.dumps(model) if model is not None else None,
            hashlib.sha256(content or b"").hexdigest(),
        )
        seeded.append(image_id)
        for index, (person_id, name) in enumerate(faces):
            await db.execute(
                """
                INSERT INTO faces (image_id, face_index, run, box_top, box_right, box_bottom, box_left,
                                   person_id, person_name, distance, encoding, seen_at)
                VALUES ($1, $2, $3, $6, $7, $8, $9, $4, $5, 0.4, $10, $11)
                """,
                image_id,
                index,
                run,
                person_id,
                name,
                *(boxes[index] if index < len(boxes) else (10, 60, 60, 10)),
                encodings[index] if index < len(encodings) else None,
                submitted_at,
            )
        if content is not None:
            await db.execute("INSERT INTO image_blobs (image_id, content) VALUES ($1, $2)", image_id, content)
        return image_id

    yield seed
    await db.execute("DELETE FROM images WHERE id = ANY($1::uuid[])", seeded)


@pytest_asyncio.fixture(loop_scope="module")
async def person(db: asyncpg.Connection) -> AsyncIterator[Callable[[str], Awaitable[uuid.UUID]]]:
    """Insert a person row directly (for the read paths); removed afterwards."""
    created: list[uuid.UUID] = []

    async def make(name: str) -> uuid.UUID:
        person_id = uuid.uuid4()
        await db.execute("INSERT INTO people (id, name) VALUES ($1, $2)", person_id, name)
        created.append(person_id)
        return person_id

    yield make
    await db.execute("DELETE FROM people WHERE id = ANY($1::uuid[])", created)


class TopicTail:
    """Reads a topic from the offsets at its end when created: only what came after."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"test-api-{uuid.uuid4()}",
                "enable.auto.commit": False,
            }
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        starts = []
        for p in partitions:
            _, high = watermarks(self._consumer, TopicPartition(topic, p), timeout=10)
            starts.append(TopicPartition(topic, p, high))
        self._consumer.assign(starts)
        self._seen: dict[bytes | None, bytes | None] = {}  # key -> first value read

    def _find(self, key: str, timeout: float) -> Envelope[Any]:
        deadline = time.monotonic() + timeout
        while key.encode() not in self._seen and time.monotonic() < deadline:
            msg = self._consumer.poll(0.5)
            if msg is not None and not msg.error():
                self._seen.setdefault(msg.key(), msg.value())
        if key.encode() not in self._seen:
            raise AssertionError(f"no message keyed {key!r} within {timeout} s")
        return decode(self._seen[key.encode()])

    async def find(self, key: str, within: float = 30.0) -> Envelope[Any]:
        """The first event keyed ``key``; fails the test if none arrives ``within`` seconds."""
        return await asyncio.to_thread(self._find, key, within)

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def tail(kafka_bootstrap: str) -> Iterator[Callable[[str], TopicTail]]:
    tails: list[TopicTail] = []

    def open_tail(topic: str) -> TopicTail:
        t = TopicTail(kafka_bootstrap, topic)
        tails.append(t)
        return t

    yield open_tail
    for t in tails:
        t.close()


def _ts(days_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days_ago)


# --------------------------------------------------------------------------- images: reads


async def test_get_image_returns_status_metadata_and_faces(client, seed_image, person):
    alice = await person("Alice Renamed")
    image_id = await seed_image(faces=((alice, "Alice"), (None, None)), run=1)

    r = await client.get(f"/v1/images/{image_id}")

    assert r.status_code == 200
    body = r.json()
    assert body["id"] == str(image_id)
    assert body["status"] == "processed"
    assert body["filename"] == "photo.jpg"
    assert body["source"] == "test"
    assert (body["width"], body["height"], body["run"], body["attempts"]) == (640, 480, 1, 1)
    assert body["submitted_at"]
    assert body["finished_at"]
    faces = body["faces"]
    assert [f["index"] for f in faces] == [0, 1]
    assert faces[0]["box"] == {"top": 10, "right": 60, "bottom": 60, "left": 10}
    # The current name wins over the one recorded when the image was recognized.
    assert faces[0]["person_id"] == str(alice)
    assert faces[0]["person_name"] == "Alice Renamed"
    assert faces[0]["distance"] == pytest.approx(0.4)
    assert faces[1]["person_id"] is None


async def test_faces_of_an_older_run_are_not_shown(client, seed_image, db):
    image_id = await seed_image(status="pending", run=0, faces=((None, None),))
    await db.execute("UPDATE images SET run = 1 WHERE id = $1", image_id)

    r = await client.get(f"/v1/images/{image_id}")

    assert r.json()["faces"] == []


async def test_unknown_image_is_404_with_a_reason(client):
    image_id = uuid.uuid4()
    r = await client.get(f"/v1/images/{image_id}")
    assert r.status_code == 404
    assert r.json() == {"detail": f"no image with id {image_id}"}


@pytest.mark.parametrize(
    "url",
    [
        "/v1/images/not-a-uuid",
        "/v1/images?status=bogus",
        "/v1/images?limit=501",
        "/v1/images?limit=0",
        "/v1/images?offset=-1",
        "/v1/images?person=42",
        "/v1/images?camera=a%00b",
        "/v1/people/not-a-uuid",
    ],
)
async def test_malformed_input_is_422_with_a_readable_reason(client, url):
    r = await client.get(url)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    assert detail.startswith("invalid request: ")


async def test_list_filters_newest_first_and_paginates(client, seed_image, person):
    camera = f"cam-{uuid.uuid4()}"
    bob = await person("Bob")
    oldest = await seed_image(camera=camera, status="failed", submitted_at=_ts(3), reason="corrupt_image")
    middle = await seed_image(camera=camera, status="processed", submitted_at=_ts(2), faces=((bob, "Bob"),))
    newest = await seed_image(camera=camera, status="unresolved", submitted_at=_ts(1), reason="no_face")

    r = await client.get("/v1/images", params={"camera": camera})
    assert r.status_code == 200
    assert r.json()["count"] == 3
    assert [i["id"] for i in r.json()["data"]] == [str(newest), str(middle), str(oldest)]

    page = (await client.get("/v1/images", params={"camera": camera, "limit": 2, "offset": 2})).json()
    assert page["count"] == 3
    assert [i["id"] for i in page["data"]] == [str(oldest)]

    failed = (await client.get("/v1/images", params={"camera": camera, "status": "failed"})).json()
    assert [(i["id"], i["status_reason"]) for i in failed["data"]] == [(str(oldest), "corrupt_image")]

    by_person = (await client.get("/v1/images", params={"person": str(bob)})).json()
    assert by_person["count"] == 1
    assert by_person["data"][0]["faces"][0]["person_name"] == "Bob"


async def test_list_defaults_to_fifty_newest(client):
    r = await client.get("/v1/images")
    assert r.status_code == 200
    assert len(r.json()["data"]) <= 50


# --------------------------------------------------------------------------- people


async def test_create_person_publishes_person_enrolled_and_retries_safely(client, tail, db, forget):
    gallery = tail(GALLERY)
    person_id = uuid.uuid4()
    forget(person_id)

    r = await client.post("/v1/people", json={"id": str(person_id), "name": "  Grace Hopper "})

    assert r.status_code == 201
    body = r.json()
    assert (body["id"], body["name"], body["face_count"]) == (str(person_id), "Grace Hopper", 0)
    env = await gallery.find(person_key(str(person_id)))
    assert env.source == "api"
    assert isinstance(env.data, PersonEnrolled)
    assert (env.data.person_id, env.data.name) == (str(person_id), "Grace Hopper")

    again = await client.post("/v1/people", json={"id": str(person_id), "name": "Grace Hopper"})
    assert again.status_code == 201
    assert again.json() == body
    assert await db.fetchval("SELECT count(*) FROM people WHERE id = $1", person_id) == 1

    other = await client.post("/v1/people", json={"id": str(person_id), "name": "Somebody Else"})
    assert other.status_code == 409
    assert "another name" in other.json()["detail"]


async def test_create_person_without_id_gets_one(client, db, forget):
    r = await client.post("/v1/people", json={"name": "Ada"})
    assert r.status_code == 201
    person_id = uuid.UUID(r.json()["id"])
    forget(person_id)
    assert await db.fetchval("SELECT name FROM people WHERE id = $1", person_id) == "Ada"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "   "},
        {"name": ""},
        {"name": "x" * 201},
        {"name": "a\u0000b"},
        {},
        {"name": "A", "id": "nope"},
    ],
)
async def test_create_person_rejects_bad_bodies(client, body):
    r = await client.post("/v1/people", json=body)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str)


async def test_create_person_rejects_invalid_json(client):
    r = await client.post("/v1/people", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


async def test_broker_down_is_503_and_stores_nothing(app, client, db):
    # A real producer whose broker does not exist: the delivery times out after 1 s.
    dead = AsyncProducer({"bootstrap.servers": "127.0.0.1:1", "delivery.timeout.ms": 1000, "log_level": 0})
    app.dependency_overrides[get_publisher] = lambda: Publisher(dead, source="api")
    try:
        person_id = uuid.uuid4()
        r = await client.post("/v1/people", json={"id": str(person_id), "name": "Nobody"})
    finally:
        del app.dependency_overrides[get_publisher]
        await asyncio.to_thread(dead.close, 2)
    assert r.status_code == 503
    assert "did not acknowledge" in r.json()["detail"]
    assert int(r.headers["retry-after"]) >= 1
    assert await db.fetchval("SELECT count(*) FROM people WHERE id = $1", person_id) == 0


async def test_people_list_detail_and_images(client, seed_image, person):
    name = f"!api-test {uuid.uuid4()}"  # "!" sorts before letters: on the first page by name
    person_id = await person(name)
    image_id = await seed_image(faces=((person_id, name),))
    await seed_image(faces=((None, None),))

    listed = (await client.get("/v1/people", params={"limit": 500})).json()
    assert {"id": str(person_id), "name": name, "face_count": 0} in [
        {k: p[k] for k in ("id", "name", "face_count")} for p in listed["data"]
    ]
    one = (await client.get("/v1/people", params={"limit": 1})).json()
    assert len(one["data"]) == 1
    assert one["count"] == listed["count"]

    detail = await client.get(f"/v1/people/{person_id}")
    assert detail.status_code == 200
    assert (detail.json()["name"], detail.json()["faces"]) == (name, [])

    images = (await client.get(f"/v1/people/{person_id}/images")).json()
    assert images["count"] == 1
    assert images["data"][0]["id"] == str(image_id)


@pytest.mark.parametrize("suffix", ["", "/images"])
async def test_unknown_person_is_404(client, suffix):
    r = await client.get(f"/v1/people/{uuid.uuid4()}{suffix}")
    assert r.status_code == 404
    assert r.json()["detail"].startswith("no person with id ")


# --------------------------------------------------------------------------- enrollment


@pytest_asyncio.fixture(loop_scope="module")
async def enrolled_person(client, forget) -> uuid.UUID:
    r = await client.post("/v1/people", json={"name": "api-test person"})
    assert r.status_code == 201
    person_id = uuid.UUID(r.json()["id"])
    forget(person_id)
    return person_id


async def test_enroll_face_publishes_face_enrolled(client, tail, enrolled_person, faces_dir: Path):
    gallery = tail(GALLERY)
    photo = (faces_dir / "sample" / "examples" / "obama.jpg").read_bytes()
    face_id = uuid.uuid4()

    r = await client.post(
        f"/v1/people/{enrolled_person}/faces",
        params={"face_id": str(face_id)},
        files={"file": ("obama.jpg", photo, "image/jpeg")},
    )

    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["face_id"], body["person_id"]) == (str(face_id), str(enrolled_person))
    assert body["faces_found"] == 1
    box = body["box"]
    assert box["right"] > box["left"]
    assert box["bottom"] > box["top"]

    env = await gallery.find(face_key(str(enrolled_person), str(face_id)))
    assert isinstance(env.data, FaceEnrolled)
    assert len(env.data.encoding) == 128
    assert env.data.box.model_dump() == box
    assert env.data.source_sha256 == hashlib.sha256(photo).hexdigest()
    assert env.data.filename == "obama.jpg"
    assert env.data.model.detector == "hog"

    # A retry with the same key (here as the header) returns the stored face, adds nothing.
    again = await client.post(
        f"/v1/people/{enrolled_person}/faces",
        headers={"Idempotency-Key": str(face_id)},
        files={"file": ("obama.jpg", photo, "image/jpeg")},
    )
    assert again.status_code == 201
    assert again.json()["face_id"] == str(face_id)
    assert again.json()["faces_found"] is None
    person = (await client.get(f"/v1/people/{enrolled_person}")).json()
    assert person["face_count"] == 1
    assert person["faces"][0]["box"] == box


async def test_enroll_photo_without_a_face_is_422(client, enrolled_person, faces_dir: Path, db):
    photo = (faces_dir / "extras" / "no_face" / "dlib_horses.jpg").read_bytes()
    r = await client.post(f"/v1/people/{enrolled_person}/faces", files={"file": ("horses.jpg", photo)})
    assert r.status_code == 422
    assert r.json() == {"detail": "no face found in the photo"}
    assert await db.fetchval("SELECT count(*) FROM person_faces WHERE person_id = $1", enrolled_person) == 0


async def test_a_face_too_blurred_to_be_a_template_is_422_unless_accepted(
    client, enrolled_person, faces_dir: Path, db
):
    from PIL import Image, ImageFilter

    out = io.BytesIO()
    sharp = Image.open(faces_dir / "sample/examples/obama-480p.jpg").convert("RGB")
    sharp.filter(ImageFilter.GaussianBlur(8)).save(out, "JPEG")
    photo = out.getvalue()
    url = f"/v1/people/{enrolled_person}/faces"
    r = await client.post(url, files={"file": ("soft.jpg", photo)})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["detail"].startswith("the face would make a poor template: the face is blurred")
    assert [(q["code"], q["severity"]) for q in body["quality"]] == [("blurred", "refuse")]
    assert body["quality"][0]["value"] < body["quality"][0]["limit"]
    assert await db.fetchval("SELECT count(*) FROM person_faces WHERE person_id = $1", enrolled_person) == 0

    r = await client.post(url, params={"accept_poor": "true"}, files={"file": ("soft.jpg", photo)})
    assert r.status_code == 201, r.text
    assert [q["code"] for q in r.json()["quality"]] == ["blurred"]
    assert await db.fetchval("SELECT count(*) FROM person_faces WHERE person_id = $1", enrolled_person) == 1


async def test_enrollment_stores_the_encoding_the_recognizers_scan_computes(
    client, tail, enrolled_person, faces_dir: Path, settings
):
    """The photo is scanned by the recognizer pool (faces.scan), with the same settings and
    jitters as when the API encoded it itself: the same face, box, crop and model as
    scan_photo's, and the same encoding but for dlib's random jitters (two scans of one
    photo at 10 jitters are 0.04-0.05 apart; tests/unit/test_recognizer_scan.py shows one
    jitter gives exactly scan_photo's)."""
    gallery = tail(GALLERY)
    photo = (faces_dir / "sample/examples/obama2.jpg").read_bytes()
    r = await client.post(f"/v1/people/{enrolled_person}/faces", files={"file": ("o2.jpg", photo)})
    assert r.status_code == 201, r.text

    env = await gallery.find(face_key(str(enrolled_person), r.json()["face_id"]))
    direct = await asyncio.to_thread(scan_photo, photo, settings.enroll_num_jitters)
    assert isinstance(direct, ScanFaceFound)
    assert np.linalg.norm(np.subtract(env.data.encoding, floats(direct.encoding))) < 0.12
    assert env.data.model == direct.model
    assert env.data.box == direct.box
    crop = await client.get(f"/v1/people/{enrolled_person}/faces/{r.json()['face_id']}/crop")
    assert crop.content == direct.crop


async def test_an_answer_addressed_to_another_replica_is_ignored(app, kafka_bootstrap: str):
    replies = app.state.resources.replies
    request_id = str(uuid.uuid4())
    answer = replies.expect(request_id)
    try:

        def reply(to: str, outcome: ScanOutcome) -> bytes:
            finished = FaceScanFinished(
                request_id=request_id,
                reply_to=to,
                kind=ScanKind.DETECT,
                outcome=outcome,
                finished_at=datetime.now(UTC),
            )
            return encode_data(finished, source="a-test")

        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        # One key, so one partition: read in this order. Were the first taken, it would be the answer.
        producer.produce(SCANNED, key=request_id, value=reply("another-replica", ScanNoFace()))
        producer.produce(
            SCANNED, key=request_id, value=reply(replies.replica, ScanRejected(reason="r", detail="ours"))
        )
        assert await asyncio.to_thread(producer.flush, 10) == 0
        got = await asyncio.wait_for(answer, 30)
    finally:
        replies.forget(request_id)
    assert got == ScanRejected(reason="r", detail="ours")


async def test_enrollment_without_a_running_recognizer_is_503_after_the_scan_timeout(
    settings, scan_recognizer, enrolled_person, faces_dir: Path, db
):
    photo = (faces_dir / "sample/examples/obama.jpg").read_bytes()
    quick = create_app(settings.model_copy(update={"scan_timeout_s": 2.0}))
    with scan_recognizer.paused():
        async with (
            quick.router.lifespan_context(quick),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=quick),
                base_url="http://api",
                headers={"X-API-Key": ADMIN_KEY},
            ) as client,
        ):
            started = time.monotonic()
            r = await client.post(f"/v1/people/{enrolled_person}/faces", files={"file": ("o.jpg", photo)})
            waited = time.monotonic() - started
    assert r.status_code == 503, r.text
    assert r.json() == {
        "detail": "no recognizer answered the scan within 2 s (SCAN_TIMEOUT_S): are the recognizers running?"
    }
    assert r.headers["Retry-After"] == "5"
    assert 2 <= waited < 15
    assert await db.fetchval("SELECT count(*) FROM person_faces WHERE person_id = $1", enrolled_person) == 0


async def test_enroll_not_an_image_is_422_with_the_reason(client, enrolled_person):
    r = await client.post(
        f"/v1/people/{enrolled_person}/faces", files={"file": ("notes.jpg", b"just some text", "image/jpeg")}
    )
    assert r.status_code == 422
    assert r.json()["detail"].startswith("not a usable image (not_an_image): ")


async def test_enroll_without_a_file_is_422(client, enrolled_person):
    r = await client.post(f"/v1/people/{enrolled_person}/faces", data={"other": "x"})
    assert r.status_code == 422
    assert "file" in r.json()["detail"]


async def test_enroll_for_unknown_person_is_404(client):
    r = await client.post(f"/v1/people/{uuid.uuid4()}/faces", files={"file": ("a.jpg", b"x")})
    assert r.status_code == 404


async def test_enroll_file_over_the_limit_is_413(app, client, settings, enrolled_person):
    small = settings.model_copy(update={"enroll_max_bytes": 1000})
    app.dependency_overrides[get_settings] = lambda: small
    try:
        r = await client.post(f"/v1/people/{enrolled_person}/faces", files={"file": ("a.jpg", b"x" * 1001)})
    finally:
        del app.dependency_overrides[get_settings]
    assert r.status_code == 413
    assert "larger than 1000 bytes" in r.json()["detail"]


async def test_enroll_with_conflicting_keys_is_422(client, enrolled_person):
    r = await client.post(
        f"/v1/people/{enrolled_person}/faces",
        params={"face_id": str(uuid.uuid4())},
        headers={"Idempotency-Key": str(uuid.uuid4())},
        files={"file": ("a.jpg", b"x")},
    )
    assert r.status_code == 422


# --------------------------------------------------------------------------- re-runs


async def test_rerun_publishes_the_next_run_with_the_stored_bytes(client, seed_image, tail, db):
    submitted = tail(SUBMITTED)
    content = b"the original upload"
    image_id = await seed_image(
        status="failed", run=2, content=content, camera="door", reason="corrupt_image"
    )

    r = await client.post(f"/v1/images/{image_id}/rerun")

    assert r.status_code == 202
    assert r.json() == {"image_id": str(image_id), "run": 3}
    env = await submitted.find(str(image_id))
    event = env.data
    assert isinstance(event, ImageSubmitted)
    assert (event.image_id, event.run, event.filename, event.camera) == (
        str(image_id),
        3,
        "photo.jpg",
        "door",
    )
    assert base64.b64decode(event.image_b64) == content
    assert event.sha256 == hashlib.sha256(content).hexdigest()
    assert event.size_bytes == len(content)
    assert event.metadata == {"k": "v"}
    # The projector, not the API, moves the image back to pending.
    assert await db.fetchval("SELECT status FROM images WHERE id = $1", image_id) == "failed"


@pytest.mark.parametrize("status", ["pending", "processed"])
async def test_rerun_of_an_image_still_running_or_named_is_409(client, seed_image, status):
    image_id = await seed_image(status=status)
    r = await client.post(f"/v1/images/{image_id}/rerun")
    assert r.status_code == 409
    assert f"is {status}" in r.json()["detail"]


async def test_rerun_without_stored_bytes_is_409(client, seed_image):
    image_id = await seed_image(status="unresolved", content=None)
    r = await client.post(f"/v1/images/{image_id}/rerun")
    assert r.status_code == 409
    assert "no longer stored" in r.json()["detail"]


async def test_rerun_of_unknown_image_is_404(client):
    r = await client.post(f"/v1/images/{uuid.uuid4()}/rerun")
    assert r.status_code == 404


async def test_rerun_all_of_a_status(client, seed_image, tail):
    submitted = tail(SUBMITTED)
    # The oldest unresolved images in the shared database, so limit=3 picks exactly these.
    long_ago = datetime(1970, 1, 2, tzinfo=UTC)
    first = await seed_image(status="unresolved", submitted_at=long_ago, run=0)
    second = await seed_image(status="unresolved", submitted_at=long_ago + timedelta(seconds=1), run=4)
    await seed_image(status="unresolved", submitted_at=long_ago + timedelta(seconds=2), content=None)

    r = await client.post("/v1/images/rerun", params={"status": "unresolved", "limit": 3})

    assert r.status_code == 202
    assert r.json() == {"rerun": 2, "skipped": 1, "matched": 3, "not_rerunnable": []}
    assert (await submitted.find(str(first))).data.run == 1
    assert (await submitted.find(str(second))).data.run == 5


async def test_rerun_of_a_camera_and_window_newest_or_oldest_first(client, seed_image, tail):
    submitted = tail(SUBMITTED)
    camera = f"gate-{uuid.uuid4().hex[:8]}"
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    before = await seed_image(status="failed", camera=camera, submitted_at=at - timedelta(hours=1))
    a = await seed_image(status="failed", camera=camera, submitted_at=at, run=1)
    b = await seed_image(status="unresolved", camera=camera, submitted_at=at + timedelta(minutes=1), run=2)
    c = await seed_image(status="failed", camera=camera, submitted_at=at + timedelta(minutes=2), run=3)
    named = await seed_image(status="processed", camera=camera, submitted_at=at + timedelta(minutes=3))
    other_camera = await seed_image(status="failed", camera=f"{camera}-b", submitted_at=at)
    window = {"camera": camera, "since": at.isoformat(), "until": (at + timedelta(hours=1)).isoformat()}

    # Each request re-runs images no earlier one touched: what a re-run did to an image's
    # status (the projector sets it to pending) must not matter here.
    r = await client.post("/v1/images/rerun", json={**window, "order": "newest", "limit": 1})
    assert r.status_code == 202, r.text
    assert r.json() == {"rerun": 1, "skipped": 0, "matched": 1, "not_rerunnable": []}
    assert (await submitted.find(str(c))).data.run == 4

    r = await client.post("/v1/images/rerun", json={**window, "limit": 1})  # oldest first
    assert r.json()["rerun"] == 1
    assert (await submitted.find(str(a))).data.run == 2

    r = await client.post("/v1/images/rerun", json={**window, "status": ["unresolved"]})
    assert r.json()["matched"] == 1
    assert (await submitted.find(str(b))).data.run == 3

    # Outside the window, named, another camera: never in the scope.
    outside = [str(before), str(named), str(other_camera)]
    r = await client.post("/v1/images/rerun", json={**window, "ids": outside})
    assert r.json() == {"rerun": 0, "skipped": 0, "matched": 0, "not_rerunnable": outside}


async def test_rerun_by_ids_lists_those_it_did_not_rerun(client, seed_image, tail):
    submitted = tail(SUBMITTED)
    failed = await seed_image(status="failed", run=6)
    named = await seed_image(status="processed")
    unknown = uuid.uuid4()

    r = await client.post("/v1/images/rerun", json={"ids": [str(failed), str(named), str(unknown)]})

    assert r.status_code == 202, r.text
    assert r.json() == {"rerun": 1, "skipped": 0, "matched": 1, "not_rerunnable": [str(named), str(unknown)]}
    assert (await submitted.find(str(failed))).data.run == 7


@pytest.mark.parametrize(
    ("params", "body"),
    [
        ({"status": "pending"}, None),
        ({"status": "failed", "limit": 0}, None),
        (None, {"status": ["processed"]}),
        (None, {"cameras": ["typo"]}),  # an unknown field is refused, not ignored
        (None, {"since": "2026-03-01T12:00:00Z", "until": "2026-03-01T11:00:00Z"}),
        (None, {"since": "2026-03-01T12:00:00"}),  # no time zone
        (None, {"ids": []}),
        (None, {"ids": ["not-a-uuid"]}),
        (None, {"order": "random"}),
        (None, {"limit": 10_001}),
        ({"status": "failed"}, {"status": ["failed"]}),  # said twice
        ({"limit": 5}, {"limit": 5}),
    ],
)
async def test_rerun_all_rejects_bad_parameters(client, params, body):
    r = await client.post("/v1/images/rerun", params=params, json=body)
    assert r.status_code == 422, r.text


# --------------------------------------------------------------------------- pages and ops


async def test_page_lists_images_and_escapes_client_text(client, seed_image, person):
    villain = await person("<b>Mallory</b>")
    await seed_image(
        filename="<script>alert(1)</script>.jpg",
        status="unresolved",
        reason="no_face",
        faces=((villain, "x"),),
    )

    r = await client.get("/")

    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "<script>alert(1)" not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in r.text
    assert "&lt;b&gt;Mallory&lt;/b&gt;" in r.text
    assert f"href='/people/{villain}'" in r.text
    assert "class='status unresolved'" in r.text

    filtered = await client.get("/", params={"status": "failed"})
    assert filtered.status_code == 200
    assert "&lt;script&gt;" not in filtered.text

    page = await client.get(f"/people/{villain}")
    assert page.status_code == 200
    assert "<b>Mallory" not in page.text
    assert "&lt;b&gt;Mallory&lt;/b&gt;" in page.text


async def test_page_for_unknown_person_is_404(client):
    r = await client.get(f"/people/{uuid.uuid4()}")
    assert r.status_code == 404


async def test_health_readiness_and_metrics(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}

    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {"database": True, "kafka": True, "scan_replies": True}}

    await client.get(f"/v1/images/{uuid.uuid4()}")
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    # Labelled by route template, so the label set stays bounded.
    for labels in (
        'method="GET",route="/healthz",service="api",status="200"',
        'method="GET",route="/v1/images/{image_id}",service="api",status="404"',
    ):
        assert f"facestream_http_requests_total{{{labels}}}" in metrics.text


# --------------------------------------------------------------------------- what the operator sees

MODEL = {
    "detector": "hog",
    "encoder": "dlib_face_recognition_resnet_model_v1",
    "upsample": 1,
    "detection_max_side": 1600,
    "num_jitters": 1,
}


def _found(photo: bytes) -> list[Any]:
    from recognizer.core import DetectionConfig, find_faces, load_image

    return find_faces(load_image(photo), DetectionConfig())


def _box(face: Any) -> tuple[int, int, int, int]:
    b = face.box
    return (b.top, b.right, b.bottom, b.left)


async def test_image_bytes_thumbnails_and_crops_are_served_cached_and_erased(
    client, seed_image, db, faces_dir: Path
):
    photo = (faces_dir / "sample/examples/two_people.jpg").read_bytes()
    faces = await asyncio.to_thread(_found, photo)
    size = _image_size(photo)
    image_id = await seed_image(
        content=photo, faces=((None, None), (None, None)), boxes=tuple(_box(f) for f in faces), size=size
    )

    file = await client.get(f"/v1/images/{image_id}/file")
    assert file.status_code == 200
    assert file.content == photo
    assert file.headers["content-type"] == "image/jpeg"
    assert file.headers["x-content-type-options"] == "nosniff"
    for path, side in (("thumbnail", 240), ("preview", min(1600, max(size))), ("faces/1/crop", 160)):
        r = await client.get(f"/v1/images/{image_id}/{path}")
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"] == "image/jpeg"
        assert max(_image_size(r.content)) == side
    kinds = await db.fetch("SELECT kind FROM thumbnails WHERE image_id = $1 ORDER BY kind", image_id)
    assert [k["kind"] for k in kinds] == ["face:1", "preview", "thumb"]  # made once, kept
    again = await client.get(f"/v1/images/{image_id}/thumbnail")
    assert again.content == (
        await db.fetchval("SELECT content FROM thumbnails WHERE image_id = $1 AND kind = 'thumb'", image_id)
    )

    assert (await client.get(f"/v1/images/{image_id}/faces/7/crop")).status_code == 404
    assert (await client.get(f"/v1/images/{uuid.uuid4()}/thumbnail")).status_code == 404
    anonymous = await client.get(f"/v1/images/{image_id}/file", headers={"X-API-Key": ""})
    assert anonymous.status_code == 401

    assert (await client.delete(f"/v1/images/{image_id}")).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM thumbnails WHERE image_id = $1", image_id) == 0
    for path in ("file", "thumbnail", "faces/0/crop"):
        assert (await client.get(f"/v1/images/{image_id}/{path}")).status_code == 404


async def test_an_image_whose_bytes_are_not_kept_has_no_thumbnail(client, seed_image):
    gone = await seed_image(content=None)
    r = await client.get(f"/v1/images/{gone}/thumbnail")
    assert r.status_code == 404
    assert "no longer stored" in r.json()["detail"]
    broken = await seed_image(content=b"stored image bytes")
    assert (await client.get(f"/v1/images/{broken}/thumbnail")).status_code == 409


def _image_size(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).size


async def test_filters_and_keyset_pages_do_not_shift_when_images_arrive(client, seed_image):
    camera = f"cam-{uuid.uuid4().hex[:8]}"
    base = datetime(2026, 11, 3, 12, tzinfo=UTC)
    ids = [
        await seed_image(
            camera=camera, filename=f"{camera}/shot_{i}.jpg", submitted_at=base + timedelta(minutes=i)
        )
        for i in range(5)
    ]
    newest_first = list(reversed(ids))

    seen: list[str] = []
    params: dict[str, Any] = {"camera": camera, "limit": 2}
    first = (await client.get("/v1/images", params=params)).json()
    seen += [i["id"] for i in first["data"]]
    assert first["count"] == 5
    assert first["next_cursor"]
    # A newer image arrives between two page loads: the next page does not shift.
    await seed_image(camera=camera, filename="late.jpg", submitted_at=base + timedelta(hours=1))
    cursor = first["next_cursor"]
    while cursor:
        page = (await client.get("/v1/images", params={**params, "cursor": cursor})).json()
        seen += [i["id"] for i in page["data"]]
        cursor = page["next_cursor"]
    assert seen == [str(i) for i in newest_first]

    window = {
        "camera": camera,
        "since": (base + timedelta(minutes=1)).isoformat(),
        "until": (base + timedelta(minutes=3)).isoformat(),
    }
    r = await client.get("/v1/images", params=window)
    assert [i["id"] for i in r.json()["data"]] == [str(ids[2]), str(ids[1])]
    by_name = await client.get("/v1/images", params={"filename": f"{camera.upper()}/SHOT_3"})
    assert [i["id"] for i in by_name.json()["data"]] == [str(ids[3])]
    wildcard = await client.get("/v1/images", params={"camera": camera, "filename": "%"})
    assert wildcard.json()["data"] == []  # a LIKE wildcard is a plain character


@pytest.mark.parametrize(
    "query",
    [
        "stauts=failed",
        "status=failed&page=2",
        "cursor=bm9wZQ",
        "cursor=x&offset=3",
        "since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
        "since=yesterday",
    ],
)
async def test_bad_or_unknown_list_parameters_are_422(client, query):
    r = await client.get(f"/v1/images?{query}")
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], str)


async def test_pages_answer_a_bad_filter_and_an_empty_list_readably(client):
    bad = await client.get("/?status=bogus", headers={"Accept": "text/html"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("text/html")
    assert "That filter does not work" in bad.text
    assert "status" in bad.text
    unknown = await client.get("/?colour=red")
    assert unknown.status_code == 422
    assert "colour" in unknown.text
    assert "<html" in unknown.text
    empty = await client.get("/", params={"camera": f"nowhere-{uuid.uuid4()}"})
    assert empty.status_code == 200
    assert "No images match these filters." in empty.text
    missing = await client.get(f"/images/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert "<html" in missing.text


async def test_a_group_photo_asks_which_face_and_the_same_photo_is_not_enrolled_twice(
    client, tail, enrolled_person, faces_dir: Path
):
    photo = (faces_dir / "sample/examples/two_people.jpg").read_bytes()
    r = await client.post(f"/v1/people/{enrolled_person}/faces", files={"file": ("two.jpg", photo)})
    assert r.status_code == 422
    listed = r.json()["faces"]
    assert [f["index"] for f in listed] == [0, 1]
    assert "face_index" in r.json()["detail"]

    gallery = tail(GALLERY)
    chosen = await client.post(
        f"/v1/people/{enrolled_person}/faces", params={"face_index": 1}, files={"file": ("two.jpg", photo)}
    )
    assert chosen.status_code == 201, chosen.text
    assert chosen.json()["box"] == listed[1]["box"]
    face_id = chosen.json()["face_id"]
    event = await gallery.find(face_key(str(enrolled_person), face_id))
    assert event.data.source_sha256 == hashlib.sha256(photo).hexdigest()
    crop = await client.get(chosen.json()["crop_url"])
    assert crop.status_code == 200
    assert crop.headers["content-type"] == "image/jpeg"

    # Enrolling the same photo again stores nothing new, and publishes the stored face again
    # (same key and content), which heals a gallery topic that lost it.
    republished = tail(GALLERY)
    twice = await client.post(
        f"/v1/people/{enrolled_person}/faces", params={"face_index": 0}, files={"file": ("again.jpg", photo)}
    )
    assert twice.status_code == 200
    assert twice.json()["face_id"] == face_id
    person = (await client.get(f"/v1/people/{enrolled_person}")).json()
    assert [f["face_id"] for f in person["faces"]] == [face_id]
    again = await republished.find(face_key(str(enrolled_person), face_id))
    assert again.data.encoding == event.data.encoding


async def test_rename_remove_a_face_and_merge_are_gallery_events(
    client, tail, forget, seed_image, faces_dir: Path
):
    gallery = tail(GALLERY)
    ann = (await client.post("/v1/people", json={"name": "Ann Merge"})).json()["id"]
    dup = (await client.post("/v1/people", json={"name": "Ann (duplicate)"})).json()["id"]
    forget(uuid.UUID(ann))
    forget(uuid.UUID(dup))
    examples = faces_dir / "sample/examples"
    first = await client.post(
        f"/v1/people/{ann}/faces", files={"file": ("o.jpg", (examples / "obama.jpg").read_bytes())}
    )
    wrong = await client.post(
        f"/v1/people/{dup}/faces", files={"file": ("b.jpg", (examples / "biden.jpg").read_bytes())}
    )
    kept = await client.post(
        f"/v1/people/{dup}/faces", files={"file": ("o2.jpg", (examples / "obama2.jpg").read_bytes())}
    )
    assert {first.status_code, wrong.status_code, kept.status_code} == {201}

    renamed = await client.patch(f"/v1/people/{ann}", json={"name": "Ann Merged"})
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Ann Merged"
    assert (await client.patch(f"/v1/people/{uuid.uuid4()}", json={"name": "x"})).status_code == 404

    removed = await client.delete(f"/v1/people/{dup}/faces/{wrong.json()['face_id']}")
    assert removed.status_code == 200
    assert (await client.delete(f"/v1/people/{dup}/faces/{wrong.json()['face_id']}")).status_code == 404

    seen = await seed_image(faces=((uuid.UUID(dup), None),))
    merged = await client.post(f"/v1/people/{ann}/merge", json={"from": dup})
    assert merged.status_code == 200, merged.text
    assert merged.json()["faces_moved"] == 1
    assert merged.json()["faces_relabelled"] == 1
    assert (await client.get(f"/v1/people/{dup}")).status_code == 404
    person = (await client.get(f"/v1/people/{ann}")).json()
    assert person["name"] == "Ann Merged"
    assert person["face_count"] == 2
    image = (await client.get(f"/v1/images/{seen}")).json()
    assert image["faces"][0]["person_id"] == ann
    assert image["faces"][0]["person_name"] == "Ann Merged"
    assert (await client.post(f"/v1/people/{ann}/merge", json={"from": ann})).status_code == 409

    # On the gallery, in order: the new name; the wrong face's tombstone; the moved face, with
    # the encoding it had; the duplicate's tombstones.
    rename = await gallery.find(person_key(ann))
    assert isinstance(rename.data, PersonEnrolled)
    moved_id = next(f["face_id"] for f in person["faces"] if f["face_id"] != first.json()["face_id"])
    moved = await gallery.find(face_key(ann, moved_id))
    original = await gallery.find(face_key(dup, kept.json()["face_id"]))
    assert moved.data.encoding == original.data.encoding


async def test_review_groups_unknown_faces_and_naming_one_enrolls_and_asks_for_rematches(
    client, tail, forget, seed_image, faces_dir: Path
):
    from schemas.encoding import pack
    from schemas.topics import RECOGNIZE

    examples = faces_dir / "sample/examples"
    obama = [
        await asyncio.to_thread(_found, (examples / n).read_bytes()) for n in ("obama.jpg", "obama2.jpg")
    ]
    biden = await asyncio.to_thread(_found, (examples / "biden.jpg").read_bytes())
    later = datetime.now(UTC) + timedelta(days=3650)  # the newest unknown faces of the shared database
    group = [
        await seed_image(
            status="unresolved",
            faces=((None, None),),
            encodings=(pack(f[0].encoding),),
            boxes=(_box(f[0]),),
            submitted_at=later + timedelta(seconds=i),
            model=MODEL,
        )
        for i, f in enumerate(obama)
    ]
    stranger = await seed_image(
        status="unresolved",
        faces=((None, None),),
        encodings=(pack(biden[0].encoding),),
        submitted_at=later + timedelta(seconds=5),
        model=MODEL,
    )

    groups = (await client.get("/v1/review/groups")).json()
    # Both photos of Obama fall in one group (with any other unknown Obama of the shared
    # database), and Biden is not in it.
    ours = [g for g in groups["groups"] if {f["image_id"] for f in g["faces"]} & {str(i) for i in group}]
    assert len(ours) == 1
    assert {str(i) for i in group} <= {f["image_id"] for f in ours[0]["faces"]}
    assert all(str(stranger) != f["image_id"] for f in ours[0]["faces"])

    gallery, recognize = tail(GALLERY), tail(RECOGNIZE)
    # Name only one face of the group: the other image is found by the scan (close to it).
    named = await client.post(
        "/v1/review/assign",
        json={"faces": [{"image_id": str(group[1]), "face_index": 0}], "name": "Reviewed Obama"},
    )
    assert named.status_code == 200, named.text
    body = named.json()
    forget(uuid.UUID(body["person_id"]))
    assert body["enrolled"] == 1
    assert body["rematched"] >= 2
    assert body["skipped"] == 0
    assert (await gallery.find(person_key(body["person_id"]))).data.name == "Reviewed Obama"
    for image_id in group:
        rematch = await recognize.find(str(image_id))
        assert rematch.type == "facestream.rematch.requested"
        assert rematch.data.run == 1
        assert rematch.data.faces[0].encoding is not None
    person = (await client.get(f"/v1/people/{body['person_id']}")).json()
    assert person["faces"][0]["source_image_id"] == str(group[1])
    assert person["faces"][0]["crop_url"] is None

    again = await client.post(
        "/v1/review/assign",
        json={"faces": [{"image_id": str(group[1]), "face_index": 0}], "name": "Reviewed Obama"},
    )
    assert again.json()["person_id"] == body["person_id"]
    assert again.json()["enrolled"] == 0
    gone = await client.post(
        "/v1/review/assign",
        json={"faces": [{"image_id": str(uuid.uuid4()), "face_index": 0}], "name": "Nobody"},
    )
    assert gone.status_code == 409
    both = await client.post(
        "/v1/review/assign",
        json={
            "faces": [{"image_id": str(group[0]), "face_index": 0}],
            "name": "x",
            "person_id": str(uuid.uuid4()),
        },
    )
    assert both.status_code == 422


# ---------------------------------------------------------------- confirmed sightings


async def _sighting(faces_dir: Path) -> tuple[bytes, tuple[int, int, int, int]]:
    """A face's stored encoding and box, as a recognizer stores them."""
    from schemas.encoding import pack

    found = await asyncio.to_thread(_found, (faces_dir / "sample/examples/biden.jpg").read_bytes())
    return pack(found[0].encoding), _box(found[0])


async def test_confirming_a_named_face_enrolls_its_stored_encoding_once(
    client, tail, seed_image, new_person, db, faces_dir: Path
):
    from schemas.encoding import unpack

    encoding, box = await _sighting(faces_dir)
    person = await new_person("Confirmed Biden")
    image_id = await seed_image(
        faces=((person, "Confirmed Biden"),), encodings=(encoding,), boxes=(box,), model=MODEL
    )
    gallery = tail(GALLERY)

    r = await client.post(f"/v1/images/{image_id}/faces/0/confirm")
    assert r.status_code == 201, r.text
    body = r.json()
    face_id = uuid.uuid5(person, f"{image_id}:0")
    assert body["face_id"] == str(face_id)
    assert body["person_id"] == str(person)
    assert (body["image_id"], body["face_index"]) == (str(image_id), 0)
    assert body["source_image_id"] == str(image_id)
    assert body["enrolled"] is True
    assert body["was_named"] is None
    assert body["rematched"] is False
    enrolled = await gallery.find(face_key(str(person), str(face_id)))
    assert isinstance(enrolled.data, FaceEnrolled)
    assert enrolled.data.encoding == floats(unpack(encoding))
    row = await db.fetchrow("SELECT * FROM person_faces WHERE id = $1", face_id)
    assert (row["person_id"], row["source_image_id"], row["source_face_index"]) == (person, image_id, 0)

    again = await client.post(f"/v1/images/{image_id}/faces/0/confirm", json={})
    assert again.status_code == 201, again.text
    assert again.json()["face_id"] == str(face_id)
    assert again.json()["enrolled"] is False
    detail = (await client.get(f"/v1/people/{person}")).json()
    assert [f["face_id"] for f in detail["faces"]] == [str(face_id)]


async def test_confirming_a_face_as_another_person_enrolls_it_for_them_and_matches_the_image_again(
    client, tail, seed_image, new_person, db, faces_dir: Path
):
    from schemas.topics import RECOGNIZE

    encoding, box = await _sighting(faces_dir)
    wrong, right = await new_person("Named by mistake"), await new_person("Corrected Biden")
    named = await seed_image(
        faces=((wrong, "Named by mistake"),), encodings=(encoding,), boxes=(box,), model=MODEL
    )
    unknown = await seed_image(
        status="unresolved", faces=((None, None),), encodings=(encoding,), boxes=(box,), model=MODEL
    )
    gallery, recognize = tail(GALLERY), tail(RECOGNIZE)

    r = await client.post(f"/v1/images/{named}/faces/0/confirm", json={"person_id": str(right)})
    assert r.status_code == 201, r.text
    body = r.json()
    face_id = uuid.uuid5(right, f"{named}:0")
    assert (body["person_id"], body["face_id"]) == (str(right), str(face_id))
    assert body["was_named"] == str(wrong)
    assert body["enrolled"] is True
    assert body["rematched"] is True
    enrolled = await gallery.find(face_key(str(right), str(face_id)))
    rematch = await recognize.find(str(named))
    assert rematch.type == "facestream.rematch.requested"
    assert rematch.data.run == 1
    assert rematch.data.faces[0].encoding is not None
    # The recognizers match it again only once their gallery holds the new face.
    assert rematch.data.gallery_version > 0
    assert enrolled.data.face_id == str(face_id)
    assert await db.fetchval("SELECT count(*) FROM person_faces WHERE person_id = $1", wrong) == 0

    # An unknown face is named the same way, without a "was named".
    r = await client.post(f"/v1/images/{unknown}/faces/0/confirm", json={"person_id": str(right)})
    assert r.status_code == 201, r.text
    assert (r.json()["was_named"], r.json()["rematched"]) == (None, True)
    assert (await recognize.find(str(unknown))).data.run == 1


async def test_confirming_what_cannot_be_confirmed_says_why(client, seed_image, new_person, faces_dir: Path):
    encoding, box = await _sighting(faces_dir)
    person = await new_person("Confirm refusals")
    unknown = await seed_image(
        status="unresolved", faces=((None, None),), encodings=(encoding,), boxes=(box,), model=MODEL
    )
    r = await client.post(f"/v1/images/{unknown}/faces/0/confirm")
    assert r.status_code == 409
    assert "name it with person_id" in r.json()["detail"]
    without_encoding = await seed_image(faces=((person, "Confirm refusals"),), model=MODEL)
    r = await client.post(f"/v1/images/{without_encoding}/faces/0/confirm")
    assert r.status_code == 409
    assert "no stored encoding" in r.json()["detail"]

    named = await seed_image(
        faces=((person, "Confirm refusals"),), encodings=(encoding,), boxes=(box,), model=MODEL
    )
    for url, body, detail in (
        (f"/v1/images/{uuid.uuid4()}/faces/0/confirm", None, "no image with id"),
        (f"/v1/images/{named}/faces/3/confirm", None, "has no face 3"),
        (f"/v1/images/{named}/faces/0/confirm", {"person_id": str(uuid.uuid4())}, "no person with id"),
    ):
        r = await client.post(url, json=body)
        assert r.status_code == 404, (url, r.text)
        assert detail in r.json()["detail"]
    assert (await client.get(f"/v1/people/{person}")).json()["faces"] == []
