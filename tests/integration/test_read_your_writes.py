"""The results API across a database outage: an unknown id is "not yet" (503 with
Retry-After) while PostgreSQL is away and for a grace after it returns, never a 404 that
a client would take as final; after the grace it is 404 again.

The outage is real: the API reaches PostgreSQL through a TCP relay that the test cuts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app
from api.settings import ApiSettings
from tests.platform import ADMIN_KEY
from tests.tcp_relay import TcpRelay, relay_to, url_through

GRACE_S = 3.0


@pytest_asyncio.fixture(loop_scope="function")
async def relay(database_url: str) -> AsyncIterator[TcpRelay]:
    async with relay_to(database_url) as relay:
        yield relay


@pytest_asyncio.fixture(loop_scope="function")
async def client(
    kafka_bootstrap: str, database_url: str, relay: TcpRelay
) -> AsyncIterator[httpx.AsyncClient]:
    through = url_through(database_url, relay)
    settings = ApiSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=SecretStr(through),
        admin_api_key=SecretStr(ADMIN_KEY),
        catch_up_grace_s=GRACE_S,
    )
    app: FastAPI = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", headers={"X-API-Key": ADMIN_KEY}
        ) as c,
    ):
        yield c


async def _until(client: httpx.AsyncClient, path: str, status: int, within_s: float = 30) -> httpx.Response:
    deadline = time.monotonic() + within_s
    while True:
        r = await client.get(path)
        if r.status_code == status or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.2)


async def test_an_unknown_id_is_not_yet_around_an_outage_and_404_after_it(
    client: httpx.AsyncClient, relay: TcpRelay
) -> None:
    path = f"/v1/images/{uuid.uuid4()}"
    assert (await client.get(path)).status_code == 404  # no outage: unknown is unknown
    await relay.cut()
    down = await client.get(path)
    assert down.status_code == 503
    assert "Retry-After" in down.headers
    await relay.restore()
    back = await _until(client, "/readyz", 200)
    assert back.status_code == 200, back.text
    catching_up = await client.get(path)
    assert catching_up.status_code == 503, catching_up.text
    assert "catching up" in catching_up.json()["detail"]
    assert catching_up.headers["Retry-After"] == "2"
    after = await _until(client, path, 404, within_s=GRACE_S + 10)
    assert after.status_code == 404
