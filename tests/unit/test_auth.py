"""API keys: format, hashing, header parsing, rate limiting and behaviour while the database is down."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from fastapi import HTTPException
from pydantic import SecretStr

from common.auth import (
    BOOTSTRAP_ID,
    SCOPES,
    Authenticator,
    AuthSettings,
    Principal,
    RateLimiter,
    _key_from_authorization,
    digest,
    key_id_of,
    new_key,
)
from tests.clock import Clock


def test_new_keys_are_unique_and_carry_their_id() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    key, key_id = keys.pop()
    assert key_id_of(key) == key_id
    assert len(key) > 50
    assert digest(key) != digest(key + "x")


@pytest.mark.parametrize("bad", ["", "fsk_", "fsk_short_x", "abc_000000000000_x", "fsk_000000000000_"])
def test_malformed_keys_have_no_id(bad: str) -> None:
    assert key_id_of(bad) is None


def test_key_is_read_from_bearer_and_basic_authorization() -> None:
    assert _key_from_authorization("Bearer k1") == "k1"
    assert _key_from_authorization("bearer   k1 ") == "k1"
    basic = base64.b64encode(b"someone:k2").decode()
    assert _key_from_authorization(f"Basic {basic}") == "k2"
    for bad in (
        None,
        "",
        "Bearer",
        "Basic !!!",
        "Basic " + base64.b64encode(b"nopassword").decode(),
        "Digest x",
    ):
        assert _key_from_authorization(bad) is None


def test_admin_scope_implies_every_scope() -> None:
    admin = Principal("a", "a", frozenset({"admin"}), None)
    reader = Principal("r", "r", frozenset({"query"}), 10)
    assert all(admin.allows(s) for s in SCOPES)
    assert reader.allows("query")
    assert not reader.allows("submit")


def test_rate_limiter_allows_a_minutes_worth_then_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert [limiter.acquire("k", 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("k", 3)
    assert wait == pytest.approx(20.0)  # one token every 20 s
    assert limiter.acquire("other", 3) == 0.0  # per key
    clock.now += 19.0
    assert limiter.acquire("k", 3) == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.acquire("k", 3) == 0.0
    clock.now += 3600  # never more than a minute's worth saved up
    assert [limiter.acquire("k", 3) for _ in range(4)][-1] > 0


class BrokenPool:
    """A pool whose database has gone away: every query fails as asyncpg's would."""

    def __init__(self) -> None:
        self.up = True
        self.row: dict[str, Any] | None = None

    async def fetchrow(self, *_args: Any, **_kw: Any) -> dict[str, Any] | None:
        if not self.up:
            raise ConnectionRefusedError("connection refused")
        return self.row


def test_bootstrap_key_needs_no_database() -> None:
    pool = BrokenPool()
    pool.up = False
    auth = Authenticator("t", AuthSettings(admin_api_key=SecretStr("boot")), pool=lambda: pool)  # type: ignore[arg-type,return-value]
    principal = asyncio.run(auth.principal("boot"))
    assert principal is not None
    assert principal.key_id == BOOTSTRAP_ID
    assert principal.rate_per_minute is None


def test_recently_verified_keys_survive_a_database_outage_and_others_get_503() -> None:
    clock = Clock()
    pool = BrokenPool()
    key, key_id = new_key()
    pool.row = {"id": key_id, "name": "cam", "scopes": ["submit"], "rate_per_minute": None}
    settings = AuthSettings(auth_cache_ttl_s=5, auth_stale_ok_s=60, rate_limit_per_minute=42)
    auth = Authenticator("t", settings, pool=lambda: pool, clock=clock)  # type: ignore[arg-type,return-value]
    first = asyncio.run(auth.principal(key))
    assert first is not None
    assert first.rate_per_minute == 42  # the service default
    pool.up = False
    clock.now += 30  # past the cache TTL, within the stale window
    assert asyncio.run(auth.principal(key)) == first
    clock.now += 60  # past the stale window: cannot tell, so 503 rather than a wrong 401
    with pytest.raises(HTTPException) as err:
        asyncio.run(auth.principal(key))
    assert err.value.status_code == 503
    other, _ = new_key()
    with pytest.raises(HTTPException):
        asyncio.run(auth.principal(other))
    # A key that is not even well-formed is refused without asking the database.
    assert asyncio.run(auth.principal("garbage")) is None
