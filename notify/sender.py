"""The HTTP side: sends due deliveries, each as its own task, and records each attempt.

Contract:

* A delivery is claimed by pushing its ``next_attempt_at`` past the request timeout (a
  lease) before it is sent, so two notify replicas never send one attempt twice; if this
  process dies mid-request, the lease runs out and the attempt is made again (at least
  once: a receiver dedupes by ``X-Facestream-Delivery``).
* Every attempt resolves the URL's host, refuses the delivery (recorded as failed, never
  sent) if any address is one :func:`common.ssrf.refused_address` refuses, and connects
  to an address it checked (the request goes to that IP, with the name in ``Host`` and
  in TLS SNI and certificate checks): DNS cannot change between the check and the connection.
* A 2xx answer delivers. A timeout, a connection error or any other answer (redirects are
  not followed) is a failed attempt: tried again after the backoff, or given up (failed)
  after ``WEBHOOK_MAX_ATTEMPTS`` attempts or ``WEBHOOK_MAX_AGE_S``.
* At most ``WEBHOOK_PER_HOOK_CONCURRENCY`` requests to one webhook are in flight, so a slow
  receiver holds up only its own deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from common.ssrf import RefusedUrl, check_url, host_of, literal_address, refused_address
from notify import metrics
from notify.deliveries import RetryPolicy, sign, succeeded
from notify.settings import NotifySettings

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    if literal_address(host) is not None:
        return [host]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def pinned_url(url: str, ip: str) -> str:
    """``url`` with its host replaced by ``ip`` (port, path and query kept)."""
    parts = urlsplit(url)
    host = f"[{ip}]" if ":" in ip else ip
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{host}{port}"))


@dataclass(frozen=True)
class Claimed:
    id: str
    webhook_id: str
    event: str
    body: bytes
    attempts: int
    created_at: datetime
    url: str
    secret: str


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: ``status`` (the answer's code) or ``error``, and ``result``
    (a metrics label)."""

    result: str
    status: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and succeeded(self.status)


class Sender:
    def __init__(self, pool: asyncpg.Pool, settings: NotifySettings, resolver: Resolver = resolve) -> None:
        self.pool = pool
        self.settings = settings
        self.policy: RetryPolicy = settings.retry_policy()
        self.resolver = resolver
        self.lease_s = settings.webhook_timeout_s + 30
        self.in_flight: dict[str, asyncio.Task[None]] = {}  # delivery id -> its attempt
        self.per_hook: Counter[str] = Counter()
        self.last_scan = time.monotonic()

    async def run(self, stopping: asyncio.Event) -> None:
        """Claim and send due deliveries until ``stopping``; then wait for the attempts in
        flight up to NOTIFY_DRAIN_S (any left are cancelled: their leases run out and they
        are tried again)."""
        while not stopping.is_set():
            try:
                for row in await self.claim():
                    self.per_hook[row.webhook_id] += 1
                    task = asyncio.create_task(self.attempt(row), name=f"webhook-delivery-{row.id}")
                    self.in_flight[row.id] = task
                    task.add_done_callback(functools.partial(self._done, row))
                self.last_scan = time.monotonic()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("could not look for due webhook deliveries (%s); trying again", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.settings.webhook_poll_s)
        if self.in_flight:
            _, left = await asyncio.wait(list(self.in_flight.values()), timeout=self.settings.notify_drain_s)
            for task in left:
                task.cancel()

    def _done(self, row: Claimed, _task: asyncio.Task[None]) -> None:
        self.in_flight.pop(row.id, None)
        self.per_hook[row.webhook_id] -= 1
        if self.per_hook[row.webhook_id] <= 0:
            del self.per_hook[row.webhook_id]

    async def claim(self) -> list[Claimed]:
        """Lease the due deliveries this process has room for (overall and per webhook)."""
        room = self.settings.webhook_concurrency - len(self.in_flight)
        if room <= 0:
            return []
        per_hook = self.settings.webhook_per_hook_concurrency
        full = [h for h, n in self.per_hook.items() if n >= per_hook]
        async with self.pool.acquire() as conn, conn.transaction():
            due = await conn.fetch(
                """
                SELECT id, webhook_id FROM webhook_deliveries
                WHERE state = 'pending' AND next_attempt_at <= now() AND webhook_id <> ALL($1::uuid[])
                ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED
                """,
                full,
                room * 4,
            )
            taken: list[Any] = []
            counts = Counter(self.per_hook)
            for row in due:
                hook = str(row["webhook_id"])
                if counts[hook] < per_hook and len(taken) < room:
                    counts[hook] += 1
                    taken.append(row["id"])
            if not taken:
                return []
            rows = await conn.fetch(
                """
                UPDATE webhook_deliveries d
                SET next_attempt_at = now() + make_interval(secs => $2)
                FROM webhooks w
                WHERE d.id = ANY($1::uuid[]) AND w.id = d.webhook_id
                RETURNING d.id, d.webhook_id, d.event, d.body, d.attempts, d.created_at, w.url, w.secret
                """,
                taken,
                self.lease_s,
            )
        return [
            Claimed(
                id=str(r["id"]),
                webhook_id=str(r["webhook_id"]),
                event=r["event"],
                body=bytes(r["body"]),
                attempts=r["attempts"],
                created_at=r["created_at"],
                url=r["url"],
                secret=r["secret"],
            )
            for r in rows
        ]

    async def attempt(self, row: Claimed) -> None:
        """Send one attempt of ``row`` and record it (never raises but on cancellation)."""
        started = time.perf_counter()
        outcome = await self.send(row)
        metrics.ATTEMPT_SECONDS.observe(time.perf_counter() - started)
        metrics.ATTEMPTS.labels(outcome.result).inc()
        try:
            await self.record(row, outcome)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Its lease runs out and the attempt is made again: at least once.
            log.warning("could not record webhook delivery %s (%s)", row.id, exc)

    async def send(self, row: Claimed) -> Outcome:
        allow_private = self.settings.webhook_allow_private
        try:
            check_url(row.url, allow_private=allow_private)
            scheme, host, port = host_of(row.url)
            try:
                # Bounded: a name server that never answers fails this attempt only.
                addresses = await asyncio.wait_for(self.resolver(host, port), self.settings.webhook_timeout_s)
            except (OSError, TimeoutError) as exc:
                return Outcome("connection_error", error=f"could not resolve {host}: {exc!r}")
            for ip in addresses:
                address = literal_address(ip)
                why = (
                    "not an address"
                    if address is None
                    else refused_address(address, allow_private=allow_private)
                )
                if why:
                    raise RefusedUrl(f"{host} resolves to {ip}: {why}")
        except RefusedUrl as exc:
            return Outcome("refused", error=f"refused: {exc}")
        if not addresses:
            return Outcome("connection_error", error=f"{host} resolves to no address")
        headers = {
            "Host": urlsplit(row.url).netloc.rpartition("@")[2],
            "Content-Type": "application/json",
            "User-Agent": "facestream-webhooks/1",
            "X-Facestream-Event": row.event,
            "X-Facestream-Delivery": row.id,
            "X-Facestream-Signature": sign(row.secret, row.body),
        }
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        try:
            async with httpx.AsyncClient(
                timeout=self.settings.webhook_timeout_s, follow_redirects=False, trust_env=False
            ) as client:
                answer = await client.post(
                    pinned_url(row.url, addresses[0]),
                    content=row.body,
                    headers=headers,
                    extensions=extensions,
                )
        except httpx.TimeoutException:
            return Outcome("timeout", error=f"no answer within {self.settings.webhook_timeout_s:g}s")
        except httpx.HTTPError as exc:
            return Outcome("connection_error", error=f"{type(exc).__name__}: {exc}"[:500])
        if succeeded(answer.status_code):
            return Outcome("ok", status=answer.status_code)
        return Outcome("http_error", status=answer.status_code, error=f"answered {answer.status_code}")

    async def record(self, row: Claimed, outcome: Outcome) -> None:
        attempts = row.attempts + 1
        now = datetime.now(UTC)
        if outcome.delivered:
            state, due = "delivered", None
        elif outcome.result == "refused":
            state, due = "failed", None
        else:
            due = self.policy.next_attempt(attempts, row.created_at, now)
            state = "pending" if due is not None else "failed"
        await self.pool.execute(
            """
            UPDATE webhook_deliveries
            SET attempts = $2, last_status = $3, last_error = $4, state = $5, last_attempt_at = $6,
                next_attempt_at = COALESCE($7, next_attempt_at),
                finished_at = $8
            WHERE id = $1::uuid AND state = 'pending'
            """,
            row.id,
            attempts,
            outcome.status,
            outcome.error,
            state,
            now,
            due,
            None if state == "pending" else now,
        )
        if state != "pending":
            metrics.DELIVERIES.labels("refused" if outcome.result == "refused" else state).inc()
            level = logging.INFO if state == "delivered" else logging.WARNING
            log.log(
                level,
                "webhook delivery %s to %s: %s after %d attempt(s) (%s)",
                row.id,
                row.webhook_id,
                state,
                attempts,
                outcome.error or outcome.status,
            )
