"""Rolling upgrades: old and new side by side, against the running platform.

- A newer producer's events reach today's consumers: a field they do not know is
  ignored; an event type or version they do not know is skipped (counted, never
  dead-lettered), and the events around it are processed.
- Today's consumers read older events: a version below the current one is upcast
  (``schemas.codec.UPCASTERS``; shown with a version registered for the test).
- Ingest is replaced replica by replica while clients keep sending, through the legacy
  single-image endpoint and the batch one: no request is lost, every image is processed.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from pydantic import BaseModel

from schemas import codec, topics
from schemas import events as ev
from schemas.envelope import new_id, utcnow
from tests.e2e.test_lfw import wait_final
from tests.platform import Platform, until

pytestmark = pytest.mark.integration


def _skipped(platform: Platform) -> float:
    text = httpx.get(f"{platform.stream_url}/metrics").text
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r'^facestream_stream_skipped_total\{topic="images\.submitted"\} (\S+)$', text, re.M
        )
    )


def _dead_letters(platform: Platform) -> float:
    text = httpx.get(f"{platform.stream_url}/metrics").text
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^facestream_stream_dead_letters_total\{[^}]*\} (\S+)$", text, re.M)
    )


def _submitted(photo: Path) -> tuple[str, dict[str, Any]]:
    """An ImageSubmitted envelope (as JSON-able dict) for ``photo``, as a producer writes it."""
    import base64
    import hashlib

    data = photo.read_bytes()
    event = ev.ImageSubmitted(
        image_id=new_id(),
        filename=photo.name,
        content_type="image/jpeg",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        image_b64=base64.b64encode(data).decode(),
        submitted_at=utcnow(),
    )
    return event.image_id, orjson.loads(codec.encode_data(event, source="newer-producer"))


def test_newer_producers_events_are_ignored_or_skipped_and_nothing_else_is_harmed(
    platform: Platform, kafka_bootstrap: str, faces_dir: Path
) -> None:
    photo = faces_dir / "sample/examples/obama.jpg"
    skipped_before, dead_before = _skipped(platform), _dead_letters(platform)
    with_new_field_id, with_new_field = _submitted(photo)
    with_new_field["data"]["priority"] = "high"  # a field added by a newer producer
    with_new_field["new_envelope_field"] = {"x": 1}
    newer_version_id, newer_version = _submitted(photo)
    newer_version["version"] = 2  # an incompatible change this code cannot read
    unknown_type = {**newer_version, "id": new_id(), "type": "facestream.image.annotated", "version": 1}
    plain_id, plain = _submitted(photo)

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for image_id, event in (
        (with_new_field_id, with_new_field),
        (newer_version_id, newer_version),
        (newer_version_id, unknown_type),
        (plain_id, plain),
    ):
        producer.produce(topics.SUBMITTED, key=image_id, value=orjson.dumps(event))
    assert producer.flush(30) == 0

    with httpx.Client(base_url=platform.api_url, headers=platform.headers, timeout=30) as api:
        done = wait_final(api, [with_new_field_id, plain_id], timeout=180)
        for image_id in (with_new_field_id, plain_id):  # recognized (nobody is enrolled here)
            assert done[image_id]["status"] in ("processed", "unresolved"), done[image_id]
            assert len(done[image_id]["faces"]) == 1
        deadline = time.monotonic() + 30
        while _skipped(platform) < skipped_before + 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _skipped(platform) >= skipped_before + 2
        assert _dead_letters(platform) == dead_before  # skipped, not poison
        assert api.get(f"/v1/images/{newer_version_id}").status_code == 404


def test_todays_code_reads_older_versions_through_upcasters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were PersonEnrolled to become v2 (``name`` split into a display name), v1 events
    already on the compacted gallery topic would still be read, upcast step by step."""
    name = "facestream.person.enrolled"

    class PersonEnrolledV2(ev.PersonEnrolled):
        display_name: str

    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "display_name": data["name"].title()}

    monkeypatch.setattr(codec, "EVENT_TYPES", {**codec.EVENT_TYPES, name: (2, PersonEnrolledV2)})
    type_of: dict[type[BaseModel], str] = {**codec.TYPE_OF, PersonEnrolledV2: name}
    monkeypatch.setattr(codec, "TYPE_OF", type_of)
    monkeypatch.setattr(codec, "UPCASTERS", {**codec.UPCASTERS, (name, 1): v1_to_v2})
    old = Path(__file__).parents[2] / "schemas" / "examples" / f"{name}.v1.json"
    env = codec.decode(old.read_bytes())
    assert env.version == 2
    assert isinstance(env.data, PersonEnrolledV2)
    assert env.data.display_name == env.data.name.title()
    # And v3, which this code does not know yet, is skipped rather than dead-lettered.
    newer = orjson.loads(old.read_bytes())
    newer["version"] = 3
    with pytest.raises(codec.UnknownEvent):
        codec.decode(orjson.dumps(newer))


def test_ingest_replaced_replica_by_replica_while_legacy_and_batch_clients_send(
    platform: Platform, faces_dir: Path
) -> None:
    port = int(platform.ingest_url.rsplit(":", 1)[1]) + 50
    second = f"http://127.0.0.1:{port}"
    platform.start("ingest-b", ready_url=f"{second}/readyz", module="ingest", env={"INGEST_PORT": str(port)})
    replicas = [platform.ingest_url, second]
    photos = sorted((faces_dir / "lfw-dev/known").glob("*/*_0003.jpg"))[:24]
    accepted: list[str] = []
    errors: list[str] = []

    def client() -> None:
        """Sends like a Service in front of the replicas: a refused connection goes to the next."""
        for n, photo in enumerate(photos):
            for attempt in range(20):
                url = replicas[(n + attempt) % 2]
                try:
                    if n % 2:
                        rel = photo.relative_to(faces_dir).as_posix()
                        r = httpx.post(
                            f"{url}/image/post", json={"path": rel}, headers=platform.headers, timeout=30
                        )
                        if r.status_code == 200:
                            accepted.append(r.json()["id"])
                            break
                    else:
                        files = {"files": (photo.name, photo.read_bytes(), "image/jpeg")}
                        r = httpx.post(f"{url}/v1/images", files=files, headers=platform.headers, timeout=30)
                        if r.status_code == 202:
                            accepted.append(r.json()["data"][0]["id"])
                            break
                    errors.append(f"{url}: {r.status_code} {r.text[:100]}")
                except httpx.TransportError:
                    time.sleep(0.2)  # the replica is going away: the next one takes it
            time.sleep(0.1)

    sender = threading.Thread(target=client)
    sender.start()
    try:
        until("the clients are sending", lambda: len(accepted) >= 2, timeout=60)
        assert len(accepted) < len(photos), "every request was answered before the replacement began"
        code = platform.restart("ingest")  # the old replica replaced by a new one
        assert code in (0, -15)
    finally:
        sender.join(120)
        platform.stop("ingest-b")
    assert errors == []
    assert len(accepted) == len(photos)
    with httpx.Client(base_url=platform.api_url, headers=platform.headers, timeout=30) as api:
        done = wait_final(api, accepted, timeout=300)
    assert all(d["status"] in ("processed", "unresolved") for d in done.values())
