"""Read-your-writes: the ``pending`` row of every image ingest accepted, written before it answers.

Once the broker has acknowledged an image's ``ImageSubmitted``, ingest inserts the image's
row (status ``pending``, the columns the projector writes for that event, without the
bytes) so that the results API knows the id as soon as the client does. The insert is
``ON CONFLICT (id) DO NOTHING`` (the projector may have been first, or a retried request
brings the same ids) and skips erased images.

Failure contract: recording never fails the upload. If PostgreSQL is unavailable
(:data:`common.db.DATABASE_UNAVAILABLE`, or no answer within the timeout) the rows wait
in a bounded in-memory backlog, counted in ``facestream_ingest_pending_rows_unrecorded_total``,
and :meth:`PendingRows.run` writes them once the database answers again. A circuit
breaker (dependency ``postgres``) sends rows straight to the backlog while the database
is known to be down, so uploads do not each wait for a timeout. Rows lost anyway (the
backlog overflowed, the process stopped, or the database refused a row) are still
created by the projector from the event: only the read-your-writes guarantee lapses.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from common.circuit import CircuitBreaker
from common.db import DATABASE_UNAVAILABLE
from ingest.metrics import PENDING_BACKLOG, PENDING_UNRECORDED
from schemas.lifecycle import Status

log = logging.getLogger(__name__)

#: What keeps rows from being written now: an outage, or a refusal before any row was
#: tried (a connection refused for too many clients, say). Rows the database refuses one
#: by one are handled in :meth:`PendingRows._write`.
_CANNOT_WRITE: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)

# Parameters are cast: in INSERT ... SELECT their types are not taken from the columns.
# The metadata travels as JSON text, so the statement works whatever codecs the pool has.
INSERT_PENDING = f"""
INSERT INTO images (id, run, status, filename, content_type, size_bytes, sha256, source, camera,
                    metadata, submitted_at, trace_id, kafka_partition, kafka_offset)
SELECT $1::uuid, 0, '{Status.PENDING.value}', $2::text, $3::text, $4::integer, $5::text, $6::text,
       $7::text, $8::text::jsonb, $9::timestamptz, $10::text, $11::integer, $12::bigint
WHERE NOT EXISTS (SELECT 1 FROM erased_images WHERE id = $1::uuid)
ON CONFLICT (id) DO NOTHING
"""


@dataclass(frozen=True)
class PendingRow:
    """The row of one accepted image, as the projector writes it for its ImageSubmitted (run 0),
    with where the broker stored the event (``kafka_partition``, ``kafka_offset``)."""

    id: str
    filename: str | None
    content_type: str | None
    size_bytes: int
    sha256: str
    source: str | None
    camera: str | None
    metadata: dict[str, str]
    submitted_at: datetime
    trace_id: str
    kafka_partition: int
    kafka_offset: int

    def args(self) -> tuple[object, ...]:
        return (
            self.id,
            self.filename,
            self.content_type,
            self.size_bytes,
            self.sha256,
            self.source,
            self.camera,
            json.dumps(self.metadata),
            self.submitted_at,
            self.trace_id,
            self.kafka_partition,
            self.kafka_offset,
        )


class PendingRows:
    """Writes pending rows now, or keeps them (bounded) until the database answers again."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        timeout: float,
        backlog_max: int,
        retry_delay: float = 0.2,
        max_retry_delay: float = 2.0,
    ) -> None:
        self._pool = pool
        self._timeout = timeout
        self._backlog_max = backlog_max
        self._backlog: dict[str, PendingRow] = {}  # by image id, oldest first
        self._has_backlog = asyncio.Event()
        self.breaker = CircuitBreaker(
            "postgres", failure_threshold=1, base_delay=retry_delay, max_delay=max_retry_delay
        )
        PENDING_BACKLOG.set(0)

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    async def record(self, rows: Sequence[PendingRow]) -> bool:
        """Write ``rows`` (one statement); True if they are stored now, False if deferred or refused.

        Never raises because of the database: see the module docstring.
        """
        if not rows:
            return True
        if not self.breaker.allow():
            self._defer(rows)
            return False
        try:
            written = await self._write(rows)
        except _CANNOT_WRITE as exc:
            self.breaker.record_failure()
            log.warning("pending rows of %d images deferred: database unavailable (%r)", len(rows), exc)
            self._defer(rows)
            return False
        self.breaker.record_success()
        return written

    async def flush(self) -> bool:
        """Write every row of the backlog; True if it is empty afterwards."""
        rows = list(self._backlog.values())
        if not rows:
            return True
        try:
            await self._write(rows)
        except _CANNOT_WRITE as exc:
            self.breaker.record_failure()
            log.info("backlog of %d pending rows still waiting for the database (%r)", len(rows), exc)
            return False
        self.breaker.record_success()
        for row in rows:
            if self._backlog.get(row.id) is row:
                del self._backlog[row.id]
        log.info("wrote %d pending rows from the backlog", len(rows))
        self._backlog_changed()
        return not self._backlog

    async def run(self) -> None:
        """Flush the backlog whenever it holds rows, as often as the breaker allows; until cancelled."""
        while True:
            await self._has_backlog.wait()
            await asyncio.sleep(self.breaker.retry_in())
            try:
                await self.flush()
            except Exception:  # a bug: keep the task (and the backlog) alive, and say so
                log.exception("flushing the pending rows' backlog failed")
                await asyncio.sleep(self.breaker.max_delay)

    async def _write(self, rows: Sequence[PendingRow]) -> bool:
        """Insert ``rows`` in one statement. A row the database refuses (not an outage) is
        logged, counted and skipped: the rows are retried one by one. Returns whether none
        was refused; raises DATABASE_UNAVAILABLE errors."""
        async with self._pool.acquire(timeout=self._timeout) as conn:
            try:
                await conn.executemany(INSERT_PENDING, [r.args() for r in rows], timeout=self._timeout)
                return True
            except asyncpg.PostgresError as exc:
                if isinstance(exc, DATABASE_UNAVAILABLE):
                    raise
            refused = 0
            for row in rows:
                try:
                    await conn.execute(INSERT_PENDING, *row.args(), timeout=self._timeout)
                except asyncpg.PostgresError as exc:
                    if isinstance(exc, DATABASE_UNAVAILABLE):
                        raise
                    refused += 1
                    log.error("the database refused the pending row of image %s: %r", row.id, exc)
            PENDING_UNRECORDED.labels("refused").inc(refused)
            return refused == 0

    def _defer(self, rows: Sequence[PendingRow]) -> None:
        PENDING_UNRECORDED.labels("database_unavailable").inc(len(rows))
        for row in rows:
            self._backlog.pop(row.id, None)
            if len(self._backlog) >= self._backlog_max:
                oldest = next(iter(self._backlog))
                del self._backlog[oldest]
                PENDING_UNRECORDED.labels("backlog_full").inc()
                log.warning("pending-row backlog full: dropped image %s (the projector will add it)", oldest)
            self._backlog[row.id] = row
        self._backlog_changed()

    def _backlog_changed(self) -> None:
        PENDING_BACKLOG.set(len(self._backlog))
        if self._backlog:
            self._has_backlog.set()
        else:
            self._has_backlog.clear()
