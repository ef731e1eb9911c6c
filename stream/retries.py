"""Retries with due times in PostgreSQL: a waiting retry holds up no other image.

The failure handler stores each retry (the RecognitionRequested event, as it will be
published) with its due time; a timer of the stream worker sends the due ones to
``images.recognize`` and deletes them in the same transaction, after the broker has
acknowledged them. A crash between the two sends a retry twice, which is harmless (the
recognizer's outcome is keyed by image id and the projector upserts); nothing is lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg


async def schedule(
    conn: asyncpg.Connection, image_id: str, run: int, attempt: int, due_at: datetime, request: bytes
) -> None:
    """Store one retry; a second call for the same (image, run, attempt) changes nothing."""
    await conn.execute(
        """INSERT INTO retries (image_id, run, attempt, due_at, request) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (image_id, run, attempt) DO NOTHING""",
        image_id,
        run,
        attempt,
        due_at,
        request,
    )


Send = Callable[[str, bytes], Awaitable[object]]


async def release_due(conn: asyncpg.Connection, send: Send, limit: int = 100) -> int:
    """Send every retry that is due (up to ``limit``) with ``send(image_id, request)``, which
    must return only once the broker has acknowledged it; then forget them. Retries of
    erased images are dropped unsent. Several stream workers may call this at once: each
    row is taken by one (``SKIP LOCKED``). Returns how many were sent.

    Called a few times a second: when nothing is due it costs one indexed read, no
    transaction."""
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM retries WHERE due_at <= now())"):
        return 0
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT image_id, run, attempt, request,
                      EXISTS (SELECT 1 FROM erased_images e WHERE e.id = r.image_id) AS erased
               FROM retries r WHERE due_at <= now() ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
        sent = 0
        for row in rows:
            if not row["erased"]:
                await send(str(row["image_id"]), bytes(row["request"]))
                sent += 1
        if rows:
            await conn.executemany(
                "DELETE FROM retries WHERE image_id = $1 AND run = $2 AND attempt = $3",
                [(r["image_id"], r["run"], r["attempt"]) for r in rows],
            )
    return sent


async def waiting(conn: asyncpg.Connection) -> int:
    """Retries not yet due (a gauge)."""
    return int(await conn.fetchval("SELECT count(*) FROM retries"))
