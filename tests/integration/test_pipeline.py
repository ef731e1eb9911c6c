"""The pipeline on the real broker and database, driven through its topics and APIs.

The topics are a public interface: these tests publish and consume with plain
confluent-kafka, exactly as the README shows any client doing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer

from schemas import codec, topics
from schemas import encoding as enc
from schemas import events as ev
from stream.settings import StreamSettings
from tests.e2e.test_lfw import submit, wait_final
from tests.platform import Platform, messages, topic_end, until, wait_committed

pytestmark = pytest.mark.integration


def publish_image(kafka: str, data: bytes, filename: str = "x.jpg") -> str:
    """What any client does to submit an image through the topic (see README)."""
    image_id = str(uuid.uuid4())
    event = {
        "id": str(uuid.uuid4()),
        "type": "facestream.image.submitted",
        "version": 1,
        "time": datetime.now(UTC).isoformat(),
        "source": "a-plain-kafka-client",
        "trace_id": uuid.uuid4().hex,
        "data": {
            "image_id": image_id,
            "filename": filename,
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "image_b64": base64.b64encode(data).decode(),
            "submitted_at": datetime.now(UTC).isoformat(),
        },
    }
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce("images.submitted", key=image_id, value=json.dumps(event))
    assert producer.flush(30) == 0
    return image_id


def consume_until(kafka: str, topic: str, match: Any, timeout: float = 120) -> list[dict[str, Any]]:
    """Read ``topic`` from the beginning with a fresh group until ``match(event)`` holds."""
    consumer = Consumer(
        {"bootstrap.servers": kafka, "group.id": f"test-{uuid.uuid4()}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or msg.value() is None:
                continue
            try:
                event = json.loads(msg.value() or b"null")
            except ValueError:
                continue  # another test's deliberately unreadable message on the shared topic
            if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
                continue
            if match(event):
                found.append(event)
                return found
    finally:
        consumer.close()
    raise AssertionError(f"no matching event on {topic} within {timeout}s")


def recognized(kafka: str, image_id: str) -> dict[str, Any]:
    """The FacesRecognized event of ``image_id``, read from the public results topic."""
    [result] = consume_until(
        kafka,
        "images.results",
        lambda e: e["type"] == "facestream.faces.recognized" and e["data"]["image_id"] == image_id,
    )
    return result


def test_an_image_published_by_any_kafka_client_is_processed_like_an_upload(
    platform: Platform, kafka_bootstrap: str, faces_dir: Path
) -> None:
    image_id = publish_image(kafka_bootstrap, (faces_dir / "sample/examples/two_people.jpg").read_bytes())
    result = recognized(kafka_bootstrap, image_id)
    data = result["data"]
    assert len(data["faces"]) == 2
    assert {"box", "person_id", "distance"} <= set(data["faces"][0])
    assert data["rule"]["tolerance"] > 0
    assert data["model"]["detector"] == "hog"
    with httpx.Client(headers=platform.headers, base_url=platform.api_url) as api:
        final = wait_final(api, [image_id])[image_id]
    assert final["status"] in {"processed", "unresolved"}
    assert len(final["faces"]) == 2


def test_ingest_publishes_one_event_per_file_keyed_by_image_id(
    platform: Platform, kafka_bootstrap: str, faces_dir: Path
) -> None:
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url) as ingest:
        ids = submit(
            ingest, [faces_dir / "sample/examples/obama.jpg", faces_dir / "sample/examples/biden.jpg"]
        )
    seen: set[str] = set()

    def ours(e: dict[str, Any]) -> bool:
        if e["data"].get("image_id") in ids:
            seen.add(e["data"]["image_id"])
        return seen == set(ids)

    consume_until(kafka_bootstrap, "images.submitted", ours)


async def _face_rows(database_url: str, image_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch("SELECT * FROM faces WHERE image_id = $1 ORDER BY face_index", image_id))
    finally:
        await conn.close()


def test_redelivered_results_change_nothing(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    image_id = publish_image(kafka_bootstrap, (faces_dir / "sample/examples/two_people.jpg").read_bytes())
    result = recognized(kafka_bootstrap, image_id)
    with httpx.Client(headers=platform.headers, base_url=platform.api_url) as api:
        before = wait_final(api, [image_id])[image_id]
        rows_before = asyncio.run(_face_rows(database_url, image_id))
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        past: dict[tuple[str, int], int] = {}

        def note(err: KafkaError | None, msg: Message) -> None:
            assert err is None, err
            where = (msg.topic() or "", msg.partition() or 0)
            past[where] = max(past.get(where, -1), msg.offset() or 0)

        for value in (result, result):  # the same result, redelivered twice more
            producer.produce("images.results", key=image_id, value=json.dumps(value), on_delivery=note)
        assert producer.flush(30) == 0
        # the projector has handled both copies: the stream committed past them
        wait_committed(kafka_bootstrap, StreamSettings().stream_app_id, past)
        after = api.get(f"/v1/images/{image_id}").json()
    # applied again, not parked: a projector that cannot re-apply a result dead-letters it
    parked = messages(kafka_bootstrap, topics.DEAD_LETTER, [image_id])
    assert not parked, f"{len(parked)} redelivered results were dead-lettered, not applied again"
    rows_after = asyncio.run(_face_rows(database_url, image_id))
    assert len(rows_after) == len(rows_before) == 2
    assert [dict(r) for r in rows_after] == [dict(r) for r in rows_before]
    assert after["status"] == before["status"]
    assert after["faces"] == before["faces"]


def test_a_truncated_image_fails_with_its_reason_and_is_dead_lettered(
    platform: Platform, kafka_bootstrap: str, faces_dir: Path
) -> None:
    data = (faces_dir / "sample/examples/obama.jpg").read_bytes()
    with (
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url) as ingest,
        httpx.Client(headers=platform.headers, base_url=platform.api_url) as api,
    ):
        r = ingest.post("/v1/images", files=[("files", ("cut.jpg", data[: len(data) // 2]))])
        assert r.status_code == 202  # the header is fine; the damage shows only when decoding
        image_id = r.json()["data"][0]["id"]
        final = wait_final(api, [image_id])[image_id]
    assert final["status"] == "failed"
    assert final["status_reason"] == "corrupt_image"
    consume_until(
        kafka_bootstrap,
        topics.DEAD_LETTER,
        lambda e: (
            e["data"].get("request") is not None
            and e["data"]["request"]["image"]["image_id"] == image_id
            and e["data"]["reason"] == "corrupt_image"
        ),
    )


def test_garbage_on_a_topic_is_dead_lettered_with_a_reason(platform: Platform, kafka_bootstrap: str) -> None:
    key = str(uuid.uuid4())
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce("images.submitted", key=key, value=b"{this is not json " + key.encode())
    assert producer.flush(30) == 0
    [parked] = consume_until(
        kafka_bootstrap, topics.DEAD_LETTER, lambda e: key in (e["data"].get("raw") or "")
    )
    env = codec.decode(json.dumps(parked))
    assert isinstance(env.data, ev.ImageDeadLettered)
    assert env.data.reason == ev.FailureReason.INVALID_EVENT
    assert env.data.topic == "images.submitted"


def _worker_pids(supervisor_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(supervisor_pid)], capture_output=True, text=True).stdout.split()
    pids = []
    for pid in map(int, out):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"resource_tracker" not in cmdline:
            pids.append(pid)
    return pids


def test_a_recognizer_killed_mid_image_loses_nothing(
    platform: Platform, kafka_bootstrap: str, faces_dir: Path
) -> None:
    photos = sorted((faces_dir / "lfw-dev/known").glob("A*/*_0001.jpg"))[:16]
    pids = _worker_pids(platform.procs["recognizer"].pid)
    assert pids, "no recognizer worker processes found"
    with (
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url) as ingest,
        httpx.Client(headers=platform.headers, base_url=platform.api_url) as api,
    ):
        before = topic_end(kafka_bootstrap, topics.RESULTS)
        ids = submit(ingest, photos)
        # mid-batch: some done, the rest queued, so each worker has one in its hands
        until("a result is published", lambda: topic_end(kafka_bootstrap, topics.RESULTS) > before)
        assert topic_end(kafka_bootstrap, topics.RESULTS) < before + len(ids), "the batch was over"
        os.kill(pids[0], signal.SIGKILL)
        results = wait_final(api, list(ids), timeout=240)
    assert {r["status"] for r in results.values()} <= {"processed", "unresolved"}
    assert all(len(r["faces"]) >= 1 for r in results.values())
    # the supervisor replaced the dead worker
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_worker_pids(platform.procs["recognizer"].pid)) < len(pids):
        time.sleep(0.5)
    assert len(_worker_pids(platform.procs["recognizer"].pid)) == len(pids)


def test_dead_letters_are_replayed_as_a_new_run(platform: Platform, faces_dir: Path) -> None:
    data = (faces_dir / "sample/examples/biden.jpg").read_bytes()
    with (
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url) as ingest,
        httpx.Client(headers=platform.headers, base_url=platform.api_url) as api,
    ):
        r = ingest.post("/v1/images", files=[("files", ("cut.jpg", data[: len(data) // 2]))])
        image_id = r.json()["data"][0]["id"]
        assert wait_final(api, [image_id])[image_id]["status"] == "failed"
        r = api.post("/v1/admin/dead-letters/replay")
        assert r.status_code == 202, r.text
        assert r.json()["replayed"] >= 1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            again = api.get(f"/v1/images/{image_id}").json()
            if again["run"] == 1 and again["status"] == "failed":
                break
            time.sleep(0.5)
        assert again["run"] == 1  # the same image went through the pipeline once more
        assert again["status_reason"] == "corrupt_image"  # still truncated: it fails again


# --------------------------------------------------------------------------- re-matches


def _fetch(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def _offset_of(kafka: str, topic: str, key: str, value: bytes) -> int:
    """Publish as any client would; returns the message's offset once acknowledged."""
    offsets: list[int] = []
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(
        topic,
        key=key,
        value=value,
        on_delivery=lambda err, msg: offsets.append(-1 if err is not None else msg.offset() or 0),
    )
    assert producer.flush(30) == 0
    [offset] = offsets
    assert offset >= 0, f"{topic} did not acknowledge {key}"
    return offset


def test_faces_keep_their_encodings_and_a_rematch_names_them_without_detecting(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    """Issue 11's loop on the contract: results carry encodings, the projector stores them
    with the face; an enrollment of one of them (its row made first, as the API makes it)
    gets its encoding from FaceEnrolled; a RematchRequested published right after it (the
    recognizers have not necessarily applied it yet) names the face from its stored
    encoding; erasing the person takes the encodings of their faces with them."""
    image_id = publish_image(kafka_bootstrap, (faces_dir / "sample/examples/two_people.jpg").read_bytes())
    result = recognized(kafka_bootstrap, image_id)["data"]
    with httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api:
        wait_final(api, [image_id])
        [image] = _fetch(database_url, "SELECT run, submitted_at FROM images WHERE id = $1", image_id)
        rows = asyncio.run(_face_rows(database_url, image_id))
        assert len(rows) == len(result["faces"]) == 2
        assert [bytes(r["encoding"]) for r in rows] == [enc.pack(f["encoding"]) for f in result["faces"]]
        assert [r["seen_at"] for r in rows] == [image["submitted_at"]] * 2

        person_id, face_id = str(uuid.uuid4()), str(uuid.uuid4())
        now = datetime.now(UTC)
        person = ev.PersonEnrolled(person_id=person_id, name=f"Rematch {person_id[:8]}", enrolled_at=now)
        _offset_of(
            kafka_bootstrap,
            topics.GALLERY,
            topics.person_key(person_id),
            codec.encode_data(person, source="t"),
        )
        until(
            "the person is projected",
            lambda: bool(_fetch(database_url, "SELECT 1 FROM people WHERE id = $1", person_id)),
        )
        _fetch(
            database_url,
            """INSERT INTO person_faces (id, person_id, box, crop, source_image_id, source_face_index)
               VALUES ($1, $2, '{}', $3, $4, 0)""",
            face_id,
            person_id,
            b"\xff\xd8",
            image_id,
        )
        face = ev.FaceEnrolled(
            person_id=person_id,
            face_id=face_id,
            encoding=result["faces"][0]["encoding"],
            model=ev.ModelInfo.model_validate(result["model"]),
            box=ev.Box.model_validate(result["faces"][0]["box"]),
            source_sha256="ab" * 32,
            enrolled_at=now,
        )
        offset = _offset_of(
            kafka_bootstrap,
            topics.GALLERY,
            topics.face_key(person_id, face_id),
            codec.encode_data(face, source="t"),
        )
        rematch = ev.RematchRequested(
            image_id=image_id,
            run=image["run"] + 1,
            faces=[ev.FaceToMatch.model_validate(f) for f in result["faces"]],
            width=result["width"],
            height=result["height"],
            gallery_version=offset + 1,
            model=ev.ModelInfo.model_validate(result["model"]),
            requested_at=now,
            reason=f"review: named as {person_id}",
        )  # no submitted_at: the faces' seen_at comes from the image's row
        _offset_of(kafka_bootstrap, topics.RECOGNIZE, image_id, codec.encode_data(rematch, source="t"))

        def rematched() -> bool:
            return bool(api.get(f"/v1/images/{image_id}").json()["run"] == image["run"] + 1)

        until("the re-match's result is projected", rematched)
        shown = api.get(f"/v1/images/{image_id}").json()
        assert shown["status"] == "processed"
        assert shown["faces"][0]["person_id"] == person_id
        rows = asyncio.run(_face_rows(database_url, image_id))
        assert [r["run"] for r in rows] == [image["run"] + 1] * 2
        assert rows[0]["distance"] < 0.01  # its own encoding
        assert [bytes(r["encoding"]) for r in rows] == [enc.pack(f["encoding"]) for f in result["faces"]]
        assert [r["seen_at"] for r in rows] == [image["submitted_at"]] * 2
        [enrolled] = _fetch(database_url, "SELECT * FROM person_faces WHERE id = $1", face_id)
        # the API's row, completed by the projector, not replaced
        assert bytes(enrolled["encoding"]) == enc.pack(result["faces"][0]["encoding"])
        assert (enrolled["source_sha256"], bytes(enrolled["crop"])) == ("ab" * 32, b"\xff\xd8")

        assert api.delete(f"/v1/people/{person_id}").status_code == 200
        rows = asyncio.run(_face_rows(database_url, image_id))
        assert (rows[0]["person_id"], rows[0]["encoding"]) == (None, None)
        assert rows[1]["encoding"] is not None  # someone else's face
