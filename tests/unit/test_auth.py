"""API keys: format, hashing, header parsing, rate limiting and behaviour while the database is down."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import HTTPException
from pydantic import SecretStr

from common.auth import (
    BOOTSTRAP_ID,
    SCOPES,
    Authenticator,
    AuthSettings,
    Credentials,
    FailureLimiter,
    KeyCreate,
    LruCache,
    Principal,
    RateLimiter,
    _key_from_authorization,
    credentials_from,
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
    """A pool whose database has gone away: every query fails as asyncpg's would.
    (The real pool, its timeouts and outages: tests/integration/test_door.py.)"""

    def __init__(self) -> None:
        self.up = True
        self.row: dict[str, Any] | None = None
        self.queries = 0

    @contextlib.asynccontextmanager
    async def acquire(self, **_kw: Any) -> AsyncIterator[BrokenPool]:
        if not self.up:
            raise ConnectionRefusedError("connection refused")
        yield self

    async def fetchrow(self, *_args: Any, **_kw: Any) -> dict[str, Any] | None:
        self.queries += 1
        return self.row


def _row(key_id: str, expires_at: datetime | None = None) -> dict[str, Any]:
    """An api_keys row as the lookup reads it."""
    return {
        "id": key_id,
        "name": "cam",
        "scopes": ["submit"],
        "rate_per_minute": None,
        "expires_at": expires_at,
    }


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
    pool.row = _row(key_id)
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


def test_an_expired_key_is_refused_even_from_the_cache_and_during_an_outage() -> None:
    clock = Clock()
    start = datetime(2026, 12, 1, 12, tzinfo=UTC)
    wall = [start]
    pool = BrokenPool()
    key, key_id = new_key()
    expires = start + timedelta(seconds=10)
    pool.row = _row(key_id, expires_at=expires)
    settings = AuthSettings(auth_cache_ttl_s=5, auth_stale_ok_s=60)
    auth = Authenticator("t", settings, pool=lambda: pool, clock=clock, wall=lambda: wall[0])  # type: ignore[arg-type,return-value]
    assert asyncio.run(auth.principal(key)) is not None
    pool.up = False
    wall[0] = expires  # still cached (no time passed on the monotonic clock), but expired
    with pytest.raises(HTTPException) as err:
        asyncio.run(auth.principal(key))
    assert err.value.status_code == 401
    assert err.value.detail == f"the API key {key_id} expired at {expires.isoformat()}"
    clock.now += 30  # the outage's stale window does not revive it either
    with pytest.raises(HTTPException):
        asyncio.run(auth.principal(key))


def test_credentials_say_how_they_came() -> None:
    basic = base64.b64encode(b"me:k3").decode()
    assert credentials_from({"x-api-key": "k1", "authorization": f"Basic {basic}"}) == Credentials(
        "k1", "x-api-key"
    )
    assert credentials_from({"authorization": "Bearer k2"}) == Credentials("k2", "bearer")
    assert credentials_from({"authorization": f"Basic {basic}"}) == Credentials("k3", "basic")
    assert credentials_from({"authorization": "Digest x"}) is None
    assert credentials_from({}) is None


def test_the_lru_cache_forgets_the_least_recently_used_entry_one_at_a_time() -> None:
    cache: LruCache[int] = LruCache(3)
    for i, key in enumerate("abc"):
        cache.put(key, i, at=float(i))
    assert cache.get("a") == (0, 0.0)  # "a" is now the most recently used
    cache.put("d", 3, at=3.0)
    assert "b" not in cache
    assert [k in cache for k in "acd"] == [True, True, True]
    assert len(cache) == 3


def test_failures_are_limited_per_address_and_refill() -> None:
    clock = Clock()
    limiter = FailureLimiter(per_minute=3, clock=clock)
    for _ in range(3):
        assert limiter.wait("10.0.0.1") == 0.0
        limiter.failed("10.0.0.1")
    assert limiter.wait("10.0.0.1") == pytest.approx(20.0)  # one attempt every 20 s
    assert limiter.wait("10.0.0.2") == 0.0  # per address
    clock.now += 20
    assert limiter.wait("10.0.0.1") == 0.0


def _auth(pool: BrokenPool, clock: Clock, **settings: Any) -> Authenticator:
    return Authenticator("t", AuthSettings(**settings), pool=lambda: pool, clock=clock)  # type: ignore[arg-type,return-value]


def test_unknown_keys_do_not_push_verified_ones_out_of_the_cache() -> None:
    clock, pool = Clock(), BrokenPool()
    good, good_id = new_key()
    pool.row = _row(good_id)
    auth = _auth(pool, clock, auth_cache_size=2, auth_negative_cache_size=5, auth_failures_per_minute=10**6)
    assert asyncio.run(auth.principal(good)) is not None
    pool.row = None
    flood = [new_key()[0] for _ in range(50)]
    for key in flood:
        assert asyncio.run(auth.principal(key)) is None
    assert len(auth.unknown) == 5  # bounded, the oldest forgotten first
    assert digest(flood[-1]) in auth.unknown
    queries = pool.queries
    assert asyncio.run(auth.principal(flood[-1])) is None
    assert pool.queries == queries  # remembered as unknown: no second lookup
    pool.up = False
    clock.now += 60  # past the TTL, inside the stale grace: verified before the outage
    assert asyncio.run(auth.principal(good)) is not None


def test_an_address_over_its_failures_gets_429_without_a_lookup() -> None:
    clock, pool = Clock(), BrokenPool()
    good, good_id = new_key()
    pool.row = _row(good_id)
    auth = _auth(pool, clock, auth_failures_per_minute=2, admin_api_key=SecretStr("boot"))
    assert asyncio.run(auth.principal(good, "10.0.0.1")) is not None
    pool.row = None
    assert asyncio.run(auth.principal("garbage", "10.0.0.1")) is None  # malformed counts too
    assert asyncio.run(auth.principal(new_key()[0], "10.0.0.1")) is None
    queries = pool.queries
    with pytest.raises(HTTPException) as err:
        asyncio.run(auth.principal(new_key()[0], "10.0.0.1"))
    assert err.value.status_code == 429
    assert err.value.headers == {"Retry-After": "30"}
    assert pool.queries == queries  # refused before the lookup
    # Keys that cost no lookup still work from that address; other addresses are not affected.
    assert asyncio.run(auth.principal(good, "10.0.0.1")) is not None
    assert asyncio.run(auth.principal("boot", "10.0.0.1")) is not None
    assert asyncio.run(auth.principal(new_key()[0], "10.0.0.2")) is None
    pool.row = _row(good_id)
    clock.now += 10  # past the TTL: looked up again, still not held back by the limit
    assert asyncio.run(auth.principal(good, "10.0.0.1")) is not None
    pool.row = None
    clock.now += 20
    assert asyncio.run(auth.principal(new_key()[0], "10.0.0.1")) is None


def test_a_key_expiry_is_counted_from_creation_and_refused_when_past_or_too_far() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert KeyCreate(name="k", scopes=["query"]).expiry(now) is None
    assert KeyCreate(name="k", scopes=["query"], expires_in_days=1.5).expiry(now) == now + timedelta(hours=36)
    later = now + timedelta(days=30)
    assert KeyCreate(name="k", scopes=["query"], expires_at=later).expiry(now) == later
    with pytest.raises(ValueError, match="already past"):
        KeyCreate(name="k", scopes=["query"], expires_at=now).expiry(now)
    with pytest.raises(ValueError, match="days away"):
        KeyCreate(name="k", scopes=["query"], expires_at=now + timedelta(days=4000)).expiry(now)


def test_a_principal_is_expired_from_its_expiry_on() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    never = Principal("k", "n", frozenset({"query"}), None)
    assert not never.expired(at)
    expiring = Principal("k", "n", frozenset({"query"}), None, expires_at=at)
    assert not expiring.expired(at - timedelta(microseconds=1))
    assert expiring.expired(at)
