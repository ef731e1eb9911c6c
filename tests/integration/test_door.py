"""The door (common/door.py) of both services: keys checked and bodies counted before a body
is parsed; cross-site requests refused; failed key checks bounded.

Against the running services (the platform fixture: real uvicorn servers), over raw
sockets where the transport matters: a test sends a request's head and part of its body,
then waits, with a deadline, for the answer without sending the rest. A server that
parses the body before it checks the key (or counts only ``Content-Length``) never
answers that request, and the test fails on its deadline.

Key lookups against the real database, in-process: a flood of random keys, an outage
(PostgreSQL behind a TCP relay the test cuts), an exhausted pool, and the limit on
failed attempts per client address (through ingest's app, with the client address
ASGI reports).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import select
import socket
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI, HTTPException
from pydantic import SecretStr

from api.settings import ApiSettings
from common.auth import Authenticator, AuthSettings, KeyCreate, create_key, digest, new_key, revoke_key
from ingest.app import create_app as create_ingest
from ingest.settings import IngestSettings
from tests.platform import ADMIN_KEY, Platform
from tests.tcp_relay import TcpRelay, relay_to, url_through

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
PERSON = "00000000-0000-4000-8000-000000000000"
BOUNDARY = "door-test"
#: The head of a multipart body with one file part, whose content follows.
FILE_PART = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="big.jpg"\r\n'
    "Content-Type: image/jpeg\r\n\r\n"
).encode()
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


# ------------------------------------------------------------------- raw HTTP/1.1


def _connect(base_url: str) -> socket.socket:
    url = urlsplit(base_url)
    return socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10)


def _head(method: str, path: str, base_url: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {urlsplit(base_url).netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(sock: socket.socket, within_s: float = 10) -> tuple[int, dict[str, str], dict[str, str]]:
    """Status, headers and JSON body of the answer; fails if none comes within ``within_s``."""
    deadline = time.monotonic() + within_s
    data = b""

    def more() -> bytes:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no answer within {within_s} s: the server waits for the body") from None
        assert chunk, "the server closed the connection without an answer"
        return chunk

    while b"\r\n\r\n" not in data:
        data += more()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        body += more()
    return int(status_line.split()[1]), headers, json.loads(body)


def _send_chunks_until_answered(sock: socket.socket, first: bytes, most: int) -> int:
    """Send ``first``, then 1 MiB pieces, as HTTP chunks, until an answer is waiting or
    ``most`` bytes are sent; never the last chunk: the body does not end. Returns the bytes sent."""
    sent = 0
    for piece in itertools.chain([first], itertools.repeat(b"\xff" * MIB)):
        if sent > most or select.select([sock], [], [], 0)[0]:
            break
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        except OSError:  # the server answered and closed: the answer is in the socket
            break
        sent += len(piece)
    return sent


def _default(settings: type[IngestSettings] | type[ApiSettings], name: str) -> int:
    value = settings.model_fields[name].default
    assert isinstance(value, int)
    return value


# ----------------------------------------------------------- keys before bodies


@pytest.mark.parametrize(
    ("service", "path"), [("api", f"/v1/people/{PERSON}/faces"), ("ingest", "/v1/images")]
)
@pytest.mark.parametrize("key", [None, "fsk_000000000000_nope", "not-even-a-key"])
def test_an_upload_with_no_valid_key_is_refused_before_its_body_is_read(
    platform: Platform, service: str, path: str, key: str | None
) -> None:
    """40 MiB declared, 64 KiB sent: the 401 comes while the client still has 40 MiB to send."""
    base = platform.api_url if service == "api" else platform.ingest_url
    headers = {**MULTIPART, "Content-Length": str(40 * MIB)} | ({"X-API-Key": key} if key else {})
    with _connect(base) as sock:
        sock.sendall(_head("POST", path, base, headers) + FILE_PART + b"\xff" * (64 * 1024))
        status, answer_headers, body = _answer(sock)
    assert status == 401, body
    assert answer_headers["www-authenticate"].startswith("Basic")
    assert "API key" in body["detail"]


@pytest.mark.parametrize(
    ("service", "path"),
    [("api", "/v1/people"), ("api", "/v1/admin/keys"), ("ingest", "/image/post"), ("ingest", "/images/post")],
)
def test_invalid_json_without_a_key_is_401_not_422(platform: Platform, service: str, path: str) -> None:
    base = platform.api_url if service == "api" else platform.ingest_url
    r = httpx.post(base + path, content=b'{"not json', headers={"Content-Type": "application/json"})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Basic")


# ---------------------------------------------------------------- bytes counted


@pytest.mark.parametrize(
    ("service", "path", "limit"),
    [
        ("ingest", "/v1/images", _default(IngestSettings, "max_request_bytes")),
        ("api", f"/v1/people/{PERSON}/faces", _default(ApiSettings, "max_request_bytes")),
    ],
)
def test_a_chunked_upload_over_the_limit_is_413_before_it_ends(
    platform: Platform, service: str, path: str, limit: int
) -> None:
    base = platform.api_url if service == "api" else platform.ingest_url
    headers = {**MULTIPART, "Transfer-Encoding": "chunked", **platform.headers}
    with _connect(base) as sock:
        sock.sendall(_head("POST", path, base, headers))
        sent = _send_chunks_until_answered(sock, FILE_PART, most=limit + 32 * MIB)
        status, _, body = _answer(sock)
    assert status == 413, body
    assert f"request body over {limit} bytes" in body["detail"]
    assert sent > limit  # it was the count that passed the limit


def test_a_chunked_json_body_over_its_limit_is_413_before_it_ends(platform: Platform) -> None:
    limit = _default(IngestSettings, "max_json_bytes")
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **platform.headers}
    with _connect(platform.ingest_url) as sock:
        sock.sendall(_head("POST", "/image/post", platform.ingest_url, headers))
        _send_chunks_until_answered(sock, b'{"path": "', most=limit + 32 * MIB)
        status, _, body = _answer(sock)
    assert status == 413, body
    assert f"JSON body over {limit} bytes" in body["detail"]


def test_a_declared_length_over_the_limit_is_413_at_once(platform: Platform) -> None:
    """The results API had no limit but the route's, after the whole body was spooled."""
    headers = {**MULTIPART, "Content-Length": str(40 * MIB), **platform.headers}
    base = platform.api_url
    with _connect(base) as sock:
        sock.sendall(_head("POST", f"/v1/people/{PERSON}/faces", base, headers) + FILE_PART)
        status, _, body = _answer(sock)
    assert status == 413, body
    assert "request body over" in body["detail"]


# ------------------------------------------------------------------------ CSRF


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"browser:{key}".encode()).decode()


@pytest.mark.parametrize("path", ["/v1/images/rerun", "/v1/admin/dead-letters/replay"])
def test_a_cross_site_form_post_with_the_browsers_login_is_refused(platform: Platform, path: str) -> None:
    """What a page on another site makes a logged-in browser send: a form post, no body."""
    browser = {
        "Authorization": _basic(ADMIN_KEY),
        "Origin": "https://evil.example",
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    r = httpx.post(platform.api_url + path, headers=browser)
    assert r.status_code == 403, r.text
    assert "cross-site" in r.json()["detail"]
    # An older browser sends only the Origin; one that sends neither still sends Basic.
    for drop in ("Sec-Fetch-Site", "Origin"):
        browser.pop(drop)
        r = httpx.post(platform.api_url + path, headers=browser)
        assert r.status_code == 403, r.text


def test_basic_credentials_still_open_the_results_page_and_nothing_else(platform: Platform) -> None:
    page = httpx.get(
        f"{platform.api_url}/", headers={"Authorization": _basic(ADMIN_KEY), "Sec-Fetch-Site": "cross-site"}
    )
    assert page.status_code == 200  # a link from another site to the page is fine
    refused = httpx.delete(
        f"{platform.api_url}/v1/admin/keys/nosuchkey", headers={"Authorization": _basic(ADMIN_KEY)}
    )
    assert refused.status_code == 403
    assert "X-API-Key" in refused.json()["detail"]
    legacy = httpx.post(
        f"{platform.ingest_url}/image/post",
        json={"path": "sample/examples/obama.jpg"},
        headers={"Authorization": _basic(ADMIN_KEY)},
    )
    assert legacy.status_code == 403


def test_a_state_changing_call_from_another_origin_is_refused_whatever_its_key(platform: Platform) -> None:
    url = f"{platform.api_url}/v1/admin/keys/nosuchkey"
    evil = httpx.delete(url, headers={**platform.headers, "Origin": "https://evil.example"})
    assert evil.status_code == 403
    same = httpx.delete(url, headers={**platform.headers, "Origin": platform.api_url})
    assert same.status_code == 404  # through the door: there is no such key
    bearer = httpx.delete(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert bearer.status_code == 404


# ------------------------------------------------------ key lookups, in-process


@pytest.fixture(scope="module")
def ingest_settings(kafka_bootstrap: str, database_url: str) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=SecretStr(database_url),
        admin_api_key=SecretStr(ADMIN_KEY),
        auth_failures_per_minute=5,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ingest(ingest_settings: IngestSettings) -> AsyncIterator[FastAPI]:
    app = create_ingest(ingest_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def db(ingest: FastAPI, database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Straight to PostgreSQL. (After ingest: its lifespan applied the schema.)"""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest_asyncio.fixture(loop_scope="module")
async def good_key(db: asyncpg.Pool) -> AsyncIterator[str]:
    created = await create_key(db, KeyCreate(name=f"door-test-{uuid.uuid4()}", scopes=["submit"]))
    yield created.key
    await revoke_key(db, created.id)


@pytest_asyncio.fixture(loop_scope="module")
async def relay(database_url: str) -> AsyncIterator[TcpRelay]:
    async with relay_to(database_url) as relay:
        yield relay


def _through(database_url: str, relay: TcpRelay) -> str:
    return url_through(database_url, relay)


def _from(app: FastAPI, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)), base_url="http://ingest"
    )


@pytest.mark.asyncio(loop_scope="module")
async def test_an_address_that_fails_too_often_gets_429_before_any_lookup(
    ingest: FastAPI, ingest_settings: IngestSettings, good_key: str
) -> None:
    auth: Authenticator = ingest.state.auth
    bad: dict[str, list[str]] = {"paths": []}  # 422 once through the door: the key was accepted
    async with _from(ingest, "198.51.100.7") as noisy, _from(ingest, "198.51.100.8") as other:
        assert (
            await noisy.post("/images/post", json=bad, headers={"X-API-Key": good_key})
        ).status_code == 422
        for _ in range(ingest_settings.auth_failures_per_minute):
            r = await noisy.post("/images/post", json=bad, headers={"X-API-Key": new_key()[0]})
            assert r.status_code == 401
        guess = new_key()[0]
        r = await noisy.post("/images/post", json=bad, headers={"X-API-Key": guess})
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "12"  # 5 a minute: one more every 12 s
        assert "failed API key checks" in r.json()["detail"]
        assert digest(guess) not in auth.unknown  # refused before it was looked up
        # The key this address has already proven still works; other addresses are not affected.
        assert (
            await noisy.post("/images/post", json=bad, headers={"X-API-Key": good_key})
        ).status_code == 422
        assert (await other.post("/images/post", json=bad, headers={"X-API-Key": guess})).status_code == 401


@pytest.mark.asyncio(loop_scope="module")
async def test_a_flood_of_random_keys_does_not_evict_a_good_key_needed_in_an_outage(
    db: asyncpg.Pool, database_url: str, relay: TcpRelay, good_key: str
) -> None:
    """More random keys than the old cache held (10,000), each from its own address, then
    PostgreSQL goes away: the good key, verified before the flood, keeps working."""
    settings = AuthSettings(auth_cache_ttl_s=0, auth_negative_cache_size=1000)  # every check a lookup
    pool = await asyncpg.create_pool(_through(database_url, relay), min_size=1, max_size=4)
    try:
        auth = Authenticator("ingest", settings, pool=lambda: pool)
        assert await auth.principal(good_key, "192.0.2.1") is not None
        gate = asyncio.Semaphore(4)

        async def guess(i: int) -> None:
            async with gate:
                assert (
                    await auth.principal(new_key()[0], f"10.{i // 65536}.{i // 256 % 256}.{i % 256}") is None
                )

        await asyncio.gather(*(guess(i) for i in range(10_050)))
        assert len(auth.unknown) == 1000  # bounded, apart from the good keys
        await relay.cut()
        try:
            principal = await auth.principal(good_key, "192.0.2.1")
            assert principal is not None
            with pytest.raises(HTTPException) as err:
                await auth.principal(new_key()[0], "192.0.2.1")
            assert err.value.status_code == 503
        finally:
            await relay.restore()
    finally:
        await pool.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_a_lookup_does_not_wait_for_ever_for_a_busy_pool(
    db: asyncpg.Pool, database_url: str, good_key: str
) -> None:
    settings = AuthSettings(auth_cache_ttl_s=0, auth_db_timeout_s=0.5)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        auth = Authenticator("ingest", settings, pool=lambda: pool)
        assert await auth.principal(good_key) is not None
        async with pool.acquire():  # the pool's one connection is taken
            start = time.monotonic()
            with pytest.raises(HTTPException) as err:
                await asyncio.wait_for(auth.principal(new_key()[0]), 10)
            assert err.value.status_code == 503
            assert err.value.headers == {"Retry-After": "5"}
            assert time.monotonic() - start < 3
            # A key verified recently rides out the wait as it rides out an outage.
            assert await asyncio.wait_for(auth.principal(good_key), 10) is not None
    finally:
        await pool.close()
