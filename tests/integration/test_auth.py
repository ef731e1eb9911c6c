"""API keys, scopes and rate limits, against the running ingest and results API.

Keys are created the way an operator creates them: with ``python -m cli keys create``
and the bootstrap admin key.
"""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from PIL import Image

from tests.platform import ROOT, Platform, until

pytestmark = pytest.mark.integration

P = "00000000-0000-4000-8000-000000000000"  # an id no test uses

#: Every non-operational endpoint of both services, with the scope it needs.
API_ENDPOINTS = [
    ("GET", "/v1/images", "query"),
    ("GET", "/v1/images/00000000-0000-4000-8000-000000000000", "query"),
    ("POST", "/v1/images/rerun", "submit"),
    ("POST", "/v1/images/00000000-0000-4000-8000-000000000000/rerun", "submit"),
    ("DELETE", "/v1/images/00000000-0000-4000-8000-000000000000", "admin"),
    ("GET", "/v1/people", "query"),
    ("GET", "/v1/people/00000000-0000-4000-8000-000000000000", "query"),
    ("GET", "/v1/people/00000000-0000-4000-8000-000000000000/images", "query"),
    ("POST", "/v1/people", "enroll"),
    ("POST", "/v1/people/00000000-0000-4000-8000-000000000000/faces", "enroll"),
    ("DELETE", "/v1/people/00000000-0000-4000-8000-000000000000", "admin"),
    ("POST", "/v1/admin/dead-letters/replay", "admin"),
    ("GET", "/v1/admin/keys", "admin"),
    ("POST", "/v1/admin/keys", "admin"),
    ("DELETE", "/v1/admin/keys/nosuchkey", "admin"),
    ("GET", "/v1/images/00000000-0000-4000-8000-000000000000/file", "query"),
    ("GET", "/v1/images/00000000-0000-4000-8000-000000000000/thumbnail", "query"),
    ("GET", "/v1/images/00000000-0000-4000-8000-000000000000/preview", "query"),
    ("GET", "/v1/images/00000000-0000-4000-8000-000000000000/faces/0/crop", "query"),
    ("POST", f"/v1/images/{P}/faces/0/confirm", "enroll"),
    ("PATCH", "/v1/people/00000000-0000-4000-8000-000000000000", "enroll"),
    ("DELETE", f"/v1/people/{P}/faces/{P}", "enroll"),
    ("GET", f"/v1/people/{P}/faces/{P}/crop", "query"),
    ("POST", "/v1/people/00000000-0000-4000-8000-000000000000/merge", "admin"),
    ("GET", "/v1/review/groups", "query"),
    ("POST", "/v1/review/assign", "enroll"),
    ("POST", "/v1/verify", "verify"),
    ("POST", "/v1/detect", "verify"),
    ("GET", "/", "query"),
    ("GET", "/images/00000000-0000-4000-8000-000000000000", "query"),
    ("GET", "/people", "query"),
    ("GET", "/people/00000000-0000-4000-8000-000000000000", "query"),
    ("GET", "/review", "query"),
]
INGEST_ENDPOINTS = [
    ("POST", "/v1/images", "submit"),
    ("POST", "/image/post", "submit"),
    ("POST", "/images/post", "submit"),
]


def _cli(platform: Platform, *args: str) -> str:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "--api",
            platform.api_url,
            "--api-key",
            platform.headers["X-API-Key"],
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def create_key(platform: Platform, name: str, scopes: str, rate: int | None = None) -> tuple[str, str]:
    """(key id, key) of a new key, created with the admin CLI."""
    out = _cli(platform, "keys", "create", name, "--scopes", scopes, *(["--rate", str(rate)] if rate else []))
    first, key = out.strip().splitlines()
    key_id = first.split()[2]
    assert key.startswith(f"fsk_{key_id}_")
    return key_id, key


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def query_key(platform: Platform) -> tuple[str, str]:
    return create_key(platform, "dashboards", "query")


@pytest.fixture(scope="module")
def submit_key(platform: Platform) -> tuple[str, str]:
    return create_key(platform, "camera gateway", "submit")


@pytest.fixture
def anon(platform: Platform) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with httpx.Client(base_url=platform.api_url) as api, httpx.Client(base_url=platform.ingest_url) as ingest:
        yield api, ingest


@pytest.mark.parametrize(("method", "path", "scope"), API_ENDPOINTS + INGEST_ENDPOINTS)
def test_every_endpoint_needs_a_key_with_its_scope(
    platform: Platform,
    method: str,
    path: str,
    scope: str,
    query_key: tuple[str, str],
    submit_key: tuple[str, str],
) -> None:
    base = platform.ingest_url if (method, path, scope) in INGEST_ENDPOINTS else platform.api_url
    with httpx.Client(base_url=base) as client:
        missing = client.request(method, path)
        assert missing.status_code == 401, missing.text
        assert missing.headers["www-authenticate"].startswith("Basic")
        assert "API key" in missing.json()["detail"]
        wrong = client.request(method, path, headers={"X-API-Key": "fsk_000000000000_nope"})
        assert wrong.status_code == 401
        # A key without the scope: 403, and says which scope is missing.
        other = submit_key if scope != "submit" else query_key
        refused = client.request(method, path, headers={"X-API-Key": other[1]})
        assert refused.status_code == 403, refused.text
        assert scope in refused.text  # in {"detail"}, or on the page a person reads (the pages)
        # The admin key passes authentication (the request itself may then be invalid).
        admitted = client.request(method, path, headers=platform.headers)
        assert admitted.status_code not in (401, 403), admitted.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_health_metrics_and_schema_need_no_key(anon: tuple[httpx.Client, httpx.Client], path: str) -> None:
    for client in anon:
        assert client.get(path).status_code == 200


def test_scoped_keys_do_what_their_scopes_allow(
    platform: Platform, query_key: tuple[str, str], submit_key: tuple[str, str]
) -> None:
    with (
        httpx.Client(base_url=platform.ingest_url, headers={"X-API-Key": submit_key[1]}) as ingest,
        httpx.Client(base_url=platform.api_url, headers={"Authorization": f"Bearer {query_key[1]}"}) as api,
    ):
        r = ingest.post("/v1/images", files={"files": ("a.jpg", _jpeg(), "image/jpeg")})
        assert r.status_code == 202, r.text
        legacy = ingest.post("/image/post", json={"path": "sample/examples/obama.jpg"})
        assert legacy.status_code == 200, legacy.text
        assert api.get("/v1/images", params={"limit": 1}).status_code == 200
        # The results page, as a browser sends it after the Basic prompt (key as password).
        basic = base64.b64encode(f"anyone:{query_key[1]}".encode()).decode()
        page = httpx.get(f"{platform.api_url}/", headers={"Authorization": f"Basic {basic}"})
        assert page.status_code == 200
        assert "<h1>Images</h1>" in page.text


def test_keys_are_listed_without_secrets_and_stored_hashed(
    platform: Platform, database_url: str, query_key: tuple[str, str]
) -> None:
    listing = _cli(platform, "keys", "list")
    assert query_key[0] in listing
    assert query_key[1] not in listing

    async def stored() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return list(await conn.fetch("SELECT * FROM api_keys WHERE id = $1", query_key[0]))
        finally:
            await conn.close()

    import asyncio

    (row,) = asyncio.run(stored())
    assert row["key_sha256"] == hashlib.sha256(query_key[1].encode()).hexdigest()
    assert all(query_key[1] not in str(value) for value in row.values())


def test_a_revoked_key_stops_working_within_the_cache_ttl(platform: Platform) -> None:
    key_id, key = create_key(platform, "to be revoked", "submit,query")
    headers = {"X-API-Key": key}
    assert httpx.get(f"{platform.api_url}/v1/people", headers=headers).status_code == 200
    _cli(platform, "keys", "revoke", key_id)
    start = time.monotonic()
    while time.monotonic() - start < 15:
        api = httpx.get(f"{platform.api_url}/v1/people", headers=headers).status_code
        ingest = httpx.post(
            f"{platform.ingest_url}/image/post", headers=headers, json={"path": "x"}
        ).status_code
        if api == 401 and ingest == 401:
            break
        time.sleep(0.5)
    took = time.monotonic() - start
    assert (api, ingest) == (401, 401)
    assert took < 10, f"revocation took {took:.1f}s (cache TTL is 5 s)"
    assert "to be revoked" in _cli(platform, "keys", "list", "--all")
    assert "to be revoked" not in _cli(platform, "keys", "list")
    r = httpx.delete(f"{platform.api_url}/v1/admin/keys/nosuchkey", headers=platform.headers)
    assert r.status_code == 404


def test_rate_limit_answers_429_with_retry_after_per_key(
    platform: Platform, query_key: tuple[str, str]
) -> None:
    _, limited = create_key(platform, "slow client", "query", rate=3)
    url = f"{platform.api_url}/v1/people"
    codes = [httpx.get(url, headers={"X-API-Key": limited}).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = httpx.get(url, headers={"X-API-Key": limited})
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 20  # 3 a minute: one token every 20 s
    assert "rate limit" in r.json()["detail"]
    # Other keys are not affected.
    assert httpx.get(url, headers={"X-API-Key": query_key[1]}).status_code == 200


def test_key_creation_rejects_bad_specs(platform: Platform) -> None:
    url = f"{platform.api_url}/v1/admin/keys"
    for body in (
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["root"]},
        {"name": "", "scopes": ["query"]},
    ):
        r = httpx.post(url, headers=platform.headers, json=body)
        assert r.status_code == 422, body
        assert isinstance(r.json()["detail"], str)


def test_a_key_expires_when_it_was_made_to_and_shows_its_last_use(platform: Platform) -> None:
    keys = f"{platform.api_url}/v1/admin/keys"
    r = httpx.post(
        keys,
        headers=platform.headers,
        json={"name": "temp", "scopes": ["submit", "query"], "expires_in_days": 4 / 86400},
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["expires_at"] is not None
    assert made["expired"] is False
    assert made["last_used_at"] is None
    headers = {"X-API-Key": made["key"]}
    unused = httpx.post(
        keys, headers=platform.headers, json={"name": "never used", "scopes": ["query"]}
    ).json()

    assert httpx.get(f"{platform.api_url}/v1/people", headers=headers).status_code == 200

    def listed(key_id: str) -> dict[str, object]:
        return next(k for k in httpx.get(keys, headers=platform.headers).json() if k["id"] == key_id)

    until("the key's use is recorded", lambda: listed(made["id"])["last_used_at"] is not None, timeout=10)
    assert listed(unused["id"])["last_used_at"] is None
    assert listed(unused["id"])["expires_at"] is None

    def refused_as_expired() -> bool:
        api = httpx.get(f"{platform.api_url}/v1/people", headers=headers)
        ingest = httpx.post(f"{platform.ingest_url}/image/post", headers=headers, json={"path": "x"})
        return all(r.status_code == 401 and "expired" in r.json()["detail"] for r in (api, ingest))

    until("the expired key is refused by both services", refused_as_expired, timeout=15)
    entry = listed(made["id"])
    assert entry["expired"] is True
    assert entry["revoked_at"] is None


def test_key_expiry_must_be_in_the_future_with_a_zone_and_given_once(platform: Platform) -> None:
    url = f"{platform.api_url}/v1/admin/keys"
    for expiry, says in (
        ({"expires_at": "2020-01-01T00:00:00Z"}, "already past"),
        ({"expires_at": "2099-01-01T00:00:00"}, "time zone"),
        ({"expires_at": "2999-01-01T00:00:00Z"}, "days away"),
        ({"expires_in_days": 0}, "greater than 0"),
        ({"expires_in_days": 1, "expires_at": "2099-01-01T00:00:00Z"}, "not both"),
    ):
        r = httpx.post(url, headers=platform.headers, json={"name": "x", "scopes": ["query"], **expiry})
        assert r.status_code == 422, expiry
        assert says in r.json()["detail"], r.json()
