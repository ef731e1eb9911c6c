"""Fixtures of the results API's in-process tests (test_api, test_verify): the real app
(its lifespan connects to the test broker and database) behind httpx's ASGI transport.
A module that needs other settings defines its own fixtures of these names."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest
import pytest_asyncio
from confluent_kafka import Producer
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app
from api.settings import ApiSettings
from schemas.topics import GALLERY, face_key, person_key
from tests.platform import ADMIN_KEY


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, database_url: str) -> ApiSettings:
    return ApiSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=SecretStr(database_url),
        admin_api_key=SecretStr(ADMIN_KEY),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(settings: ApiSettings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Admin-keyed; dlib work (enrollment, verification) may take a while on a loaded machine."""
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


def _tombstone(bootstrap: str, keys: list[str]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key in keys:
        producer.produce(GALLERY, key=key, value=None)
    assert producer.flush(10) == 0, "gallery tombstones not delivered"
