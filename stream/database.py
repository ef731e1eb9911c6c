"""The stream worker's PostgreSQL adapter: a lazily opened pool behind a circuit breaker.

Failure contract of :meth:`Database.run`:

- the database is unreachable (:data:`common.db.DATABASE_UNAVAILABLE`): the circuit
  opens and the caller waits, without limit, until a probe finds it back: an outage is
  nobody's event's fault, and nothing behind the waiting event could be stored either;
- the schema lacks migrations this code ships (:class:`common.db.SchemaBehind`, checked
  when the pool opens): the same wait, logged as an error naming the command to run,
  and the worker is not ready meanwhile (it starts before, or during, the migration job);
- a transient refusal (deadlock, serialization failure, read-only after a failover, a
  statement timeout, a lock timeout, the server out of resources): retried with a
  growing delay (capped), also without limit;
- the event's data cannot be stored (a value out of range, a broken constraint):
  :class:`NotStorable` is raised at once, for the caller to dead-letter;
- anything else propagates unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from common.circuit import CircuitBreaker
from common.db import DATABASE_UNAVAILABLE, SchemaBehind, create_pool
from common.errors import FacestreamError
from stream import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Refusals that a later try of the same statement can get past.
TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.ReadOnlySQLTransactionError,  # a failover left us on a standby for a while
    asyncpg.QueryCanceledError,  # statement timeout
    asyncpg.LockNotAvailableError,
    asyncpg.InsufficientResourcesError,  # disk full, too many connections
)
#: The data of the event is what the database refuses: retrying cannot help.
NOT_STORABLE: tuple[type[BaseException], ...] = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class NotStorable(FacestreamError):
    """The database refused an event's data (not the database's state)."""


class Database:
    """See the module docstring. One per stream worker, shared by every agent."""

    def __init__(self, dsn: str, *, max_delay: float = 5.0) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self.breaker = CircuitBreaker("postgres", failure_threshold=1, base_delay=0.2, max_delay=max_delay)
        self.max_delay = max_delay
        self.available = False

    async def run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``fn(connection)``, with the failure contract of the module docstring."""
        refusals = 0
        while True:
            if not self.breaker.allow():
                await asyncio.sleep(self.breaker.retry_in())
                continue
            try:
                pool = await self._get()
                async with pool.acquire(timeout=10) as conn:
                    result = await fn(conn)
            except DATABASE_UNAVAILABLE as exc:
                self.available = False
                self.breaker.record_failure()
                metrics.PROJECTOR_DB_ERRORS.labels("unavailable").inc()
                log.warning("database unavailable (%s); next try in %.1fs", exc, self.breaker.retry_in())
                continue
            except SchemaBehind as exc:
                self.available = False
                self.breaker.record_failure()
                log.error("%s Next try in %.1fs.", exc, self.breaker.retry_in())
                continue
            except TRANSIENT as exc:
                refusals += 1
                delay = min(self.max_delay, 0.05 * 2**refusals)
                metrics.PROJECTOR_DB_ERRORS.labels("transient").inc()
                log.warning("database refused a write (%s); trying again in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            except NOT_STORABLE as exc:
                raise NotStorable(f"{type(exc).__name__}: {exc}") from exc
            self.available = True
            self.breaker.record_success()
            return result

    async def _get(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(self._dsn, min_size=1, max_size=8)
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
