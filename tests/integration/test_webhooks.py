"""Webhooks end to end (api/routes/webhooks.py, notify/) on the running platform, with
real receivers: HTTP servers started here, on 127.0.0.1 (private and loopback receivers
are allowed by default)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psycopg
import pytest
from pydantic import SecretStr

from notify.deliveries import sign
from notify.sender import Sender
from notify.settings import NotifySettings
from tests.e2e.test_lfw import enroll, wait_final
from tests.platform import Platform, until, wait_gallery_applied

pytestmark = pytest.mark.integration


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook receiver: records every request; ``answer`` gives each one's status (by
    its 0-based number); while ``hold`` is clear, answers wait for it (up to 10 s)."""

    answer: Callable[[int], int] = lambda _n: 204
    hold: threading.Event = field(default_factory=threading.Event)
    got: list[Received] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self.hold.set()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(**kw: Any) -> Receiver:
        receiver = Receiver(**kw)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                n = len(receiver.got)
                receiver.got.append(Received(dict(self.headers.items()), body, time.monotonic()))
                receiver.hold.wait(10)
                self.send_response(receiver.answer(n))
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.answered.append(time.monotonic())

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/facestream"
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def api(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as client:
        yield client


@pytest.fixture
def hooks(api: httpx.Client) -> Iterator[Callable[..., dict[str, str]]]:
    """Create webhooks (deleted after the test)."""
    made: list[str] = []

    def create(**spec: Any) -> dict[str, str]:
        r = api.post("/v1/webhooks", json=spec)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        return dict(r.json())

    yield create
    for hook_id in made:
        api.delete(f"/v1/webhooks/{hook_id}")


def _signed(body: bytes, secret: str, signature: str) -> bool:
    """What a receiver does to check a delivery (README, Webhooks)."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def _person(faces_dir: Path, nth: int) -> tuple[str, list[Path]]:
    people = sorted(p for p in (faces_dir / "lfw-dev/known").iterdir() if len(list(p.iterdir())) >= 2)
    person = people[nth]
    return person.name, sorted(person.iterdir())


def test_a_signed_delivery_names_the_person_retries_and_respects_filters(
    platform: Platform,
    api: httpx.Client,
    hooks: Callable[..., dict[str, str]],
    receivers: Callable[..., Receiver],
    faces_dir: Path,
) -> None:
    folder, photos = _person(faces_dir, 3)
    name = f"{folder.replace('_', ' ')} {uuid.uuid4().hex[:6]}"
    fast = receivers()
    flaky = receivers(answer=lambda n: 500 if n == 0 else 200)
    slow = receivers()
    slow.hold.clear()
    elsewhere = receivers()
    stranger = receivers()
    broken = receivers(answer=lambda _n: 500)
    person_id = enroll(api, name, photos[0])
    try:
        wait_gallery_applied(platform)
        camera = f"lobby-{uuid.uuid4().hex[:6]}"
        to_fast = hooks(url=fast.url, events=["face.identified"], people=[person_id])
        to_flaky = hooks(url=flaky.url, events=["face.identified"], cameras=[camera])
        to_slow = hooks(url=slow.url, events=["face.identified", "face.unknown"])
        to_elsewhere = hooks(url=elsewhere.url, events=["face.identified"], cameras=["garage"])
        to_stranger = hooks(url=stranger.url, events=["face.identified"], people=[str(uuid.uuid4())])
        to_broken = hooks(url=broken.url, events=["face.identified"], people=[person_id])
        with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
            r = ingest.post(
                "/v1/images",
                files={"files": (photos[1].name, photos[1].read_bytes())},
                data={"camera": camera},
            )
            assert r.status_code == 202, r.text
        image_id = r.json()["data"][0]["id"]
        [result] = wait_final(api, [image_id], timeout=180).values()
        assert result["status"] == "processed", result
        named = [f for f in result["faces"] if f["person_id"] == person_id]
        assert len(named) == 1, result

        # The slow receiver holds its answer; the others are delivered meanwhile.
        until("the fast receiver gets its delivery", lambda: len(fast.got) >= 1, timeout=60)
        until("the slow receiver is asked", lambda: len(slow.got) >= 1, timeout=30)
        assert not slow.answered, "the fast delivery waited for the slow receiver"
        [got] = fast.got
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers["X-Facestream-Event"] == "face.identified"
        assert _signed(got.body, to_fast["secret"], got.headers["X-Facestream-Signature"])
        assert not _signed(got.body, to_flaky["secret"], got.headers["X-Facestream-Signature"])
        body = orjson.loads(got.body)
        assert body["event"] == "face.identified"
        assert body["delivery_id"] == got.headers["X-Facestream-Delivery"]
        assert body["image_id"] == image_id
        assert body["camera"] == camera
        assert body["person"] == {"id": person_id, "name": name}
        assert body["face"]["index"] == named[0]["index"]
        assert set(body["face"]["box"]) == {"top", "right", "bottom", "left"}
        assert body["face"]["distance"] == pytest.approx(named[0]["distance"], abs=1e-4)
        assert body["occurred_at"]
        slow.hold.set()

        # 500 first: tried again with the same delivery id and the same bytes.
        until("the flaky receiver is tried again", lambda: len(flaky.got) >= 2, timeout=60)
        first, second = flaky.got[:2]
        assert first.headers["X-Facestream-Delivery"] == second.headers["X-Facestream-Delivery"]
        assert first.body == second.body
        assert _signed(second.body, to_flaky["secret"], second.headers["X-Facestream-Signature"])

        def delivered(hook: dict[str, str]) -> list[dict[str, Any]]:
            r = api.get(f"/v1/webhooks/{hook['id']}/deliveries")
            assert r.status_code == 200, r.text
            return list(r.json()["data"])

        until(
            "the flaky delivery is recorded as delivered",
            lambda: delivered(to_flaky)[0]["state"] == "delivered",
        )
        [record] = delivered(to_flaky)
        assert record["id"] == first.headers["X-Facestream-Delivery"]
        assert record["event"] == "face.identified"
        assert record["image_id"] == image_id
        assert record["attempts"] == 2
        assert record["last_status"] == 200
        assert record["finished_at"]
        # Filters: another camera, another person: nothing made, nothing sent.
        assert delivered(to_elsewhere) == []
        assert delivered(to_stranger) == []
        assert elsewhere.got == []
        assert stranger.got == []
        until(
            "the slow receiver's deliveries are recorded",
            lambda: all(d["state"] == "delivered" for d in delivered(to_slow)),
        )
        assert {d["event"] for d in delivered(to_slow)} >= {"face.identified"}

        # Always 500: given up after WEBHOOK_MAX_ATTEMPTS (8) attempts, recorded as failed.
        until(
            "the broken receiver's delivery is given up", lambda: delivered(to_broken)[0]["state"] == "failed"
        )
        [gave_up] = delivered(to_broken)
        assert gave_up["attempts"] == 8
        assert gave_up["last_status"] == 500
        assert gave_up["last_error"] == "answered 500"
        assert len(broken.got) == 8
        assert {r.headers["X-Facestream-Delivery"] for r in broken.got} == {gave_up["id"]}
        assert len({r.body for r in broken.got}) == 1
        metrics = httpx.get(f"{platform.notify_url}/metrics", timeout=10).text
        assert 'facestream_webhook_deliveries_total{outcome="failed"}' in metrics
    finally:  # left enrolled, the person would make later tests' photos of them ambiguous
        assert api.delete(f"/v1/people/{person_id}").status_code == 200


def test_unknown_faces_and_failed_images_are_delivered_with_their_details(
    platform: Platform,
    api: httpx.Client,
    hooks: Callable[..., dict[str, str]],
    receivers: Callable[..., Receiver],
    faces_dir: Path,
) -> None:
    """A stranger's photo makes ``face.unknown`` (a face, no person); a truncated JPEG,
    accepted by ingest but undecodable, makes ``image.failed`` with its reason."""
    stranger = next(p for p in sorted((faces_dir / "lfw-dev/strangers").iterdir()) if p.is_dir())
    photo = sorted(stranger.iterdir())[0]
    whole = (faces_dir / "sample/examples/obama.jpg").read_bytes()
    camera = f"yard-{uuid.uuid4().hex[:6]}"
    receiver = receivers()
    hook = hooks(url=receiver.url, events=["face.unknown", "image.failed"], cameras=[camera])
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        r = ingest.post(
            "/v1/images",
            files=[
                ("files", (photo.name, photo.read_bytes())),
                ("files", ("cut.jpg", whole[: len(whole) // 2])),
            ],
            data={"camera": camera},
        )
        assert r.status_code == 202, r.text
    unknown_id, failed_id = (item["id"] for item in r.json()["data"])
    results = wait_final(api, [unknown_id, failed_id], timeout=180)
    assert results[unknown_id]["status"] == "unresolved", results[unknown_id]
    assert results[failed_id]["status"] == "failed", results[failed_id]
    faces = results[unknown_id]["faces"]

    until(
        "every delivery arrives",
        lambda: len({g.headers["X-Facestream-Delivery"] for g in receiver.got}) >= len(faces) + 1,
    )
    bodies = {orjson.loads(g.body)["delivery_id"]: (g, orjson.loads(g.body)) for g in receiver.got}
    for got, body in bodies.values():
        assert _signed(got.body, hook["secret"], got.headers["X-Facestream-Signature"])
        assert got.headers["X-Facestream-Event"] == body["event"]
        assert body["camera"] == camera
        assert body["person"] is None
    unknown = sorted(
        (b for _, b in bodies.values() if b["event"] == "face.unknown"), key=lambda b: b["face"]["index"]
    )
    assert [b["image_id"] for b in unknown] == [unknown_id] * len(faces)
    assert [b["face"]["index"] for b in unknown] == [f["index"] for f in faces]
    assert all(set(b["face"]["box"]) == {"top", "right", "bottom", "left"} for b in unknown)
    [failed] = [b for _, b in bodies.values() if b["event"] == "image.failed"]
    assert failed["image_id"] == failed_id
    assert failed["reason"] == "corrupt_image"
    assert failed["detail"]
    assert failed["face"] is None


def test_webhooks_are_managed_with_the_admin_scope_and_refuse_link_local_urls(
    platform: Platform, api: httpx.Client, receivers: Callable[..., Receiver]
) -> None:
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]:8080/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
        "ftp://example.com/hook",
    ):
        r = api.post("/v1/webhooks", json={"url": url, "events": ["face.identified"]})
        assert r.status_code == 422, (url, r.text)
        assert isinstance(r.json()["detail"], str)
    r = api.post("/v1/webhooks", json={"url": receivers().url, "events": ["nonsense"]})
    assert r.status_code == 422, r.text

    r = api.post("/v1/webhooks", json={"url": receivers().url, "events": ["face.unknown", "image.failed"]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"]
    hook_id = created["id"]
    got = api.get(f"/v1/webhooks/{hook_id}").json()
    assert "secret" not in got
    assert created["secret"] not in api.get("/v1/webhooks").text
    assert hook_id in {h["id"] for h in api.get("/v1/webhooks").json()["data"]}
    assert api.get(f"/v1/webhooks/{hook_id}/deliveries").json() == {"data": [], "count": 0}

    r = api.post("/v1/admin/keys", json={"name": "webhooks-test", "scopes": ["query", "enroll"]})
    assert r.status_code == 201, r.text
    not_admin = {"X-API-Key": r.json()["key"]}
    assert api.get("/v1/webhooks", headers=not_admin).status_code == 403
    assert (
        api.post(
            "/v1/webhooks", headers=not_admin, json={"url": "http://x", "events": ["face.unknown"]}
        ).status_code
        == 403
    )

    assert api.delete(f"/v1/webhooks/{hook_id}").status_code == 200
    assert api.get(f"/v1/webhooks/{hook_id}").status_code == 404
    assert api.get(f"/v1/webhooks/{hook_id}/deliveries").status_code == 404


def test_a_slow_receiver_holds_only_its_own_share_of_the_sender(
    database_url: str, receivers: Callable[..., Receiver]
) -> None:
    """notify's sender on the real database, without the platform: ten deliveries to a
    receiver that holds its answers take at most WEBHOOK_PER_HOOK_CONCURRENCY requests; a
    delivery to another receiver, made after them, is sent meanwhile. (In a schema of its
    own: the platform's notify, if running, must not take these deliveries.)"""
    schema = f"webhooks_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute(f"CREATE SCHEMA {schema}")
        for table in ("webhooks", "webhook_deliveries"):
            owner.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
    try:
        _sender_share(f"{database_url}{'&' if '?' in database_url else '?'}", schema, receivers)
    finally:
        with psycopg.connect(database_url, autocommit=True) as owner:
            owner.execute(f"DROP SCHEMA {schema} CASCADE")


def _sender_share(url: str, schema: str, receivers: Callable[..., Receiver]) -> None:
    slow, fast = receivers(), receivers()
    slow.hold.clear()
    settings = NotifySettings(
        database_url=SecretStr(f"{url}search_path={schema}"),
        webhook_per_hook_concurrency=2,
        webhook_poll_s=0.05,
        webhook_timeout_s=20,
    )
    hooks = {"slow": uuid.uuid4(), "fast": uuid.uuid4()}
    with psycopg.connect(url.rstrip("?&"), autocommit=True, options=f"-csearch_path={schema}") as db:
        for name, receiver in (("slow", slow), ("fast", fast)):
            db.execute(
                "INSERT INTO webhooks (id, url, events, secret) VALUES (%s, %s, '{face.unknown}', 'whsec_t')",
                (hooks[name], receiver.url),
            )
        for hook in [hooks["slow"]] * 10 + [hooks["fast"]]:
            delivery = uuid.uuid4()
            db.execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, event, image_id, run, face_index, body)"
                " VALUES (%s, %s, 'face.unknown', %s, 0, 0, %s)",
                (delivery, hook, uuid.uuid4(), orjson.dumps({"delivery_id": str(delivery)})),
            )
        stop = threading.Event()
        running: list[Sender] = []

        async def send() -> None:
            pool = await asyncpg.create_pool(settings.database_url.get_secret_value())
            try:
                stopping = asyncio.Event()
                sender = Sender(pool, settings)
                running.append(sender)
                task = asyncio.create_task(sender.run(stopping))
                await asyncio.to_thread(stop.wait)
                stopping.set()
                await task
            finally:
                await pool.close()

        thread = threading.Thread(target=asyncio.run, args=(send(),))
        thread.start()
        try:
            until("the fast receiver gets its delivery", lambda: len(fast.got) == 1, timeout=30)
            seen = time.monotonic()
            until("the sender scans again", lambda: running[0].last_scan > seen + 0.3, timeout=30)
            assert len(slow.got) == 2  # its share, however often the sender looks
            assert not slow.answered
            got = fast.got[0]
            assert got.headers["X-Facestream-Signature"] == sign("whsec_t", got.body)
            slow.hold.set()
            until("the slow receiver gets all ten", lambda: len(slow.answered) == 10, timeout=30)

            def recorded() -> bool:
                rows = db.execute(
                    "SELECT state, attempts FROM webhook_deliveries WHERE webhook_id = ANY(%s)",
                    (list(hooks.values()),),
                ).fetchall()
                return rows == [("delivered", 1)] * 11

            until("every delivery is recorded", recorded, timeout=30)
        finally:
            stop.set()
            thread.join(30)
