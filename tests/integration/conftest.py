"""Fixtures of the results API's in-process tests (test_api, test_verify): the real app
(its lifespan connects to the test broker and database) behind httpx's ASGI transport,
and a recognizer pool of its own (``python -m recognizer``), which scans the photos the
app enrolls, verifies and detects (faces.scan). A module that needs other settings
defines its own fixtures of these names."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import httpx
import pytest
import pytest_asyncio
from confluent_kafka import ConsumerGroupState, Producer
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app
from api.settings import ApiSettings
from schemas.access import RECOGNIZER_GROUP
from schemas.topics import GALLERY, face_key, person_key
from tests.platform import ADMIN_KEY, PORT_OFFSET, Platform

#: /readyz and /metrics of the scanning recognizer (next to the platform's, 19101).
SCAN_RECOGNIZER_PORT = 19102 + PORT_OFFSET


class ScanRecognizer:
    """One recognizer pool (one process) in the recognizers' group, so that photos sent to
    faces.scan are answered; :meth:`paused` stops it for a test of "no recognizer"."""

    NAME = "scan-recognizer"

    def __init__(self, kafka_bootstrap: str) -> None:
        url = f"http://127.0.0.1:{SCAN_RECOGNIZER_PORT}"
        self.url = url
        self.kafka_bootstrap = kafka_bootstrap
        self._platform = Platform(
            ingest_url="",
            api_url="",
            stream_url="",
            recognizer_url=url,
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "PYTHONUNBUFFERED": "1"},
        )

    def start(self) -> None:
        self._platform.start(
            self.NAME,
            "--workers",
            "1",
            "--metrics-port",
            str(SCAN_RECOGNIZER_PORT),
            module="recognizer",
            ready_url=f"{self.url}/readyz",
        )

    def stop(self) -> None:
        if self.NAME in self._platform.procs:
            self._platform.stop(self.NAME)

    def group_members(self) -> int:
        """Consumers in the recognizers' group now (any test's recognizers, not only this one)."""
        admin = AdminClient({"bootstrap.servers": self.kafka_bootstrap})
        [described] = admin.describe_consumer_groups([RECOGNIZER_GROUP]).values()
        group = described.result(timeout=10)
        return 0 if group.state in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD) else len(group.members)

    @contextlib.contextmanager
    def paused(self, timeout: float = 30) -> Iterator[None]:
        """No recognizer in the group while the block runs; skips the test if another one
        (the session's platform) keeps answering. Started again afterwards."""
        self.stop()
        try:
            deadline = time.monotonic() + timeout
            while (members := self.group_members()) and time.monotonic() < deadline:
                time.sleep(0.2)
            if members:
                pytest.skip(
                    f"{members} other recognizer(s) in {RECOGNIZER_GROUP} would answer (a platform runs)"
                )
            yield
        finally:
            self.start()


@pytest.fixture(scope="session")
def scan_recognizer(kafka_bootstrap: str) -> Iterator[ScanRecognizer]:
    recognizer = ScanRecognizer(kafka_bootstrap)
    recognizer.start()
    yield recognizer
    recognizer.stop()


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, database_url: str) -> ApiSettings:
    return ApiSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=SecretStr(database_url),
        admin_api_key=SecretStr(ADMIN_KEY),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(settings: ApiSettings, scan_recognizer: ScanRecognizer) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Admin-keyed; scans (enrollment, verification) may take a while on a loaded machine."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://api",
        headers={"X-API-Key": ADMIN_KEY},
        timeout=120,
    ) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def db(app: FastAPI, database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)  # after the app: its lifespan checked the schema
    yield conn
    await conn.close()


@pytest_asyncio.fixture(loop_scope="module")
async def forget(db: asyncpg.Connection, kafka_bootstrap: str) -> AsyncIterator[Callable[[uuid.UUID], None]]:
    """Register people enrolled through the API; afterwards they leave the shared gallery.

    Tombstones on the gallery topic remove them (and their faces) for every recognizer and
    projector on the test broker, so other tests never match a face against them.
    """
    people: list[uuid.UUID] = []
    yield people.append
    keys = []
    for person_id in people:
        faces = await db.fetch("SELECT id FROM person_faces WHERE person_id = $1", person_id)
        keys += [face_key(str(person_id), str(f["id"])) for f in faces]
        keys.append(person_key(str(person_id)))
    await asyncio.to_thread(_tombstone, kafka_bootstrap, keys)
    await db.execute("DELETE FROM people WHERE id = ANY($1::uuid[])", people)


@pytest_asyncio.fixture(loop_scope="module")
async def new_person(
    client: httpx.AsyncClient, forget: Callable[[uuid.UUID], None]
) -> Callable[[str], Awaitable[uuid.UUID]]:
    """Create people through the API (so on the gallery topic); afterwards they leave the
    shared gallery (``forget``)."""

    async def make(name: str) -> uuid.UUID:
        r = await client.post("/v1/people", json={"name": name})
        assert r.status_code == 201, r.text
        person_id = uuid.UUID(r.json()["id"])
        forget(person_id)
        return person_id

    return make


def _tombstone(bootstrap: str, keys: list[str]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key in keys:
        producer.produce(GALLERY, key=key, value=None)
    assert producer.flush(10) == 0, "gallery tombstones not delivered"
