"""Erasure: a deleted person stops being matched everywhere; a deleted image is gone."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from common.erasure import IMAGE_LOCK_SPACE, erase_person
from common.kafka import ensure_topics, watermarks
from schemas import codec, topics
from schemas import encoding as enc
from schemas import events as ev
from schemas.topics import DAY_MS, RETENTION_DAYS, Topic, face_key, person_key
from tests.e2e.test_lfw import enroll, submit, wait_final
from tests.integration.test_dead_letters import _republished, _submitted_ends
from tests.integration.test_pipeline import consume_until, recognized
from tests.platform import Platform, role_urls, until, wait_committed, wait_gallery_applied

pytestmark = pytest.mark.integration

#: The stream worker's consumer group (its Faust app id in the tests).
STREAM_GROUP = "facestream-stream"
#: An advisory lock key the gate trigger waits on.
GATE = 0x7465


def test_a_deleted_person_is_no_longer_matched_by_any_replica_and_is_anonymised(
    platform: Platform, database_url: str, faces_dir: Path
) -> None:
    person = sorted(p for p in (faces_dir / "lfw-dev/known").iterdir() if len(list(p.iterdir())) >= 4)[-2]
    photos = sorted(person.iterdir())
    with (
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api,
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
    ):
        person_id = enroll(api, person.name, photos[0])
        wait_gallery_applied(platform)
        # several copies: the recognize topic spreads them over every recognizer process
        before = wait_final(api, list(submit(ingest, [photos[0]] * 6)))
        assert all(r["status"] == "processed" for r in before.values()), before
        assert all(r["faces"][0]["person_id"] == person_id for r in before.values())
        assert None not in asyncio.run(_encodings(database_url, list(before)))

        r = api.delete(f"/v1/people/{person_id}")
        assert r.status_code == 200, r.text
        assert r.json()["faces_removed"] == 1
        erased_at = time.monotonic()
        while True:
            after = wait_final(api, list(submit(ingest, [photos[0]] * 6)))
            if all(res["faces"][0]["person_id"] is None for res in after.values()):
                break
            assert time.monotonic() - erased_at < 30, "a replica still matches the erased person"
        elapsed = time.monotonic() - erased_at
        print(f"\nerased person unmatched by every replica {elapsed:.2f}s after DELETE (incl. recognition)")
        assert elapsed < 10

        assert api.get(f"/v1/people/{person_id}").status_code == 404
        assert api.delete(f"/v1/people/{person_id}").status_code == 404
        for image_id in before:
            old = api.get(f"/v1/images/{image_id}").json()
            assert old["status"] == "unresolved"
            assert old["status_reason"] == "unknown_faces"
            assert [f["person_id"] for f in old["faces"]] == [None]
            assert [f["person_name"] for f in old["faces"]] == [None]
        assert api.get("/v1/images", params={"person": person_id}).json()["count"] == 0
        # and anonymous: no encoding of theirs is kept as an "unknown face"
        assert asyncio.run(_encodings(database_url, list(before))) == [None] * len(before)


async def _encodings(database_url: str, image_ids: list[str]) -> list[bytes | None]:
    """The stored encodings of the images' faces."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT encoding FROM faces WHERE image_id = ANY($1::uuid[])", image_ids)
        return [None if r["encoding"] is None else bytes(r["encoding"]) for r in rows]
    finally:
        await conn.close()


def test_a_deleted_image_is_gone_and_stays_gone(platform: Platform, faces_dir: Path) -> None:
    with (
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api,
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
    ):
        [image_id] = submit(ingest, [faces_dir / "sample/examples/biden.jpg"])
        wait_final(api, [image_id])
        assert api.delete(f"/v1/images/{image_id}").status_code == 200
        assert api.get(f"/v1/images/{image_id}").status_code == 404
        assert api.post(f"/v1/images/{image_id}/rerun").status_code == 404
        assert api.delete(f"/v1/images/{image_id}").status_code == 404
        assert api.delete("/v1/images/not-a-uuid").status_code == 422


# --------------------------------------------------------------------------- total erasure


def test_topics_created_by_an_older_release_get_the_declared_retention(kafka_bootstrap: str) -> None:
    """The dead letters kept images for 30 days; a running cluster must be brought to 7."""
    conf: dict[str, Any] = {"bootstrap.servers": kafka_bootstrap}
    name = f"test-retention-{uuid.uuid4().hex[:8]}"
    ensure_topics(conf, [Topic(name, 1, {"retention.ms": str(30 * DAY_MS), "cleanup.policy": "delete"})])

    ensure_topics(
        conf, [Topic(name, 1, {"retention.ms": str(RETENTION_DAYS * DAY_MS), "cleanup.policy": "delete"})]
    )

    admin = AdminClient(conf)

    def retention_ms(topic: str) -> int:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        [config] = [f.result(timeout=10) for f in admin.describe_configs([resource]).values()]
        return int(config["retention.ms"].value)

    assert retention_ms(name) == RETENTION_DAYS * DAY_MS
    for topic in (topics.DEAD_LETTER, topics.RESULTS, topics.SUBMITTED):
        assert retention_ms(topic) <= RETENTION_DAYS * DAY_MS, topic


def _produce(kafka: str, topic: str, key: str, value: bytes | None) -> tuple[int, int]:
    """Publish as any client would; returns (partition, offset) once acknowledged."""
    where: list[tuple[int, int]] = []
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(
        topic,
        key=key,
        value=value,
        on_delivery=lambda err, msg: (
            where.append((msg.partition() or 0, msg.offset() or 0)) if err is None else None
        ),
    )
    assert producer.flush(30) == 0
    assert where, f"{topic} did not acknowledge {key}"
    return where[0]


def _gallery(kafka: str) -> dict[str, bytes | None]:
    """The gallery topic as compaction will leave it: the latest value of every key."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"test-{uuid.uuid4()}"})
    try:
        low, high = watermarks(consumer, TopicPartition(topics.GALLERY, 0))
        consumer.assign([TopicPartition(topics.GALLERY, 0, low)])
        latest: dict[str, bytes | None] = {}
        position = low
        deadline = time.monotonic() + 60
        while position < high:
            assert time.monotonic() < deadline, "the gallery topic could not be read to its end"
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            latest[(msg.key() or b"").decode()] = msg.value()
            position = (msg.offset() or 0) + 1
        return latest
    finally:
        consumer.close()


def _tombstoned(kafka: str, *keys: str) -> Callable[[], bool]:
    return lambda: all(_gallery(kafka).get(k, b"") is None for k in keys)


def test_results_on_the_topic_name_people_by_id_only(
    platform: Platform, kafka_bootstrap: str, faces_dir: Path
) -> None:
    """images.results is kept for days and cannot be edited: a name put there would
    outlive the person's erasure."""
    name = f"Results Probe {uuid.uuid4().hex[:8]}"
    photo = faces_dir / "sample/examples/biden.jpg"
    with (
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api,
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
    ):
        person_id = enroll(api, name, photo)
        wait_gallery_applied(platform)
        [image_id] = submit(ingest, [photo])
        shown = wait_final(api, [image_id])[image_id]
        assert [(f["person_id"], f["person_name"]) for f in shown["faces"]] == [(person_id, name)]
        assert api.delete(f"/v1/people/{person_id}").status_code == 200

    event = recognized(kafka_bootstrap, image_id)
    assert [f["person_id"] for f in event["data"]["faces"]] == [person_id]
    assert name not in json.dumps(event)


def test_an_erased_image_is_never_replayed_from_the_dead_letters(
    platform: Platform, kafka_bootstrap: str, faces_dir: Path
) -> None:
    data = (faces_dir / "sample/examples/obama.jpg").read_bytes()
    conf = {"bootstrap.servers": kafka_bootstrap}
    with (
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=120) as api,
    ):
        r = ingest.post("/v1/images", files=[("files", ("cut.jpg", data[: len(data) // 2]))])
        assert r.status_code == 202, r.text
        image_id = r.json()["data"][0]["id"]
        assert wait_final(api, [image_id])[image_id]["status"] == "failed"
        consume_until(
            kafka_bootstrap,
            topics.DEAD_LETTER,
            lambda e: (e["data"].get("request") or {}).get("image", {}).get("image_id") == image_id,
        )
        assert api.delete(f"/v1/images/{image_id}").status_code == 200
        start = _submitted_ends(conf)

        replay = api.post("/v1/admin/dead-letters/replay", params={"limit": 100_000})

    assert replay.status_code == 202, replay.text
    assert replay.json()["erased"] >= 1
    assert _republished(conf, start, image_id, timeout=5) == 0


def test_a_resent_event_about_an_erased_image_does_not_bring_it_back(
    platform: Platform, kafka_bootstrap: str, faces_dir: Path
) -> None:
    """Any client may publish to images.submitted, and a result may be redelivered: the
    projector must ignore both once the image is erased."""
    photo = faces_dir / "sample/examples/biden.jpg"
    with (
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api,
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
    ):
        [image_id] = submit(ingest, [photo])
        wait_final(api, [image_id])
        submitted = consume_until(
            kafka_bootstrap, topics.SUBMITTED, lambda e: e["data"]["image_id"] == image_id
        )
        result = recognized(kafka_bootstrap, image_id)
        assert api.delete(f"/v1/images/{image_id}").status_code == 200

        again = [
            (
                topics.SUBMITTED,
                _produce(kafka_bootstrap, topics.SUBMITTED, image_id, json.dumps(submitted[0]).encode()),
            ),
            (
                topics.RESULTS,
                _produce(kafka_bootstrap, topics.RESULTS, image_id, json.dumps(result).encode()),
            ),
        ]
        wait_committed(kafka_bootstrap, STREAM_GROUP, {(t, p): o for t, (p, o) in again})

        assert api.get(f"/v1/images/{image_id}").status_code == 404
        assert image_id not in {i["id"] for i in api.get("/v1/images", params={"limit": 200}).json()["data"]}


def test_an_enrollment_published_after_the_erasure_is_tombstoned_not_recreated(
    platform: Platform, kafka_bootstrap: str, faces_dir: Path
) -> None:
    """A late FaceEnrolled and PersonEnrolled (a racing enrollment, another client)."""
    photo = faces_dir / "sample/examples/obama.jpg"
    with httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api:
        person_id = enroll(api, f"Late {uuid.uuid4().hex[:8]}", photo)
        [first_key] = [k for k in _gallery(kafka_bootstrap) if k.startswith(f"face:{person_id}:")]
        first = codec.decode(_gallery(kafka_bootstrap)[first_key]).data
        assert isinstance(first, ev.FaceEnrolled)
        assert api.delete(f"/v1/people/{person_id}").status_code == 200

        late = first.model_copy(update={"face_id": str(uuid.uuid4())})
        face = face_key(person_id, late.face_id)
        _produce(kafka_bootstrap, topics.GALLERY, face, codec.encode_data(late, source="a-late-enrollment"))
        person = ev.PersonEnrolled(person_id=person_id, name="Late again", enrolled_at=datetime.now(UTC))
        _produce(
            kafka_bootstrap, topics.GALLERY, person_key(person_id), codec.encode_data(person, source="late")
        )

        until(
            "the late enrollment is tombstoned", _tombstoned(kafka_bootstrap, face, person_key(person_id)), 60
        )
        assert api.get(f"/v1/people/{person_id}").status_code == 404


@pytest.mark.asyncio(loop_scope="function")
async def test_an_enrollment_racing_the_erasure_leaves_no_encoding_on_the_gallery(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    """The race as it happens: the enrollment has published its FaceEnrolled but not yet
    committed its row when the erasure lists the person's faces, so the API publishes no
    tombstone for that face. The old projector then kept it on the compacted gallery for ever."""
    photo = faces_dir / "sample/examples/obama.jpg"
    async with httpx.AsyncClient(headers=platform.headers, base_url=platform.api_url, timeout=60) as api:
        r = await api.post("/v1/people", json={"name": f"Racing {uuid.uuid4().hex[:8]}"})
        person_id = r.json()["id"]
        r = await api.post(
            f"/v1/people/{person_id}/faces",
            params={"face_index": "largest"},
            files={"file": (photo.name, photo.read_bytes())},
        )
        assert r.status_code == 201, r.text
        enrolled = await asyncio.to_thread(_gallery, kafka_bootstrap)
        first = codec.decode(enrolled[face_key(person_id, r.json()["face_id"])]).data
        racing = first.model_copy(update={"face_id": str(uuid.uuid4())})
        face = face_key(person_id, racing.face_id)

        enrolling = await asyncpg.connect(database_url)  # the racing enrollment's transaction
        try:
            tx = enrolling.transaction()
            await tx.start()
            await enrolling.execute(
                "INSERT INTO person_faces (id, person_id, box) VALUES ($1, $2, '{}')",
                racing.face_id,
                person_id,
            )
            await asyncio.to_thread(
                _produce, kafka_bootstrap, topics.GALLERY, face, codec.encode_data(racing, source="racing")
            )
            erasing = asyncio.create_task(api.delete(f"/v1/people/{person_id}"))
            blocked = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))"
            pid = enrolling.get_server_pid()
            # The erasure has listed the faces and now waits for the enrollment's row.
            await _until(lambda: erasing.done() or None, lambda: enrolling.fetchval(blocked, pid))
            assert not erasing.done(), (await erasing).text
            await tx.commit()
        finally:
            await enrolling.close()
        assert (await erasing).status_code == 200

    await asyncio.to_thread(
        until, "the racing face is tombstoned", _tombstoned(kafka_bootstrap, face, person_key(person_id)), 60
    )


async def _until(*checks: Callable[[], Any], within: float = 60) -> None:
    """Poll until one of ``checks`` (plain or awaitable results) is true."""
    deadline = time.monotonic() + within
    while True:
        for check in checks:
            got = check()
            if inspect.isawaitable(got):
                got = await got
            if got:
                return
        assert time.monotonic() < deadline, f"no condition held within {within}s"
        await asyncio.sleep(0.05)


def _submission(data: bytes, filename: str) -> tuple[str, bytes]:
    """An ImageSubmitted as any Kafka client may publish it: (image id, value)."""
    image_id = str(uuid.uuid4())
    event = ev.ImageSubmitted(
        image_id=image_id,
        filename=filename,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        image_b64=base64.b64encode(data).decode(),
        submitted_at=datetime.now(UTC),
    )
    return image_id, codec.encode_data(event, source="a-plain-kafka-client")


@pytest.mark.asyncio(loop_scope="function")
async def test_an_erasure_during_the_images_projection_is_not_undone(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    """The projector had checked "not erased" and was about to write the row when the
    erasure committed: the old projector then wrote it back. A trigger holds the
    projector's write (for this image only) at a gate the test opens."""
    filename = f"gated-{uuid.uuid4().hex}.jpg"
    image_id, value = _submission((faces_dir / "sample/examples/obama.jpg").read_bytes(), filename)
    gate = await asyncpg.connect(database_url)
    fn = f"test_gate_{uuid.uuid4().hex[:12]}"
    try:
        await gate.execute(
            f"""CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                    PERFORM pg_advisory_lock_shared({GATE}); PERFORM pg_advisory_unlock_shared({GATE});
                    RETURN NEW; END $$;
                CREATE TRIGGER {fn} BEFORE INSERT OR UPDATE ON images FOR EACH ROW
                    WHEN (NEW.filename = '{filename}') EXECUTE FUNCTION {fn}();"""
        )
        await gate.execute("SELECT pg_advisory_lock($1)", GATE)
        partition, offset = await asyncio.to_thread(
            _produce, kafka_bootstrap, topics.SUBMITTED, image_id, value
        )
        at_gate = """SELECT EXISTS (SELECT 1 FROM pg_locks
                                    WHERE locktype = 'advisory' AND objid = $1 AND NOT granted)"""
        await _until(lambda: gate.fetchval(at_gate, GATE))

        async with httpx.AsyncClient(headers=platform.headers, base_url=platform.api_url, timeout=60) as api:
            erasing = asyncio.create_task(api.delete(f"/v1/images/{image_id}"))
            waits = (
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE classid = $1 AND objsubid = 2 AND NOT granted)"
            )
            await _until(erasing.done, lambda: gate.fetchval(waits, IMAGE_LOCK_SPACE))
            await gate.execute("SELECT pg_advisory_unlock($1)", GATE)
            answer = await erasing
            await asyncio.to_thread(
                wait_committed, kafka_bootstrap, STREAM_GROUP, {(topics.SUBMITTED, partition): offset}
            )
            assert (await api.get(f"/v1/images/{image_id}")).status_code == 404
            assert answer.status_code == 200, answer.text
    finally:
        await gate.execute(f"DROP TRIGGER IF EXISTS {fn} ON images; DROP FUNCTION IF EXISTS {fn}()")
        await gate.close()


@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize(
    "service", ["api", "stream"]
)  # the API erases on request, the projector on a tombstone
async def test_an_erased_persons_encodings_leave_the_faces_they_were_in(
    database_url: str, service: str
) -> None:
    """No biometric template of an erased person survives as an "unknown face": the faces
    matched to them lose their encodings, and so does the result face they were enrolled
    from in review (not matched again yet); other faces keep theirs. As each service's role."""
    image_id, person_id = str(uuid.uuid4()), str(uuid.uuid4())
    owner = await asyncpg.connect(database_url)
    conn = await asyncpg.connect(role_urls(database_url)[service])
    try:
        await owner.execute(
            "INSERT INTO images (id, run, status, submitted_at) VALUES ($1, 0, 'processed', now())", image_id
        )
        await owner.execute("INSERT INTO people (id, name) VALUES ($1, 'Erased Encodings')", person_id)
        await owner.executemany(
            """INSERT INTO faces (image_id, face_index, run, box_top, box_right, box_bottom, box_left,
                                  person_id, encoding, seen_at)
               VALUES ($1, $2, 0, 0, 1, 1, 0, $3, $4, now())""",
            [(image_id, i, person_id if i == 0 else None, enc.pack([i / 10] * 128)) for i in range(3)],
        )
        await owner.execute(
            """INSERT INTO person_faces (id, person_id, box, encoding, source_image_id, source_face_index)
               VALUES ($1, $2, '{}', $3, $4, 1)""",
            str(uuid.uuid4()),
            person_id,
            enc.pack([0.1] * 128),
            image_id,
        )

        await erase_person(conn, person_id)

        rows = await owner.fetch(
            "SELECT person_id, encoding FROM faces WHERE image_id = $1 ORDER BY face_index", image_id
        )
        assert [(r["person_id"], r["encoding"]) for r in rows[:2]] == [(None, None), (None, None)]
        assert bytes(rows[2]["encoding"]) == enc.pack([0.2] * 128)
        assert await owner.fetchval("SELECT count(*) FROM person_faces WHERE person_id = $1", person_id) == 0
        assert await owner.fetchval("SELECT status FROM images WHERE id = $1", image_id) == "unresolved"
    finally:
        await owner.execute("DELETE FROM images WHERE id = $1", image_id)
        await owner.close()
        await conn.close()
