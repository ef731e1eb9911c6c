"""API keys: who may call the HTTP services, with which scopes, and how often.

A key looks like ``fsk_<id>_<secret>``. The id is public (it names the key in lists,
logs and metrics); the whole key is shown once, when it is created, and only its
SHA-256 is stored. A plain hash is the right tool here, unlike for passwords: the secret
is 256 random bits, so there is nothing to guess and no need for a slow hash.

Scopes: ``submit`` (send images, re-run them), ``query`` (read results and pages),
``enroll`` (add people and faces), ``verify`` (compare faces and detect them in uploaded
photos, ``/v1/verify`` and ``/v1/detect``: nothing is stored, but each call costs the
API's dlib worker about a second, so it is a scope of its own), ``admin`` (erase, replay
dead letters, manage keys). ``admin`` implies every other scope.

Two kinds of key are accepted:

* keys created through ``POST /v1/admin/keys`` (or ``python -m cli keys create``),
  stored in PostgreSQL's ``api_keys`` table;
* the bootstrap admin key from the ``ADMIN_API_KEY`` setting (a secret), which exists
  so that the first keys can be created. It is never stored and is not rate-limited.

Clients send a key as ``X-API-Key: <key>``, ``Authorization: Bearer <key>``, or as the
password of HTTP Basic authentication (what a browser prompts for on the results page).

Keys are checked at the door (:mod:`common.door`), before routing and before a body is
read; a route names the scope it needs with ``dependencies=[require(scope)]``.

A key may expire (``expires_at``): past it, it is refused with 401 "expired", even
from the cache. The services that check keys record when each was last used
(``api_key_use``), at most once per ``auth_last_used_every_s`` per key and process, after
the request's check and without holding it up.

Verified keys are cached for ``auth_cache_ttl_s`` (revocation takes effect within that
time) in a least-recently-used cache of ``auth_cache_size`` keys. While PostgreSQL is
unreachable a key verified in the last ``auth_stale_ok_s`` keeps working, so an outage of
the database does not stop image submission. Unknown keys are remembered apart, in a
bounded cache of their own, so a flood of random keys cannot push the good ones out.
A client address may fail ``auth_failures_per_minute`` times a minute (429 beyond that,
before any lookup), and a lookup waits at most ``auth_db_timeout_s`` for a pooled
connection: random keys cannot queue up in front of the pool.

Rate limits are token buckets per key and per process: with N replicas of a service a
key can make N times its limit in all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Generic, Literal, Self, TypeVar, get_args

import asyncpg
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from prometheus_client import Counter
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.db import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)

#: Why a key's last use may go unwritten (and be tried again at its next use).
_USE_NOT_RECORDED: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)

Scope = Literal["submit", "query", "enroll", "verify", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
KEY_PREFIX = "fsk_"
BOOTSTRAP_ID = "bootstrap-admin"

AUTH_FAILURES = Counter(
    "facestream_auth_failures_total",
    "Requests refused by authentication or authorisation.",
    ["service", "reason"],  # missing | invalid | expired | scope | unavailable | throttled
)
RATE_LIMITED = Counter("facestream_rate_limited_total", "Requests refused with 429.", ["service"])


#: The shortest bootstrap admin key production accepts (``secrets.token_urlsafe(32)`` has 43).
ADMIN_KEY_MIN_LENGTH = 32
#: Marks of a key written as an example rather than made at random (lower case): the
#: committed development keys carry them, and so do the usual stand-ins.
PLACEHOLDER_MARKS = (
    *("not-secret", "notsecret", "not_secret", "changeme", "change-me", "change_me", "example"),
    *("placeholder", "dev-admin-key", "test-admin-key", "password", "replace-me", "your-key"),
)


def admin_key_problem(key: str) -> str | None:
    """Why ``key`` is unfit to be production's bootstrap admin key, or None. (Never says
    the key itself: the answer goes to logs.)"""
    if len(key) < ADMIN_KEY_MIN_LENGTH:
        return f"shorter than {ADMIN_KEY_MIN_LENGTH} characters"
    lowered = key.lower()
    if mark := next((m for m in PLACEHOLDER_MARKS if m in lowered), None):
        return f"a placeholder (it contains {mark!r})"
    if len(set(key)) < 10:  # "aaaa...", "1234123412..."
        return "not random (fewer than 10 different characters)"
    return None


class AuthSettings(BaseSettings):
    # hide_input_in_errors: a refused ADMIN_API_KEY must not be printed in the error.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True)

    environment: Literal["development", "production"] = Field(
        default="development",
        description="production (deploy/k8s/overlays/prod sets it) refuses at start-up an ADMIN_API_KEY "
        "that is short or a known placeholder.",
    )
    admin_api_key: SecretStr | None = Field(
        default=None,
        description="Bootstrap admin key (from a secret), used to create the first keys. "
        "Unset: only keys stored in the database are accepted. In production at least "
        f"{ADMIN_KEY_MIN_LENGTH} random characters.",
    )
    auth_cache_ttl_s: float = Field(
        default=5.0, ge=0, description="How long a verified key is trusted before it is looked up again."
    )
    auth_stale_ok_s: float = Field(
        default=300.0, ge=0, description="While the database is down, keys verified this recently still work."
    )
    rate_limit_per_minute: int = Field(
        default=600, ge=1, description="Requests per minute for a key created without its own limit."
    )
    auth_cache_size: int = Field(
        default=10_000, ge=1, description="Verified keys remembered (the least recently used go first)."
    )
    auth_negative_cache_size: int = Field(
        default=10_000,
        ge=1,
        description="Unknown or revoked keys remembered for AUTH_CACHE_TTL_S, apart from the verified ones.",
    )
    auth_failures_per_minute: int = Field(
        default=120,
        ge=1,
        description="Failed key checks (unknown, revoked or malformed key) one client address may make a "
        "minute, and at once; beyond that its keys are not looked up: 429 with Retry-After.",
    )
    auth_last_used_every_s: float = Field(
        default=60.0,
        ge=0,
        description="A key's last use is written at most this often per key and process (what "
        "GET /v1/admin/keys shows as last_used_at).",
    )
    auth_db_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="How long a key lookup may wait for a pooled connection, and then for its query; "
        "past it the key is unverifiable (503, or the AUTH_STALE_OK_S grace).",
    )

    @model_validator(mode="after")
    def _admin_key_fit_for_production(self) -> Self:
        """In production a weak bootstrap admin key stops the service at start-up: it opens
        everything, so a committed example or a short word must never reach a real deployment."""
        key = self.admin_api_key
        problem = admin_key_problem(key.get_secret_value()) if key is not None else None
        if self.environment == "production" and problem is not None:
            raise ValueError(
                f"ADMIN_API_KEY is {problem}, which ENVIRONMENT=production refuses; make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return self


# ----------------------------------------------------------------------------- keys


def new_key() -> tuple[str, str]:
    """A fresh key and its public id: ``(fsk_<id>_<secret>, <id>)``."""
    key_id = secrets.token_hex(6)
    return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}", key_id


def key_id_of(key: str) -> str | None:
    """The public id inside a well-formed key, or None."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != 12 or not secret:
        return None
    return key_id


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, name, scopes, requests-per-minute (None: unlimited)
    and when it expires (None: never)."""

    key_id: str
    name: str
    scopes: frozenset[str]
    rate_per_minute: int | None
    expires_at: datetime | None = None

    def allows(self, scope: Scope) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


#: The longest a key may be made to last from its creation (ten years).
MAX_KEY_LIFETIME = timedelta(days=3650)


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1)
    rate_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Omit for the service default."
    )
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working (ISO 8601 with a zone). Omit: never."
    )
    expires_in_days: float | None = Field(
        default=None,
        gt=0,
        le=MAX_KEY_LIFETIME.days,
        description="The same, counted from now (days, fractions allowed). Give this or expires_at.",
    )

    @model_validator(mode="after")
    def _one_expiry(self) -> Self:
        if self.expires_at is not None and self.expires_in_days is not None:
            raise ValueError("give expires_at or expires_in_days, not both")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a time zone (e.g. 2027-01-31T00:00:00Z)")
        return self

    def expiry(self, now: datetime) -> datetime | None:
        """When a key made at ``now`` to this spec expires; ValueError if that is already past
        or further than :data:`MAX_KEY_LIFETIME`."""
        if self.expires_in_days is not None:
            return now + timedelta(days=self.expires_in_days)
        if self.expires_at is None:
            return None
        if self.expires_at <= now:
            raise ValueError(f"expires_at {self.expires_at.isoformat()} is already past")
        if self.expires_at - now > MAX_KEY_LIFETIME:
            raise ValueError(f"expires_at is more than {MAX_KEY_LIFETIME.days} days away")
        return self.expires_at


class KeyPublic(BaseModel):
    id: str
    name: str
    scopes: list[str]
    rate_per_minute: int | None
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = Field(default=None, description="Null: never expires.")
    expired: bool = Field(default=False, description="Past expires_at: refused like a revoked key.")
    last_used_at: datetime | None = Field(
        default=None,
        description="When a service last accepted the key (to within AUTH_LAST_USED_EVERY_S); null: never.",
    )


class KeyCreated(KeyPublic):
    key: str = Field(description="The key itself. Shown only now: store it.")


_KEY_COLUMNS = """
    k.id, k.name, k.scopes, k.rate_per_minute, k.created_at, k.revoked_at, k.expires_at,
    coalesce(k.expires_at <= now(), false) AS expired, u.last_used_at
"""


async def create_key(pool: asyncpg.Pool, spec: KeyCreate) -> KeyCreated:
    """Make and store a key; ValueError if its expiry is past or too far (see KeyCreate.expiry)."""
    key, key_id = new_key()
    expires_at = spec.expiry(utcnow())
    row = await pool.fetchrow(
        f"""
        WITH k AS (
            INSERT INTO api_keys (id, name, scopes, key_sha256, rate_per_minute, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING *
        )
        SELECT {_KEY_COLUMNS} FROM k LEFT JOIN api_key_use u ON false
        """,
        key_id,
        spec.name,
        sorted(set(spec.scopes)),
        digest(key),
        spec.rate_per_minute,
        expires_at,
    )
    assert row is not None  # INSERT ... RETURNING always returns the row
    return KeyCreated(key=key, **dict(row))


async def list_keys(pool: asyncpg.Pool, *, include_revoked: bool) -> list[KeyPublic]:
    """Keys oldest first; revoked ones only with ``include_revoked`` (expired ones always)."""
    where = "" if include_revoked else "WHERE k.revoked_at IS NULL"
    rows = await pool.fetch(
        f"SELECT {_KEY_COLUMNS} FROM api_keys k LEFT JOIN api_key_use u ON u.key_id = k.id {where} "
        "ORDER BY k.created_at, k.id"
    )
    return [KeyPublic(**dict(r)) for r in rows]


async def revoke_key(pool: asyncpg.Pool, key_id: str) -> KeyPublic | None:
    """Revoke (idempotently); None if no such key."""
    row = await pool.fetchrow(
        f"""
        WITH k AS (
            UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING *
        )
        SELECT {_KEY_COLUMNS} FROM k LEFT JOIN api_key_use u ON u.key_id = k.id
        """,
        key_id,
    )
    return KeyPublic(**dict(row)) if row else None


async def record_use(pool: asyncpg.Pool, key_id: str, at: datetime, wait_s: float) -> None:
    """Note that ``key_id`` was used at ``at`` (never moving its last use back); waits at most
    ``wait_s`` for the database."""
    await pool.execute(
        """
        INSERT INTO api_key_use (key_id, last_used_at) VALUES ($1, $2)
        ON CONFLICT (key_id) DO UPDATE
            SET last_used_at = greatest(api_key_use.last_used_at, EXCLUDED.last_used_at)
        """,
        key_id,
        at,
        timeout=wait_s,
    )


# --------------------------------------------------------------------- rate limits


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """Token buckets: a key may make ``rate`` requests a minute, and a minute's worth at once."""

    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def acquire(self, key_id: str, rate_per_minute: int) -> float:
        """Take a token: 0.0 if allowed, otherwise the seconds until one is available."""
        now = self.clock()
        per_second = rate_per_minute / 60.0
        bucket = self.buckets.get(key_id)
        if bucket is None:
            bucket = self.buckets[key_id] = _Bucket(tokens=float(rate_per_minute), at=now)
        bucket.tokens = min(float(rate_per_minute), bucket.tokens + (now - bucket.at) * per_second)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / per_second


V = TypeVar("V")


class LruCache(Generic[V]):
    """At most ``capacity`` entries, each with the time it was stored; the least recently
    used entry is forgotten first (never the whole cache at once)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> tuple[V, float] | None:
        """The value and when it was stored; marks the entry as recently used."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, value: V, at: float) -> None:
        self._entries[key] = (value, at)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def pop(self, key: str) -> None:
        self._entries.pop(key, None)


#: Client addresses whose failures are remembered; the least recently failing go first.
FAILURE_ADDRESSES = 100_000


@dataclass
class FailureLimiter:
    """Failed key checks per client address: a token bucket of ``per_minute`` tokens,
    refilled at ``per_minute`` a minute; each failure takes one."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    buckets: LruCache[_Bucket] = field(default_factory=lambda: LruCache(FAILURE_ADDRESSES))

    def _bucket(self, address: str) -> _Bucket:
        now = self.clock()
        entry = self.buckets.get(address)
        if entry is None:
            return _Bucket(tokens=float(self.per_minute), at=now)
        bucket = entry[0]
        refill = (now - bucket.at) * self.per_minute / 60.0
        bucket.tokens = min(float(self.per_minute), bucket.tokens + refill)
        bucket.at = now
        return bucket

    def wait(self, address: str) -> float:
        """0.0 if ``address`` may try a key now, otherwise the seconds until it may."""
        tokens = self._bucket(address).tokens
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) * 60.0 / self.per_minute

    def failed(self, address: str) -> None:
        bucket = self._bucket(address)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)
        self.buckets.put(address, bucket, bucket.at)


# ------------------------------------------------------------------ authentication

_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An API key; `Authorization: Bearer <key>` and HTTP Basic (key as password) work too.",
)


@dataclass(frozen=True)
class Credentials:
    """A key as a request carries it, and how: a browser sends ``basic`` by itself (cross-site
    too, once the user has logged in), never the other two."""

    key: str
    scheme: Literal["x-api-key", "bearer", "basic"]


def credentials_from(headers: Mapping[str, str]) -> Credentials | None:
    """The key in ``X-API-Key`` (first) or ``Authorization`` (Bearer, or Basic's password)."""
    header = headers.get("x-api-key")
    if header:
        return Credentials(header, "x-api-key")
    value = headers.get("authorization")
    if not value:
        return None
    scheme = value.partition(" ")[0].lower()
    key = _key_from_authorization(value)
    if key is None or scheme not in ("bearer", "basic"):
        return None
    return Credentials(key, "bearer" if scheme == "bearer" else "basic")


def principal_of(scope: Mapping[str, Any]) -> Principal | None:
    """The principal :class:`common.door.Door` found for this request (None: an open path)."""
    principal = scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else None


@dataclass
class Authenticator:
    """Verifies keys against the settings and the ``api_keys`` table.

    Verified keys live in an LRU cache of ``auth_cache_size``; unknown and revoked ones in
    a separate one of ``auth_negative_cache_size``, for ``auth_cache_ttl_s``. A failed check
    (malformed, unknown or revoked key) counts against the client address; an address over
    ``auth_failures_per_minute`` gets 429 without its key being looked up, unless the key
    is in the cache of verified ones (which no guess can put there): a noisy neighbour
    behind the same address does not lock out working keys. A lookup waits at most ``auth_db_timeout_s`` for a
    pooled connection and as long for its answer.
    """

    service: str
    settings: AuthSettings
    pool: Callable[[], asyncpg.Pool]
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = utcnow  # expiry and last use are calendar times
    limiter: RateLimiter = field(default_factory=RateLimiter)
    good: LruCache[Principal] = field(init=False)
    unknown: LruCache[None] = field(init=False)
    failures: FailureLimiter = field(init=False)
    #: key id -> when (``clock``) its use was last written by this process
    used: LruCache[None] = field(init=False)
    _writes: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.good = LruCache(self.settings.auth_cache_size)
        self.unknown = LruCache(self.settings.auth_negative_cache_size)
        self.failures = FailureLimiter(self.settings.auth_failures_per_minute, clock=self.clock)
        self.used = LruCache(self.settings.auth_cache_size)

    async def principal(self, key: str, client: str = "unknown") -> Principal | None:
        """The key's principal; None if unknown, revoked or malformed (a failure of ``client``).

        Raises HTTP 401 if the key has expired, 429 while ``client`` is over its failures, 503
        if the database cannot tell and the key was not verified in the last ``auth_stale_ok_s``.
        """
        admin = self.settings.admin_api_key
        if admin is not None and hmac.compare_digest(key.encode(), admin.get_secret_value().encode()):
            return Principal(BOOTSTRAP_ID, "bootstrap admin", frozenset(SCOPES), None)
        hashed = digest(key)
        now = self.clock()
        good = self.good.get(hashed)
        if good is not None and now - good[1] < self.settings.auth_cache_ttl_s:
            return self._unexpired(good[0], client)
        wait = self.failures.wait(client) if good is None else 0.0  # a known key: one lookup at most
        if wait > 0:
            AUTH_FAILURES.labels(self.service, "throttled").inc()
            retry = max(1, math.ceil(wait))
            raise HTTPException(
                429,
                f"too many failed API key checks from this address; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        unknown = self.unknown.get(hashed)
        known_bad = unknown is not None and now - unknown[1] < self.settings.auth_cache_ttl_s
        if key_id_of(key) is None or known_bad:
            self.failures.failed(client)
            return None
        try:
            row = await self._lookup(hashed)
        except DATABASE_UNAVAILABLE:
            if good is not None and now - good[1] < self.settings.auth_stale_ok_s:
                return self._unexpired(good[0], client)
            AUTH_FAILURES.labels(self.service, "unavailable").inc()
            raise HTTPException(
                503, "cannot verify the API key: the database is unavailable", headers={"Retry-After": "5"}
            ) from None
        if row is None:
            self.good.pop(hashed)
            self.unknown.put(hashed, None, now)
            self.failures.failed(client)
            return None
        principal = Principal(
            row["id"],
            row["name"],
            frozenset(row["scopes"]),
            row["rate_per_minute"] or self.settings.rate_limit_per_minute,
            row["expires_at"],
        )
        self.unknown.pop(hashed)
        self.good.put(hashed, principal, now)
        return self._unexpired(principal, client)

    def _unexpired(self, principal: Principal, client: str) -> Principal:
        """``principal``, unless its key has expired: then HTTP 401 (a failure of ``client``)."""
        if not principal.expired(self.wall()):
            return principal
        self.failures.failed(client)
        AUTH_FAILURES.labels(self.service, "expired").inc()
        assert principal.expires_at is not None
        raise _unauthorized(f"the API key {principal.key_id} expired at {principal.expires_at.isoformat()}")

    def note_use(self, principal: Principal) -> None:
        """Write that a stored key was used now, unless this process did in the last
        ``auth_last_used_every_s``. In the background: a request never waits for it, and a
        failed write is only logged (the next use tries again)."""
        if principal.key_id == BOOTSTRAP_ID:
            return
        now = self.clock()
        last = self.used.get(principal.key_id)
        if last is not None and now - last[1] < self.settings.auth_last_used_every_s:
            return
        self.used.put(principal.key_id, None, now)
        task = asyncio.create_task(self._record_use(principal.key_id, self.wall()))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _record_use(self, key_id: str, at: datetime) -> None:
        try:
            await record_use(self.pool(), key_id, at, self.settings.auth_db_timeout_s)
        except _USE_NOT_RECORDED as exc:
            self.used.pop(key_id)
            log.warning("could not record the use of API key %s (%s)", key_id, exc)

    async def _lookup(self, hashed: str) -> asyncpg.Record | None:
        timeout = self.settings.auth_db_timeout_s
        async with self.pool().acquire(timeout=timeout) as conn:
            row: asyncpg.Record | None = await conn.fetchrow(
                "SELECT id, name, scopes, rate_per_minute, expires_at FROM api_keys "
                "WHERE key_sha256 = $1 AND revoked_at IS NULL",
                hashed,
                timeout=timeout,
            )
            return row

    async def authenticate(self, credentials: Credentials | None, client: str) -> Principal:
        """The caller's principal (its use noted); HTTP 401 (no key, or not a valid or an
        expired one), 429 or 503 otherwise."""
        if credentials is None:
            AUTH_FAILURES.labels(self.service, "missing").inc()
            raise _unauthorized("an API key is required (X-API-Key header)")
        principal = await self.principal(credentials.key, client)
        if principal is None:
            AUTH_FAILURES.labels(self.service, "invalid").inc()
            raise _unauthorized("the API key is not valid (unknown or revoked)")
        self.note_use(principal)
        return principal

    def authorize(self, request: Request, scope: Scope) -> Principal:
        """The caller's principal (found at the door) if it holds ``scope`` and is within its
        rate; else 403/429."""
        principal = principal_of(request.scope)
        if principal is None:
            raise RuntimeError(f"{request.url.path} needs a key but common.door.Door is not installed")
        if not principal.allows(scope):
            AUTH_FAILURES.labels(self.service, "scope").inc()
            raise HTTPException(403, f"this API key lacks the {scope!r} scope")
        if principal.rate_per_minute is not None:
            wait = self.limiter.acquire(principal.key_id, principal.rate_per_minute)
            if wait > 0:
                RATE_LIMITED.labels(self.service).inc()
                retry = max(1, math.ceil(wait))
                raise HTTPException(
                    429,
                    f"rate limit of {principal.rate_per_minute} requests per minute exceeded; "
                    f"retry in {retry} s",
                    headers={"Retry-After": str(retry)},
                )
        return principal


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        401, detail, headers={"WWW-Authenticate": 'Basic realm="facestream", charset="UTF-8"'}
    )


def _key_from_authorization(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def require(scope: Scope) -> Any:
    """A route dependency: the request needs a key with ``scope`` (``dependencies=[require(...)]``).

    The key itself was checked at the door (:class:`common.door.Door`, before the body
    was read); this checks its scope and rate. The app must hold an
    :class:`Authenticator` in ``app.state.auth``.
    """

    async def dependency(
        request: Request,
        declared: Annotated[str | None, Security(_HEADER)] = None,  # for the OpenAPI schema
    ) -> Principal:
        auth: Authenticator = request.app.state.auth
        principal = auth.authorize(request, scope)
        request.state.principal = principal
        return principal

    return Depends(dependency)
